import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Shared
import Testing

@testable import Controller

/// `DesiredStatePollHandler` takes agents' status reports before the router: every answer must be the router's own,
/// and every report it refuses reaches the router unchanged (and changes nothing).
@Suite struct StatusReportHandlerTests {
    typealias Fixture = ControllerFixture

    /// Who sends a report: the poll tests' credentials.
    typealias Credential = DesiredStatePollHandlerTests.Credential

    /// One report, sent to the router in-process (no handler), then to the live server: both answers must be the same.
    /// `handled`: the handler itself answers it (it passes everything else to the router).
    struct Case: Sendable, CustomStringConvertible {
        var name: String
        /// The path; `{id}` and `{other}` are replaced by the agents' ids.
        var path = "/v1/agents/{id}/status"
        var credential: Credential = .agent
        var headers: [String: String] = [:]
        /// The body; `{message}` is replaced by a text that tells the two sends apart in the store.
        var body: String
        var status: Int
        var code: String?
        var handled: Bool

        var description: String { name }
    }

    static let limit = 4096

    static func report(service: String = "api", message: String = "{message}", twice: Bool = false, version: String = "1.0.0") -> String {
        let status =
            #"{"service":"\#(service)","serial":1,"version":"\#(version)","targetSerial":1,"phase":"running","message":"\#(message)","#
            + #""health":"healthy","processes":[]}"#
        return #"{"agentVersion":"1.0","hostname":"a.example","processManager":"builtin","services":[\#(status)\#(twice ? "," + status : "")]}"#
    }

    static let cases: [Case] = [
        Case(name: "a healthy report", body: report(), status: 204, handled: true),
        Case(name: "lower-case scheme", credential: .lowercaseBearer, body: report(), status: 204, handled: true),
        Case(name: "no services", body: #"{"agentVersion":"1.0","hostname":"a","processManager":"pm2","services":[]}"#, status: 204, handled: true),
        Case(name: "not JSON", body: "{\"agentVersion\": ", status: 400, code: "malformed_json", handled: false),
        Case(name: "an empty body", body: "", status: 400, code: "malformed_json", handled: false),
        Case(name: "a field missing", body: #"{"agentVersion":"1.0","services":[]}"#, status: 400, code: "missing_field", handled: false),
        Case(name: "a service not the agent's", body: report(service: "web"), status: 422, code: "unknown_service", handled: false),
        Case(name: "a service twice", body: report(twice: true), status: 422, code: "invalid_document", handled: false),
        Case(name: "an empty version", body: report(version: ""), status: 422, code: "invalid_document", handled: false),
        Case(
            name: "over the size limit",
            body: report(message: String(repeating: "x", count: limit)),
            status: 413,
            code: "body_too_large",
            handled: false
        ),
        Case(name: "another agent's id", path: "/v1/agents/{other}/status", body: report(), status: 403, code: "forbidden", handled: false),
        Case(name: "operator token", credential: .operatorToken, body: report(), status: 403, code: "forbidden", handled: false),
        Case(name: "no token", credential: .none, body: report(), status: 401, code: "unauthorized", handled: false),
        Case(name: "unknown token", credential: .unknown, body: report(), status: 401, code: "unauthorized", handled: false),
        Case(name: "Basic with the agent's token", credential: .basicAgent, body: report(), status: 401, code: "bearer_required", handled: false),
        Case(
            name: "from another site (Origin)",
            headers: ["Origin": "https://evil.example"],
            body: report(),
            status: 403,
            code: "cross_origin",
            handled: false
        ),
        Case(
            name: "from another site (Sec-Fetch-Site)",
            headers: ["Sec-Fetch-Site": "cross-site"],
            body: report(),
            status: 403,
            code: "cross_origin",
            handled: false
        ),
        // The route accepts these; the handler leaves them to it.
        Case(name: "a query", path: "/v1/agents/{id}/status?x=1", body: report(), status: 204, handled: false),
        Case(name: "trailing slash", path: "/v1/agents/{id}/status/", body: report(), status: 204, handled: false),
    ]

    @Test(arguments: cases)
    func everyReportGetsTheRoutersAnswer(_ testCase: Case) async throws {
        let smallLimit: (inout ControllerConfiguration) -> Void = { $0.maximumStatusBytes = Self.limit }
        try await Fixture.with(adjust: smallLimit) { fixture in
            let (agent, other) = try await fixture.withRouter { client in
                (try await fixture.enroll(client, name: "a"), try await fixture.enroll(client, name: "b"))
            }
            let path = testCase.path.replacingOccurrences(of: "{id}", with: agent.id).replacingOccurrences(of: "{other}", with: other.id)
            var headers = testCase.headers
            headers["Content-Type"] = "application/json"
            headers["Authorization"] = testCase.credential.authorization(agent: agent.token, other: other.token, fixture: fixture)
            let request = headers
            let routed = try await fixture.withRouter { client in
                var fields: HTTPFields = [:]
                for (name, value) in request { fields[HTTPField.Name(name)!] = value }
                return try await client.execute(
                    uri: path,
                    method: .post,
                    headers: fields,
                    body: ByteBuffer(string: testCase.body.replacingOccurrences(of: "{message}", with: "router"))
                )
            }
            let before = Self.handledCount(fixture)
            let (live, stored) = try await fixture.withLiveServer { base in
                let live = try await LiveHTTP().send(
                    "POST",
                    base + path,
                    headers: request,
                    body: Data(testCase.body.replacingOccurrences(of: "{message}", with: "live").utf8)
                )
                return (live, try await fixture.controller.core.store.serviceStatuses(agentID: agent.id).map(\.status.message))
            }
            #expect(Int(routed.status.code) == testCase.status, "router")
            #expect(live.status == testCase.status, "live")
            #expect(Fixture.errorCode(routed) == testCase.code)
            #expect(DesiredStatePollHandlerTests.errorCode(live.body) == testCase.code)
            // (`Content-Length` is left out: URLSession drops it from a 204, and a cross-origin refusal names the Host, whose
            // port differs. `pipelinedAndChunkedReportsAreAnsweredInOrder` compares the 204s byte for byte.)
            for name in ["Content-Type", "Retry-After", "WWW-Authenticate"] {
                #expect(live.header(name) == routed.headers[HTTPField.Name(name)!], "\(name)")
            }
            // Every answer carries a current `Date` (RFC 9110 §6.6.1), the handler's as the router's.
            #expect(DesiredStatePollHandlerTests.datesBlanked("Date: \(live.header("Date") ?? "none")").dates.count == 1)
            #expect(Self.handledCount(fixture) - before == (testCase.handled ? 1 : 0), "answered by the handler: \(testCase.handled)")
            // What is stored is the live report when it was accepted, else nothing.
            if testCase.status == 204, testCase.body.contains("{message}") {
                #expect(stored == ["live"])
            } else if testCase.status != 204 {
                #expect(stored.isEmpty, "a refused report stores nothing: \(stored)")
            }
        }
    }

    /// Reports pipelined with polls, one of them sent in chunks, are all answered here, in order; after a request the
    /// router answers, the rest go to the router, in order too. Every report is stored.
    @Test func pipelinedAndChunkedReportsAreAnsweredInOrder() async throws {
        try await Fixture.with { fixture in
            let (agent, tag) = try await fixture.withRouter { client in
                let agent = try await fixture.enroll(client, name: "a")
                let first = try await client.execute(uri: "/v1/agents/\(agent.id)/desired-state", method: .get, headers: Fixture.bearer(agent.token))
                return (agent, try #require(first.headers[.eTag]))
            }
            let head = "POST /v1/agents/\(agent.id)/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(agent.token)\r\n"
            @Sendable func report(_ message: String, query: String = "") -> String {
                let body = Self.report(message: message)
                return head.replacingOccurrences(of: "/status ", with: "/status\(query) ") + "Content-Length: \(body.utf8.count)\r\n\r\n" + body
            }
            let body = Self.report(message: "chunked")
            let split = body.index(body.startIndex, offsetBy: 40)
            let chunked =
                head + "Transfer-Encoding: chunked\r\n\r\n"
                + [body[..<split], body[split...]].map { String(format: "%x", $0.utf8.count) + "\r\n" + $0 + "\r\n" }.joined() + "0\r\n\r\n"
            let poll =
                "GET /v1/agents/\(agent.id)/desired-state HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(agent.token)\r\n"
                + "If-None-Match: \(tag)\r\n\r\n"
            let missing = "GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n"
            let before = Self.handledCount(fixture)
            let (stored, history) = try await fixture.withLiveServer { base in
                guard let port = URLComponents(string: base)?.port else { throw FixtureError("no port in \(base)") }
                for (requests, statuses) in [
                    ([report("one"), chunked, poll, report("two")], [204, 204, 304, 204]),
                    ([missing, report("three"), poll, report("four")], [404, 204, 304, 204]),
                ] {
                    let connection = try RawConnection(port: port)
                    try connection.send(requests.joined())
                    let deadline = ContinuousClock.now + .seconds(20)
                    while DesiredStatePollHandlerTests.statuses(connection.text).count < statuses.count, ContinuousClock.now < deadline {
                        try await Task.sleep(for: .milliseconds(20))
                        connection.poll()
                    }
                    #expect(DesiredStatePollHandlerTests.statuses(connection.text) == statuses)
                    if requests.first == missing { continue }
                    #expect(Self.handledCount(fixture) - before == 3, "no request went to the router: all three reports answered here")
                }
                // The same report answered here and by the router (a query sends it there): the same bytes but for the
                // `Date` value.
                var answers: [String] = []
                for query in ["", "?x=1"] {
                    let connection = try RawConnection(port: port)
                    try connection.send(report("five", query: query))
                    let deadline = ContinuousClock.now + .seconds(20)
                    while !connection.text.hasSuffix("\r\n\r\n"), ContinuousClock.now < deadline {
                        try await Task.sleep(for: .milliseconds(20))
                        connection.poll()
                    }
                    // Both carry a current `Date`, in the same place.
                    let (text, dates) = DesiredStatePollHandlerTests.datesBlanked(connection.text)
                    #expect(dates.count == 1, "one Date: \(connection.text)")
                    answers.append(text)
                }
                #expect(answers[0].hasPrefix("HTTP/1.1 204"))
                #expect(answers[0] == answers[1])
                let store = fixture.controller.core.store
                return (
                    try await store.serviceStatuses(agentID: agent.id).map(\.status.message),
                    try await store.statusHistory(agentID: agent.id, limit: 10).count
                )
            }
            #expect(stored == ["five"])
            #expect(history == 6, "one history entry per report (each message differs)")
        }
    }

    /// Report bodies held while they arrive share one budget (`BodyBudget`): one agent's token held a body of just under
    /// the limit open on every connection, a byte a minute. A body past the budget is answered 503 with `Retry-After`,
    /// whether the handler or the router holds the others; a body that completes gives its bytes back. `pollFirst`: the
    /// agent's token is cached (its reports are held by the handler), or not yet (the router holds the first).
    @Test(arguments: [false, true])
    func reportBodiesShareOneBudget(pollFirst: Bool) async throws {
        let budget = 6_000
        let adjust: (inout ControllerConfiguration) -> Void = {
            $0.maximumStatusBytes = Self.limit
            $0.connectionLimits.maximumBodyBytesInFlight = budget
        }
        try await Fixture.with(adjust: adjust) { fixture in
            let agent = try await Self.enroll(fixture, name: "a", poll: pollFirst)
            let held = fixture.controller.core.bodyBudget
            let (first, second, third, stored) = try await fixture.withLiveServer { base in
                guard let port = URLComponents(string: base)?.port else { throw FixtureError("no port in \(base)") }
                // All of the slow request but its last 500 bytes: 3,500 bytes of its body.
                let slow = Self.sizedReport(agent, "slow", size: 4_000)
                let holder = try RawConnection(port: port)
                try holder.send(String(decoding: slow.dropLast(500), as: UTF8.self))
                let deadline = ContinuousClock.now + .seconds(20)
                while held.bytesHeld < 3_500, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
                #expect(held.bytesHeld >= 3_500, "the slow body is held")
                // 3,500 + 3,000 is past the budget of 6,000.
                let refused = try RawConnection(port: port)
                try refused.send(String(decoding: Self.sizedReport(agent, "refused", size: 3_000), as: UTF8.self))
                let second = try await Self.answer(refused)
                // The slow body completes, is stored, and gives its bytes back.
                try holder.send(String(decoding: slow.suffix(500), as: UTF8.self))
                let first = try await Self.answer(holder)
                let after = try RawConnection(port: port)
                try after.send(String(decoding: Self.sizedReport(agent, "after", size: 3_000), as: UTF8.self))
                let third = try await Self.answer(after)
                return (first, second, third, try await fixture.controller.core.store.serviceStatuses(agentID: agent.id).map(\.status.message))
            }
            #expect(second.hasPrefix("HTTP/1.1 503"), "\(second)")
            #expect(second.contains("Retry-After: 5"), "\(second)")
            #expect(second.contains(#""error":"busy""#), "\(second)")
            #expect(first.hasPrefix("HTTP/1.1 204"), "\(first)")
            #expect(third.hasPrefix("HTTP/1.1 204"), "\(third)")
            #expect(held.bytesHeld == 0, "every body gave its bytes back")
            #expect(stored == ["after"])
        }
    }

    /// One token's bodies take at most its share of the budget (two of the largest body): an agent holding slow reports
    /// open is refused more, while another agent's report is taken.
    @Test(arguments: [false, true])
    func oneAgentsBodiesTakeOnlyItsShare(pollFirst: Bool) async throws {
        let adjust: (inout ControllerConfiguration) -> Void = {
            $0.maximumStatusBytes = Self.limit
            $0.maximumBodyBytes = Self.limit
            $0.connectionLimits.maximumBodyBytesInFlight = 1 << 20
        }
        try await Fixture.with(adjust: adjust) { fixture in
            let greedy = try await Self.enroll(fixture, name: "greedy", poll: pollFirst)
            let other = try await Self.enroll(fixture, name: "other", poll: pollFirst)
            let held = fixture.controller.core.bodyBudget
            #expect(held.limitPerHolder == 2 * Self.limit)
            let (refused, taken) = try await fixture.withLiveServer { base in
                guard let port = URLComponents(string: base)?.port else { throw FixtureError("no port in \(base)") }
                // Two slow reports of the greedy agent, 3,500 bytes of each sent: 7,000 of its 8,192.
                var holders: [RawConnection] = []
                for index in 0..<2 {
                    let slow = Self.sizedReport(greedy, "slow \(index)", size: 4_000)
                    let connection = try RawConnection(port: port)
                    try connection.send(String(decoding: slow.dropLast(500), as: UTF8.self))
                    holders.append(connection)
                }
                let deadline = ContinuousClock.now + .seconds(20)
                while held.bytesHeld < 7_000, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
                #expect(held.bytesHeld >= 7_000, "both slow bodies are held")
                let more = try RawConnection(port: port)
                try more.send(String(decoding: Self.sizedReport(greedy, "more", size: 3_000), as: UTF8.self))
                let refused = try await Self.answer(more)
                let another = try RawConnection(port: port)
                try another.send(String(decoding: Self.sizedReport(other, "taken", size: 3_000), as: UTF8.self))
                let taken = try await Self.answer(another)
                _ = holders
                return (refused, taken)
            }
            #expect(refused.hasPrefix("HTTP/1.1 503"), "\(refused)")
            #expect(refused.contains(#""error":"busy""#), "\(refused)")
            #expect(taken.hasPrefix("HTTP/1.1 204"), "\(taken)")
        }
    }

    /// A report's body counts against its token's share until the report is stored, not only while it arrives: a
    /// report waits in `StatusReportQueue` for its batch to be committed, and one token could otherwise fill the queue
    /// with reports of the largest size, none of them counted. While another process holds SQLite's write lock (a slow
    /// disk), two complete reports of 3,000 bytes wait and hold 6,000 of the agent's 8,192; a third is refused; both
    /// are stored once the lock goes. Through the router (a query in the path) and through the poll handler (the
    /// agent's token cached by a poll); and, through the poll handler, with each report's connection closed once the
    /// server has read it: the handler gave the bytes back when its connection closed while the report it had handed
    /// over went on waiting, so one token could queue reports without end by closing each connection. (The router's
    /// request task ends with its connection: a report whose client left before it was queued is dropped, its bytes
    /// given back, and nothing of it is held.)
    @Test(arguments: [(handler: false, closing: false), (handler: true, closing: false), (handler: true, closing: true)])
    func aQueuedReportStaysCountedUntilStored(_ path: (handler: Bool, closing: Bool)) async throws {
        let (handler, closing) = path
        let adjust: (inout ControllerConfiguration) -> Void = {
            $0.maximumStatusBytes = Self.limit
            $0.maximumBodyBytes = Self.limit
            $0.connectionLimits.maximumBodyBytesInFlight = 1 << 20
        }
        try await Fixture.with(adjust: adjust) { fixture in
            let agent = try await Self.enroll(fixture, name: "queued", poll: handler)
            let held = fixture.controller.core.bodyBudget
            #expect(held.limitPerHolder == 2 * Self.limit)
            let (answers, heldWhileLocked, stored) = try await fixture.withLiveServer { base in
                guard let port = URLComponents(string: base)?.port else { throw FixtureError("no port in \(base)") }
                // Taken once the server listens, and given back once the third report is answered (at most 30 s): a
                // fixed hold could end on a loaded machine before the server had read the first two.
                let lock = try await SQLiteWriteLock.hold(
                    fixture.controller.core.configuration.databasePath,
                    seconds: 30,
                    marker: fixture.directory.appendingPathComponent("locked").path
                )
                let deadline = ContinuousClock.now + .seconds(20)
                func send(_ message: String) throws -> RawConnection {
                    var request = String(decoding: Self.sizedReport(agent, message, size: 3_000), as: UTF8.self)
                    if !handler { request = request.replacingOccurrences(of: "/status HTTP/1.1", with: "/status?via=router HTTP/1.1") }
                    let connection = try RawConnection(port: port)
                    try connection.send(request)
                    return connection
                }
                var waiting = [try send("first"), try send("second")]
                if closing {
                    // Closed once the server has read each whole report (they are then counted), before any answer. Reset:
                    // a close's FIN alone is what a client that half-closes sends too, whose connection the server keeps
                    // to write the report's answer once it is stored.
                    while held.bytesHeld < 6_000, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
                    for connection in waiting { connection.resetWhenClosed() }
                    waiting = []
                    // Until the server has seen both close (what it then gave back, it gave back on the close).
                    let connections = fixture.controller.connections
                    while connections.openCount > 0, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
                    #expect(connections.openCount == 0, "the server saw the closes")
                }
                while held.bytesHeld < 6_000, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
                let heldWhileLocked = held.bytesHeld
                let refused = try await Self.answer(try send("third"))
                var answers = [refused]
                lock.release()
                for connection in waiting { answers.append(try await Self.answer(connection)) }
                _ = try await lock.value
                // Without answers to wait for, the reports are stored once their bytes are given back.
                let storedBy = ContinuousClock.now + .seconds(20)
                while closing, held.bytesHeld > 0, ContinuousClock.now < storedBy { try await Task.sleep(for: .milliseconds(20)) }
                let stored = try await fixture.controller.core.store.serviceStatuses(agentID: agent.id).map(\.status.message)
                return (answers, heldWhileLocked, stored)
            }
            #expect(heldWhileLocked >= 6_000, "the two queued reports are counted while they wait")
            #expect(answers[0].hasPrefix("HTTP/1.1 503") && answers[0].contains(#""error":"busy""#), "\(answers[0])")
            #expect(closing || (answers[1].hasPrefix("HTTP/1.1 204") && answers[2].hasPrefix("HTTP/1.1 204")), "\(answers)")
            #expect(held.bytesHeld == 0, "every body gave its bytes back")
            #expect(stored == ["first"] || stored == ["second"], "\(stored)")
        }
    }

    /// Enrolls agent `name`; `poll`: its token is then cached by a poll (its reports are taken by the poll handler),
    /// else not yet (the router takes its first).
    static func enroll(_ fixture: Fixture, name: String, poll: Bool) async throws -> (id: String, token: String) {
        try await fixture.withRouter { client in
            let agent = try await fixture.enroll(client, name: name)
            if poll {
                let answer = try await client.execute(
                    uri: "/v1/agents/\(agent.id)/desired-state",
                    method: .get,
                    headers: Fixture.bearer(agent.token)
                )
                #expect(answer.status == .ok)
            }
            return agent
        }
    }

    /// A status report request of `agent` whose body is exactly `size` bytes (white space after the opening brace).
    static func sizedReport(_ agent: (id: String, token: String), _ message: String, size: Int) -> [UInt8] {
        let base = report(message: message)
        let body = "{" + String(repeating: " ", count: size - base.utf8.count) + base.dropFirst()
        return Array(
            ("POST /v1/agents/\(agent.id)/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(agent.token)\r\n"
                + "Content-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n" + body).utf8
        )
    }

    /// What `connection` was answered: its head and the body its `Content-Length` announces.
    static func answer(_ connection: RawConnection) async throws -> String {
        let deadline = ContinuousClock.now + .seconds(20)
        while !isComplete(connection.text), !connection.isClosedByPeer, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
            connection.poll()
        }
        return connection.text
    }

    /// Whether `text` holds a whole answer: a head, and as many body bytes as its `Content-Length` says (none without).
    static func isComplete(_ text: String) -> Bool {
        guard let end = text.range(of: "\r\n\r\n") else { return false }
        let length =
            text[..<end.lowerBound].split(separator: "\r\n")
            .first { $0.lowercased().hasPrefix("content-length:") }
            .flatMap { Int($0.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) } ?? 0
        return text[end.upperBound...].utf8.count >= length
    }

    static func handledCount(_ fixture: Fixture) -> Int {
        fixture.counter("ferry_status_report_handler_answers_total")
    }
}
