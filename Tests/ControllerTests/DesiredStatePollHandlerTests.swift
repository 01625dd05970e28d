import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import Shared
import Testing

@testable import Controller

/// The poll handler answers agents' desired-state polls before the router: every answer must be the router's own.
@Suite struct DesiredStatePollHandlerTests {
    typealias Fixture = ControllerFixture

    /// Who sends a poll.
    enum Credential: Sendable {
        case agent
        case otherAgent
        case operatorToken
        case none
        case malformed
        case unknown
        case basicAgent
        /// The agent's token after `bearer` in lower case and two spaces (the scheme is case-insensitive).
        case lowercaseBearer

        /// The `Authorization` header of this credential (`nil`: none), given the two agents' tokens.
        func authorization(agent: String, other: String, fixture: Fixture) -> String? {
            switch self {
            case .agent: "Bearer \(agent)"
            case .otherAgent: "Bearer \(other)"
            case .operatorToken: "Bearer \(fixture.operatorToken)"
            case .none: nil
            case .malformed: "Bearer hunter2"
            case .unknown: "Bearer \(Token.generate())"
            case .basicAgent: "Basic " + Data("agent:\(agent)".utf8).base64EncodedString()
            case .lowercaseBearer: "bearer  \(agent)"
            }
        }
    }

    /// One poll, sent to the live server (the handler) and to the router in-process (no handler): both answers must be
    /// the same. `handled` says whether the handler itself answers it (it passes everything else to the router).
    struct Case: Sendable, CustomStringConvertible {
        var name: String
        /// The path after the agent's id (`/desired-state...`); `{id}` and `{other}` are replaced.
        var path: String
        var credential: Credential = .agent
        /// `If-None-Match`; `{tag}` is the agent's current tag.
        var ifNoneMatch: String?
        var method: HTTPRequest.Method = .get
        var status: Int
        var code: String?
        var handled: Bool

        var description: String { name }
    }

    static let cases: [Case] = [
        Case(name: "current tag, no wait", path: "/v1/agents/{id}/desired-state", ifNoneMatch: "{tag}", status: 304, handled: true),
        Case(name: "no If-None-Match", path: "/v1/agents/{id}/desired-state", status: 200, handled: true),
        Case(name: "another tag", path: "/v1/agents/{id}/desired-state", ifNoneMatch: "\"0123\"", status: 200, handled: true),
        Case(name: "star", path: "/v1/agents/{id}/desired-state", ifNoneMatch: "*", status: 304, handled: true),
        Case(name: "weak form of the tag", path: "/v1/agents/{id}/desired-state", ifNoneMatch: "W/{tag}", status: 304, handled: true),
        Case(name: "tag in a list", path: "/v1/agents/{id}/desired-state", ifNoneMatch: "\"x\", {tag}", status: 304, handled: true),
        Case(name: "wait=0 with the tag", path: "/v1/agents/{id}/desired-state?wait=0", ifNoneMatch: "{tag}", status: 304, handled: true),
        Case(name: "wait with another tag", path: "/v1/agents/{id}/desired-state?wait=30", ifNoneMatch: "\"0\"", status: 200, handled: true),
        Case(name: "wait not a number", path: "/v1/agents/{id}/desired-state?wait=abc", status: 400, code: "invalid_wait", handled: false),
        Case(name: "wait too long", path: "/v1/agents/{id}/desired-state?wait=61", status: 400, code: "invalid_wait", handled: false),
        Case(name: "wait negative", path: "/v1/agents/{id}/desired-state?wait=-1", status: 400, code: "invalid_wait", handled: false),
        Case(
            name: "wait overflowing",
            path: "/v1/agents/{id}/desired-state?wait=99999999999999999999",
            status: 400,
            code: "invalid_wait",
            handled: false
        ),
        Case(name: "another query parameter", path: "/v1/agents/{id}/desired-state?x=1", ifNoneMatch: "{tag}", status: 304, handled: false),
        Case(name: "another agent's id", path: "/v1/agents/{other}/desired-state", status: 403, code: "forbidden", handled: false),
        Case(name: "an id that is no agent", path: "/v1/agents/agt_nobody/desired-state", status: 403, code: "forbidden", handled: false),
        Case(
            name: "operator token",
            path: "/v1/agents/{id}/desired-state",
            credential: .operatorToken,
            status: 403,
            code: "forbidden",
            handled: false
        ),
        Case(name: "no token", path: "/v1/agents/{id}/desired-state", credential: .none, status: 401, code: "unauthorized", handled: false),
        Case(
            name: "not a Ferry token",
            path: "/v1/agents/{id}/desired-state",
            credential: .malformed,
            status: 401,
            code: "unauthorized",
            handled: false
        ),
        Case(name: "unknown token", path: "/v1/agents/{id}/desired-state", credential: .unknown, status: 401, code: "unauthorized", handled: false),
        Case(
            name: "Basic with the agent's token",
            path: "/v1/agents/{id}/desired-state",
            credential: .basicAgent,
            status: 401,
            code: "bearer_required",
            handled: false
        ),
        Case(
            name: "other agent's token on its own id",
            path: "/v1/agents/{other}/desired-state",
            credential: .otherAgent,
            ifNoneMatch: "\"0\"",
            status: 200,
            handled: true
        ),
        Case(name: "POST", path: "/v1/agents/{id}/desired-state", method: .post, status: 404, code: "not_found", handled: false),
        Case(
            name: "lower-case scheme",
            path: "/v1/agents/{id}/desired-state",
            credential: .lowercaseBearer,
            ifNoneMatch: "{tag}",
            status: 304,
            handled: true
        ),
        Case(name: "empty query", path: "/v1/agents/{id}/desired-state?", ifNoneMatch: "{tag}", status: 304, handled: true),
        Case(name: "wait with a plus sign", path: "/v1/agents/{id}/desired-state?wait=+0", ifNoneMatch: "{tag}", status: 304, handled: true),
        Case(name: "empty wait", path: "/v1/agents/{id}/desired-state?wait=", status: 400, code: "invalid_wait", handled: false),
        // The router collapses the empty segment and reads "desired-state" as an agent id: not this agent's.
        Case(name: "no id", path: "/v1/agents//desired-state", status: 403, code: "forbidden", handled: false),
        Case(name: "a path inside the id", path: "/v1/agents/{id}/x/desired-state", status: 404, code: "not_found", handled: false),
        Case(name: "prefix only", path: "/v1/agents/desired-state", status: 403, code: "forbidden", handled: false),
        // The router matches a trailing slash as the route; the handler leaves it to the router.
        Case(name: "trailing slash", path: "/v1/agents/{id}/desired-state/", status: 200, handled: false),
    ]

    @Test(arguments: cases)
    func everyPollGetsTheRoutersAnswer(_ testCase: Case) async throws {
        try await Fixture.with { fixture in
            let (agent, other, tag) = try await fixture.withRouter { client in
                let agent = try await fixture.enroll(client, name: "a")
                let other = try await fixture.enroll(client, name: "b")
                let artifact = try await fixture.upload(client, Array("app".utf8))
                #expect(try await fixture.publish(client, Fixture.release(serial: 1, artifact: artifact)).status == .created)
                let first = try await client.execute(uri: "/v1/agents/\(agent.id)/desired-state", method: .get, headers: Fixture.bearer(agent.token))
                return (agent, other, try #require(first.headers[.eTag]))
            }
            let path = testCase.path.replacingOccurrences(of: "{id}", with: agent.id).replacingOccurrences(of: "{other}", with: other.id)
            var headers: HTTPFields = [:]
            headers[.authorization] = testCase.credential.authorization(agent: agent.token, other: other.token, fixture: fixture)
            if let ifNoneMatch = testCase.ifNoneMatch { headers[.ifNoneMatch] = ifNoneMatch.replacingOccurrences(of: "{tag}", with: tag) }
            let request = headers

            let routed = try await fixture.withRouter { client in
                try await client.execute(uri: path, method: testCase.method, headers: request)
            }
            let before = Self.handledCount(fixture)
            let live = try await fixture.withLiveServer { base in
                try await LiveHTTP().send(
                    testCase.method.rawValue,
                    base + path,
                    headers: Dictionary(request.map { ($0.name.rawName, $0.value) }, uniquingKeysWith: { first, _ in first })
                )
            }
            #expect(Int(routed.status.code) == testCase.status, "router")
            #expect(live.status == testCase.status, "live")
            #expect(Fixture.errorCode(routed) == testCase.code)
            #expect(Self.errorCode(live.body) == testCase.code)
            for name in [HTTPField.Name.eTag, .cacheControl, .contentType, .wwwAuthenticate] {
                #expect(live.header(name.rawName) == routed.headers[name], "\(name)")
            }
            if testCase.status == 200 {
                #expect(Array(live.body) == Array(routed.body.readableBytesView), "the same body")
                #expect(live.header("ETag") == "\"\(SHA256.hash(Array(live.body)).hex)\"", "the tag is the body's digest")
            }
            // Every answer carries a current `Date` (RFC 9110 §6.6.1), the handler's as the router's.
            #expect(Self.datesBlanked("Date: \(live.header("Date") ?? "none")").dates.count == 1)
            #expect(Self.handledCount(fixture) - before == (testCase.handled ? 1 : 0), "answered by the handler: \(testCase.handled)")
        }
    }

    /// Two requests pipelined on one connection, one the handler answers and one the router does, in both orders:
    /// the answers come back in order.
    @Test func pipelinedRequestsAreAnsweredInOrder() async throws {
        try await Fixture.with { fixture in
            let (agent, tag) = try await fixture.withRouter { client in
                let agent = try await fixture.enroll(client, name: "a")
                let first = try await client.execute(uri: "/v1/agents/\(agent.id)/desired-state", method: .get, headers: Fixture.bearer(agent.token))
                return (agent, try #require(first.headers[.eTag]))
            }
            try await fixture.withLiveServer { base in
                guard let port = URLComponents(string: base)?.port else { throw FixtureError("no port in \(base)") }
                let poll =
                    "GET /v1/agents/\(agent.id)/desired-state HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(agent.token)\r\n"
                    + "If-None-Match: \(tag)\r\n\r\n"
                let health = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                let missing = "GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n"
                for (requests, statuses) in [([poll, health, poll], [304, 200, 304]), ([missing, poll, missing, poll], [404, 304, 404, 304])] {
                    let connection = try RawConnection(port: port)
                    try connection.send(requests.joined())
                    let deadline = ContinuousClock.now + .seconds(20)
                    while Self.statuses(connection.text).count < statuses.count, ContinuousClock.now < deadline {
                        try await Task.sleep(for: .milliseconds(20))
                        connection.poll()
                    }
                    #expect(Self.statuses(connection.text) == statuses)
                }
            }
        }
    }

    /// A long-poll parked in the handler is answered by a publish, by the end of its wait, and leaves the hub when its
    /// client goes away.
    @Test func parkedPollsEndAsTheRoutesDo() async throws {
        try await Fixture.with { fixture in
            let (agent, tag, artifact) = try await fixture.withRouter { client in
                let agent = try await fixture.enroll(client, name: "a")
                let artifact = try await fixture.upload(client, Array("app".utf8))
                let first = try await client.execute(uri: "/v1/agents/\(agent.id)/desired-state", method: .get, headers: Fixture.bearer(agent.token))
                return (agent, try #require(first.headers[.eTag]), artifact)
            }
            let hub = fixture.controller.core.desiredStates.hub
            try await fixture.withLiveServer { base in
                let http = LiveHTTP()
                let url = base + "/v1/agents/\(agent.id)/desired-state"
                // The wait runs out: 304 after the whole wait.
                let started = ContinuousClock.now
                let timedOut = try await http.send("GET", url + "?wait=1", token: agent.token, headers: ["If-None-Match": tag])
                #expect(timedOut.status == 304)
                #expect(ContinuousClock.now - started >= .seconds(1))
                // A publish wakes it: 200 with the new state.
                let poll = Task { try await http.send("GET", url + "?wait=30", token: agent.token, headers: ["If-None-Match": tag]) }
                try await Self.waitUntil { hub.waiterCount == 1 }
                _ = try await fixture.withRouter { client in try await fixture.publish(client, Fixture.release(serial: 1, artifact: artifact)) }
                let woken = try await poll.value
                #expect(woken.status == 200)
                #expect(woken.header("ETag") != tag)
                // A client that goes away leaves nothing parked.
                guard let port = URLComponents(string: base)?.port else { throw FixtureError("no port in \(base)") }
                let newTag = try #require(woken.header("ETag"))
                do {
                    let connection = try RawConnection(port: port)
                    try connection.send(
                        "GET /v1/agents/\(agent.id)/desired-state?wait=30 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(agent.token)\r\n"
                            + "If-None-Match: \(newTag)\r\n\r\n"
                    )
                    try await Self.waitUntil { hub.waiterCount == 1 }
                }
                try await Self.waitUntil { hub.waiterCount == 0 }
            }
        }
    }

    /// A parked poll that sends a body is not buffered here: at its first body byte it leaves the hub and goes, with what
    /// it sent, to the router (whose route never reads it). It used to stay parked up to the body limit, its body held
    /// against no token's share of the budget. An `EmbeddedChannel` in front of the handler, so the parts passed on are
    /// read back exactly.
    @Test(arguments: [1, 17])
    func aParkedPollWithABodyGoesToTheRouter(bodyBytes: Int) async throws {
        try await DesiredStateFastPathTests.withPolledAgent { fixture, _, agent, tag in
            let core = fixture.controller.core
            let hub = core.desiredStates.hub
            let dependencies = DesiredStatePollHandler.Dependencies(
                authenticator: core.authenticator,
                desiredStates: core.desiredStates,
                metrics: ControllerMetrics(registry: fixture.registry),
                maximumWait: .seconds(60),
                statusReports: StatusReportIntake(core: core),
                maximumStatusBytes: 16
            )
            let channel = EmbeddedChannel(handler: DesiredStatePollHandler(dependencies))
            var head = HTTPRequest(method: .get, scheme: nil, authority: "x", path: "/v1/agents/\(agent.id)/desired-state?wait=30")
            head.headerFields[.authorization] = "Bearer \(agent.token)"
            head.headerFields[.ifNoneMatch] = tag
            try channel.writeInbound(HTTPRequestPart.head(head))
            try await Self.waitUntil { hub.waiterCount == 1 }
            #expect(try channel.readInbound(as: HTTPRequestPart.self) == nil, "parked here")
            try channel.writeInbound(HTTPRequestPart.body(ByteBuffer(repeating: UInt8(ascii: "x"), count: bodyBytes)))
            let passedOn = [try channel.readInbound(as: HTTPRequestPart.self), try channel.readInbound(as: HTTPRequestPart.self)]
            #expect(passedOn.map { $0.map(Self.partName) } == ["head", "body"])
            #expect(hub.waiterCount == 0, "the poll left the hub")
            _ = try? await channel.close().get()
            try await Self.waitUntil { hub.waiterCount == 0 }
        }
    }

    /// A report's body is held here only for a token already known as that agent's. Anyone else's report goes to the
    /// router with its head, before any body arrives (the router's authentication refuses it without reading the body):
    /// held until its end, a body up to the limit on each of thousands of connections was memory anyone could take.
    @Test(arguments: [
        (credential: Credential.unknown, heldHere: false),
        (credential: Credential.operatorToken, heldHere: false),
        (credential: Credential.agent, heldHere: true),
    ])
    func aReportIsHeldOnlyForAKnownAgentToken(_ row: (credential: Credential, heldHere: Bool)) async throws {
        try await DesiredStateFastPathTests.withPolledAgent { fixture, _, agent, _ in
            let channel = EmbeddedChannel(handler: DesiredStatePollHandler(Self.reportDependencies(fixture, limit: 1 << 20)))
            var head = HTTPRequest(method: .post, scheme: nil, authority: "x", path: "/v1/agents/\(agent.id)/status")
            head.headerFields[.authorization] = row.credential.authorization(agent: agent.token, other: agent.token, fixture: fixture)
            head.headerFields[.contentLength] = "1000"
            try channel.writeInbound(HTTPRequestPart.head(head))
            try channel.writeInbound(HTTPRequestPart.body(ByteBuffer(repeating: UInt8(ascii: "x"), count: 10)))
            let passedOn = [try channel.readInbound(as: HTTPRequestPart.self), try channel.readInbound(as: HTTPRequestPart.self)]
            if row.heldHere {
                #expect(passedOn.allSatisfy { $0 == nil }, "held until its end")
            } else {
                #expect(passedOn.map { $0.map(Self.partName) } == ["head", "body"], "the router's from its head on")
            }
            _ = try? await channel.close().get()
        }
    }

    /// Requests pipelined behind a parked long-poll wait in the handler's queue; while any wait, the channel's reads
    /// are held, so a client that keeps sending fills its own socket buffer instead of this process's memory. Once the
    /// poll is answered and the queue replayed, the held read is issued.
    @Test func readsStopWhileRequestsWaitBehindAParkedPoll() async throws {
        try await DesiredStateFastPathTests.withPolledAgent { fixture, _, agent, tag in
            let hub = fixture.controller.core.desiredStates.hub
            let reads = ReadCounter()
            let channel = EmbeddedChannel(handlers: [reads, DesiredStatePollHandler(Self.reportDependencies(fixture, limit: 16))])
            func poll(wait: Int) -> HTTPRequest {
                var head = HTTPRequest(method: .get, scheme: nil, authority: "x", path: "/v1/agents/\(agent.id)/desired-state?wait=\(wait)")
                head.headerFields[.authorization] = "Bearer \(agent.token)"
                head.headerFields[.ifNoneMatch] = tag
                return head
            }
            try channel.writeInbound(HTTPRequestPart.head(poll(wait: 1)))
            try channel.writeInbound(HTTPRequestPart.end(nil))
            try await Self.waitUntil { hub.waiterCount == 1 }
            channel.read()
            #expect(reads.count == 1, "nothing queued: the read goes through")
            try channel.writeInbound(HTTPRequestPart.head(poll(wait: 0)))
            try channel.writeInbound(HTTPRequestPart.end(nil))
            channel.read()
            channel.read()
            #expect(reads.count == 1, "held while a pipelined request waits")
            // The parked poll times out (1 s) and is answered; the queued poll is answered after it, then the read goes.
            try await Self.waitUntil {
                channel.embeddedEventLoop.advanceTime(by: .milliseconds(100))
                return reads.count == 2
            }
            var statuses: [Int] = []
            while let part = try channel.readOutbound(as: HTTPResponsePart.self) {
                if case .head(let response) = part { statuses.append(response.status.code) }
            }
            #expect(statuses == [304, 304])
            _ = try? await channel.close().get()
            try await Self.waitUntil { hub.waiterCount == 0 }
        }
    }

    /// Requests sent in one write to the live server, and the answers they get, in order, before the connection closes.
    struct HeldCase: Sendable, CustomStringConvertible {
        var name: String
        /// `{id}`, `{token}` and `{tag}` are replaced by the agent's.
        var requests: [String]
        var statuses: [Int]
        var description: String { name }
    }

    /// A poll parked here for `wait` seconds.
    static func longPoll(wait: Int) -> String {
        DesiredStateFastPathTests.poll.replacingOccurrences(of: "state ", with: "state?wait=\(wait) ")
    }
    static let report: String = {
        let body = StatusReportHandlerTests.report(message: "held")
        return "POST /v1/agents/{id}/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            + "Content-Length: \(body.utf8.count)\r\n\r\n" + body
    }()
    static let healthCheck = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"

    static let halfClosedCases: [HeldCase] = [
        HeldCase(name: "a parked long-poll", requests: [longPoll(wait: 60)], statuses: [304]),
        HeldCase(name: "a status report", requests: [report], statuses: [204]),
        HeldCase(
            name: "a parked long-poll, a poll behind it",
            requests: [longPoll(wait: 60), DesiredStateFastPathTests.poll],
            statuses: [304, 304]
        ),
        HeldCase(name: "a parked long-poll, a long-poll behind it", requests: [longPoll(wait: 60), longPoll(wait: 60)], statuses: [304, 304]),
        HeldCase(name: "a parked long-poll, a health check behind it", requests: [longPoll(wait: 60), healthCheck], statuses: [304, 200]),
    ]

    /// A client that half-closes its connection once it has sent its requests (`shutdown(SHUT_WR)`) gets every answer,
    /// then the connection closes; a long-poll is answered at once, not at the end of its wait (a minute here), since a
    /// client gone for good sends the same end of input. The end of its input reached the router while the handler still
    /// held a request: the router, with nothing to answer, closed its output, which after the input's end closes the
    /// connection, and the parked poll, or the stored report, was never answered.
    @Test(arguments: halfClosedCases)
    func aClientThatHalfClosesGetsItsAnswers(_ testCase: HeldCase) async throws {
        try await DesiredStateFastPathTests.withPolledAgent { _, port, agent, tag in
            let connection = try RawConnection(port: port)
            try connection.send(testCase.requests.map { DesiredStateFastPathTests.fill($0, id: agent.id, token: agent.token, tag: tag) }.joined())
            try connection.finishSending()
            #expect(try await connection.waitUntilClosed(timeout: .seconds(20)) != nil, "still open 20 s after the client's last request")
            #expect(Self.statuses(connection.text) == testCase.statuses, "\(connection.text)")
        }
    }

    static let refusedHeadCases: [HeldCase] = [
        HeldCase(name: "a parked long-poll, a blank before a colon", requests: [longPoll(wait: 2), refusedHead], statuses: [304, 400]),
        HeldCase(
            name: "a parked long-poll, a head over 16 KiB",
            requests: [
                longPoll(wait: 2), "GET /x HTTP/1.1\r\n" + String(repeating: "X-Pad: \(String(repeating: "a", count: 4000))\r\n", count: 5) + "\r\n",
            ],
            statuses: [304, 400]
        ),
        HeldCase(name: "a status report, a blank before a colon", requests: [report, refusedHead], statuses: [204, 400]),
        HeldCase(
            name: "a parked long-poll, a poll, a blank before a colon",
            requests: [longPoll(wait: 2), DesiredStateFastPathTests.poll, refusedHead],
            statuses: [304, 304, 400]
        ),
    ]

    /// A head the decoder refuses: a blank before a colon.
    static let refusedHead = "GET /x HTTP/1.1\r\nFoo : bar\r\n\r\n"

    /// A head the decoder refuses behind a request the handler holds (parked for 2 s, or a report being stored) is
    /// answered 400 after that request's answer, then the connection closes. The router, idle, answered the decoder's
    /// error at once: the client got the 400 as the answer to its parked poll (or report), whose own answer was then
    /// written into a closed output.
    @Test(arguments: refusedHeadCases)
    func aRefusedHeadIsAnsweredAfterTheRequestHeldBeforeIt(_ testCase: HeldCase) async throws {
        try await DesiredStateFastPathTests.withPolledAgent { _, port, agent, tag in
            let connection = try RawConnection(port: port)
            try connection.send(testCase.requests.map { DesiredStateFastPathTests.fill($0, id: agent.id, token: agent.token, tag: tag) }.joined())
            #expect(try await connection.waitUntilClosed(timeout: .seconds(20)) != nil, "still open 20 s after the refused head")
            #expect(Self.statuses(connection.text) == testCase.statuses, "\(connection.text)")
        }
    }

    /// Nothing sent behind a request that ends its connection (`Connection: close`, or HTTP/1.0 without keep-alive) is
    /// answered: NIO's decoder refuses every byte after such a request (`HTTPParserError.closedConnection`), so no poll
    /// behind it reaches the handler, which needs no signal of its own that the connection is ending (the fast path,
    /// in front of the decoder, does). With keep-alive, the same poll is answered here. NIO's own decoder and encoder,
    /// and `RequestPersistenceHandler`, on an `EmbeddedChannel`, the test playing the router.
    @Test(arguments: [
        (request: "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", ends: true),
        (request: "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Close\r\n\r\n", ends: true),
        (request: "GET /healthz HTTP/1.0\r\n\r\n", ends: true),
        (request: "GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", ends: false),
    ])
    func aPollBehindARequestThatEndsItsConnectionNeverReachesTheHandler(_ row: (request: String, ends: Bool)) async throws {
        try await DesiredStateFastPathTests.withPolledAgent { fixture, _, agent, _ in
            let channel = EmbeddedChannel()
            try channel.pipeline.syncOperations.addHandlers([
                HTTPResponseEncoder(), ByteToMessageHandler(HTTPRequestDecoder()), RequestPersistenceHandler(),
                HTTP1ToHTTPServerCodec(secure: false), DesiredStatePollHandler(DesiredStateFastPathTests.dependencies(fixture)),
            ])
            try await channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9)).get()
            func passedOn() throws -> [String] {
                var parts: [String] = []
                while let part = try channel.readInbound(as: HTTPRequestPart.self) { parts.append(Self.partName(part)) }
                return parts
            }
            var written = ""
            func answers() throws -> Int {
                while let buffer = try channel.readOutbound(as: ByteBuffer.self) { written += String(buffer: buffer) }
                return written.components(separatedBy: "\r\n").filter { $0.hasPrefix("HTTP/1.") }.count
            }
            try channel.writeInbound(ByteBuffer(string: row.request))
            #expect(try passedOn() == ["head", "end"], "the router's")
            try channel.writeOutbound(HTTPResponsePart.head(HTTPResponse(status: .ok)))
            try channel.writeOutbound(HTTPResponsePart.end(nil))
            // The whole state (no tag): the handler answers it at once when it gets it.
            let poll = ByteBuffer(
                string: DesiredStateFastPathTests.fill(DesiredStateFastPathTests.head + "\r\n", id: agent.id, token: agent.token, tag: "")
            )
            if row.ends {
                #expect(throws: HTTPParserError.closedConnection) { try channel.writeInbound(poll) }
                #expect(try passedOn().isEmpty)
                #expect(try answers() == 1, "\(written)")
            } else {
                try channel.writeInbound(poll)
                try await Self.waitUntil { (try? answers()) == 2 }
                #expect(try passedOn().isEmpty, "answered here")
                #expect(written.contains("ETag: "), "\(written)")
            }
            _ = try? await channel.close().get()
        }
    }

    /// Counts the reads that reach it (placed in front of the handler under test).
    final class ReadCounter: ChannelOutboundHandler, @unchecked Sendable {
        typealias OutboundIn = Any
        private(set) var count = 0

        func read(context: ChannelHandlerContext) {
            count += 1
            context.read()
        }
    }

    static func reportDependencies(_ fixture: Fixture, limit: Int) -> DesiredStatePollHandler.Dependencies {
        let core = fixture.controller.core
        return DesiredStatePollHandler.Dependencies(
            authenticator: core.authenticator,
            desiredStates: core.desiredStates,
            metrics: ControllerMetrics(registry: fixture.registry),
            maximumWait: .seconds(60),
            statusReports: StatusReportIntake(core: core),
            maximumStatusBytes: limit
        )
    }

    static func partName(_ part: HTTPRequestPart) -> String {
        switch part {
        case .head: "head"
        case .body: "body"
        case .end: "end"
        }
    }

    static func handledCount(_ fixture: Fixture) -> Int {
        fixture.counter("ferry_desired_state_handler_answers_total")
    }

    static func errorCode(_ body: Data) -> String? {
        guard case .object(let fields)? = try? JSONValue.parse(Array(body)), case .string(let code)? = fields["error"] else { return nil }
        return code
    }

    /// `text` with the value of every `Date` header line replaced by `*`, and those values: answers written a second
    /// apart differ in their dates alone. Each value must be the current IMF-fixdate (within a minute).
    static func datesBlanked(_ text: String) -> (text: String, dates: [String]) {
        var dates: [String] = []
        let lines = text.components(separatedBy: "\r\n").map { line in
            guard line.hasPrefix("Date: ") else { return line }
            dates.append(String(line.dropFirst("Date: ".count)))
            return "Date: *"
        }
        let now = Int64(Date().timeIntervalSince1970)
        for date in dates {
            #expect((now - 60...now + 60).contains { HTTPDate.format(epochSeconds: $0) == date }, "a current Date: \(date)")
        }
        return (lines.joined(separator: "\r\n"), dates)
    }

    static func statuses(_ text: String) -> [Int] {
        text.components(separatedBy: "HTTP/1.1 ").dropFirst().compactMap { Int($0.prefix(3)) }
    }

    static func waitUntil(_ condition: () -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(20)
        while !condition() {
            guard ContinuousClock.now < deadline else { throw FixtureError("condition not met within 20 s") }
            try await Task.sleep(for: .milliseconds(10))
        }
    }
}

extension RawConnection {
    /// What was received, as text.
    var text: String { String(decoding: received, as: UTF8.self) }
}
