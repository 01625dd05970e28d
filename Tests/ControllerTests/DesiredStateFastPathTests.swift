import Foundation
import HTTPTypes
import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import Shared
import Testing

@testable import Controller

/// The fast path answers a plain 304 poll from the raw bytes, before the HTTP decoder; everything else must reach the
/// decoder untouched and get the answer it always got.
@Suite struct DesiredStateFastPathTests {
    typealias Fixture = ControllerFixture

    static let head = "GET /v1/agents/{id}/desired-state HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
    static let poll = head + "If-None-Match: {tag}\r\n\r\n"

    // MARK: What the parser takes

    struct ParseCase: Sendable, CustomStringConvertible {
        var name: String
        var request: String
        /// The agent id, token and tag read, or `nil` when the request is the decoder's.
        var expected: (id: String, token: String, tag: String)?
        var description: String { name }
    }

    static let parseCases: [ParseCase] = [
        ParseCase(name: "a plain poll", request: poll, expected: ("{id}", "{token}", "{tag}")),
        ParseCase(
            name: "names in any case, spaces around values, keep-alive, other headers",
            request: "GET /v1/agents/{id}/desired-state?wait=0 HTTP/1.1\r\nhost: x\r\nAUTHORIZATION:  bearer  {token} \t\r\n"
                + "if-none-match:{tag}\r\nConnection: Keep-Alive\r\nAccept: */*\r\nUser-Agent: ferry-agent/1\r\n\r\n",
            expected: ("{id}", "{token}", "{tag}")
        ),
        ParseCase(name: "no If-None-Match", request: head + "\r\n", expected: nil),
        ParseCase(name: "no Authorization", request: "GET /v1/agents/{id}/desired-state HTTP/1.1\r\nIf-None-Match: {tag}\r\n\r\n", expected: nil),
        ParseCase(name: "a wait", request: poll.replacingOccurrences(of: "desired-state", with: "desired-state?wait=1"), expected: nil),
        ParseCase(name: "another query", request: poll.replacingOccurrences(of: "desired-state", with: "desired-state?x=0"), expected: nil),
        ParseCase(name: "HTTP/1.0", request: poll.replacingOccurrences(of: "HTTP/1.1", with: "HTTP/1.0"), expected: nil),
        ParseCase(name: "lower-case method", request: "get" + poll.dropFirst(3), expected: nil),
        ParseCase(name: "HEAD", request: "HEAD" + poll.dropFirst(3), expected: nil),
        ParseCase(name: "two spaces after the method", request: "GET  " + poll.dropFirst(4), expected: nil),
        ParseCase(name: "a leading blank line", request: "\r\n" + poll, expected: nil),
        ParseCase(name: "Connection: close", request: head + "Connection: close\r\nIf-None-Match: {tag}\r\n\r\n", expected: nil),
        ParseCase(
            name: "Connection: keep-alive, Upgrade",
            request: head + "Connection: keep-alive, Upgrade\r\nIf-None-Match: {tag}\r\n\r\n",
            expected: nil
        ),
        ParseCase(name: "Content-Length: 0", request: head + "Content-Length: 0\r\nIf-None-Match: {tag}\r\n\r\n", expected: nil),
        ParseCase(name: "Transfer-Encoding", request: head + "transfer-encoding: chunked\r\nIf-None-Match: {tag}\r\n\r\n0\r\n\r\n", expected: nil),
        ParseCase(name: "Expect", request: head + "Expect: 100-continue\r\nIf-None-Match: {tag}\r\n\r\n", expected: nil),
        ParseCase(name: "Upgrade", request: head + "Upgrade: h2c\r\nIf-None-Match: {tag}\r\n\r\n", expected: nil),
        ParseCase(name: "two Authorization headers", request: head + "Authorization: Bearer {token}\r\nIf-None-Match: {tag}\r\n\r\n", expected: nil),
        ParseCase(name: "two If-None-Match headers", request: head + "If-None-Match: {tag}\r\nIf-None-Match: \"x\"\r\n\r\n", expected: nil),
        ParseCase(name: "a folded header", request: head + "If-None-Match: {tag}\r\n  \"x\"\r\n\r\n", expected: nil),
        ParseCase(name: "a space before the colon", request: head + "If-None-Match : {tag}\r\n\r\n", expected: nil),
        ParseCase(name: "an empty header name", request: head + ": x\r\nIf-None-Match: {tag}\r\n\r\n", expected: nil),
        ParseCase(name: "bare LF line ends", request: poll.replacingOccurrences(of: "\r\n", with: "\n"), expected: nil),
        ParseCase(name: "a bare CR", request: head + "X: a\rb\r\nIf-None-Match: {tag}\r\n\r\n", expected: nil),
        ParseCase(name: "a byte outside ASCII in a value", request: head + "X-Note: caf\u{e9}\r\nIf-None-Match: {tag}\r\n\r\n", expected: nil),
        ParseCase(name: "a control byte in a value", request: head + "X-Note: a\u{1}b\r\nIf-None-Match: {tag}\r\n\r\n", expected: nil),
        ParseCase(
            name: "a byte outside ASCII in the target",
            request: poll.replacingOccurrences(of: "/v1/agents/", with: "/v1/agents/\u{e9}"),
            expected: nil
        ),
        ParseCase(name: "two requests", request: poll + poll, expected: nil),
        ParseCase(name: "a request cut short", request: String(poll.dropLast(2)), expected: nil),
        ParseCase(name: "bytes after the head", request: poll + "G", expected: nil),
        ParseCase(name: "Basic credentials", request: poll.replacingOccurrences(of: "Bearer", with: "Basic"), expected: nil),
        ParseCase(name: "a path inside the id", request: poll.replacingOccurrences(of: "{id}/", with: "{id}/x/"), expected: nil),
        ParseCase(name: "too long", request: head + "X-Pad: \(String(repeating: "a", count: 4096))\r\nIf-None-Match: {tag}\r\n\r\n", expected: nil),
        ParseCase(
            name: "too many headers",
            request: head + String(repeating: "X-A: 1\r\n", count: 40) + "If-None-Match: {tag}\r\n\r\n",
            expected: nil
        ),
    ]

    static func fill(_ text: String, id: String, token: String, tag: String) -> String {
        text.replacingOccurrences(of: "{id}", with: id).replacingOccurrences(of: "{token}", with: token).replacingOccurrences(of: "{tag}", with: tag)
    }

    @Test(arguments: parseCases)
    func theParserTakesOnlyAPlainPoll(_ testCase: ParseCase) {
        let (id, token, tag) = ("agt_0123abcd", Token.generate(), "\"\(String(repeating: "ab", count: 32))\"")
        let bytes = Array(Self.fill(testCase.request, id: id, token: token, tag: tag).utf8)
        let poll = bytes.withUnsafeBytes { DesiredStateFastPath.Poll($0) }
        if let expected = testCase.expected {
            #expect(poll?.agentID == Self.fill(expected.id, id: id, token: token, tag: tag))
            #expect(poll?.token == Self.fill(expected.token, id: id, token: token, tag: tag))
            #expect(poll?.ifNoneMatch == Self.fill(expected.tag, id: id, token: token, tag: tag))
        } else {
            #expect(poll == nil)
        }
    }

    // MARK: What the live server answers

    struct LiveCase: Sendable, CustomStringConvertible {
        var name: String
        /// Sent in order; after each, the test waits for `answersSoFar` answers (or 150 ms when that is no more than
        /// before, so the next write is a read of its own).
        var steps: [(text: String, answersSoFar: Int)]
        var statuses: [Int]
        /// How many of the answers the fast path gave.
        var fast: Int
        var description: String { name }
    }

    static let liveCases: [LiveCase] = [
        LiveCase(name: "a plain poll", steps: [(poll, 1)], statuses: [304], fast: 1),
        LiveCase(name: "three polls one after the other", steps: [(poll, 1), (poll, 2), (poll, 3)], statuses: [304, 304, 304], fast: 3),
        LiveCase(name: "star", steps: [(head + "If-None-Match: *\r\n\r\n", 1)], statuses: [304], fast: 1),
        LiveCase(name: "no If-None-Match: the whole state", steps: [(head + "\r\n", 1)], statuses: [200], fast: 0),
        LiveCase(name: "another tag: the whole state", steps: [(head + "If-None-Match: \"0\"\r\n\r\n", 1)], statuses: [200], fast: 0),
        LiveCase(
            name: "a long-poll parks (wait=1)",
            steps: [(poll.replacingOccurrences(of: "state ", with: "state?wait=1 "), 1)],
            statuses: [304],
            fast: 0
        ),
        LiveCase(name: "Connection: close", steps: [(head + "Connection: close\r\nIf-None-Match: {tag}\r\n\r\n", 1)], statuses: [304], fast: 0),
        LiveCase(name: "Content-Length: 0", steps: [(head + "Content-Length: 0\r\nIf-None-Match: {tag}\r\n\r\n", 1)], statuses: [304], fast: 0),
        LiveCase(
            name: "a chunked body",
            steps: [(head + "Transfer-Encoding: chunked\r\nIf-None-Match: {tag}\r\n\r\n0\r\n\r\n", 1)],
            statuses: [304],
            fast: 0
        ),
        LiveCase(
            name: "two If-None-Match headers",
            steps: [(head + "If-None-Match: \"x\"\r\nIf-None-Match: {tag}\r\n\r\n", 1)],
            statuses: [304],
            fast: 0
        ),
        LiveCase(name: "a byte outside ASCII", steps: [(head + "X-Note: caf\u{e9}\r\nIf-None-Match: {tag}\r\n\r\n", 1)], statuses: [304], fast: 0),
        LiveCase(
            name: "a long header",
            steps: [(head + "X-Pad: \(String(repeating: "a", count: 5000))\r\nIf-None-Match: {tag}\r\n\r\n", 1)],
            statuses: [304],
            fast: 0
        ),
        LiveCase(name: "two polls in one write", steps: [(poll + poll, 2)], statuses: [304, 304], fast: 0),
        LiveCase(
            name: "a poll split over two writes, then a whole one",
            steps: [(String(poll.prefix(40)), 0), (String(poll.dropFirst(40)), 1), (poll, 2)],
            statuses: [304, 304],
            fast: 1
        ),
        // The poll behind a parked long-poll waits its turn (the decoder's path), and the one after is fast again. Parked
        // for 5 s: with a 1 s wait, a loaded machine (the whole suite at once) sometimes sent the second poll after the
        // first was answered, and it was fast too.
        LiveCase(
            name: "a poll behind a parked long-poll, then one more",
            steps: [(poll.replacingOccurrences(of: "state ", with: "state?wait=5 "), 0), (poll, 2), (poll, 3)],
            statuses: [304, 304, 304],
            fast: 1
        ),
        // One write holding a poll answered at once and a long-poll that parks: the first answer leaves the decoder
        // between requests, but the second request is unanswered. The next poll waits its turn; answered from its
        // bytes, it went out first, as the parked poll's answer.
        LiveCase(
            name: "a poll and a long-poll in one write, then a poll",
            steps: [(poll + poll.replacingOccurrences(of: "state ", with: "state?wait=3 "), 1), (poll, 3)],
            statuses: [304, 304, 304],
            fast: 0
        ),
        LiveCase(
            name: "a health check, then a poll",
            steps: [("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 1), (poll, 2)],
            statuses: [200, 304],
            fast: 1
        ),
        LiveCase(
            name: "a poll, a refused report with a body, a poll",
            steps: [
                (poll, 1), ("POST /v1/agents/{id}/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 2\r\n\r\n{}", 2),
                (poll, 3),
            ],
            statuses: [304, 400, 304],
            fast: 2
        ),
        // A read that ends mid-head leaves the start of a request in the decoder: the next poll's bytes are that head's
        // headers there (here they end it: /healthz answers), not a poll for the fast path to answer.
        LiveCase(
            name: "a poll and the start of a health check in one write, then a poll's bytes",
            steps: [(poll + "GET /healthz HTTP/1.1\r\nX-Pad: ", 1), (poll, 2), ("\r\n", 2)],
            statuses: [304, 200],
            fast: 0
        ),
        LiveCase(name: "an id that is no agent", steps: [(poll.replacingOccurrences(of: "{id}", with: "agt_nobody"), 1)], statuses: [403], fast: 0),
        LiveCase(name: "a token that is no token", steps: [(poll.replacingOccurrences(of: "{token}", with: "hunter2"), 1)], statuses: [401], fast: 0),
    ]

    @Test(arguments: liveCases)
    func everyRequestGetsItsAnswer(_ testCase: LiveCase) async throws {
        try await Self.withPolledAgent { fixture, port, agent, tag in
            let connection = try RawConnection(port: port)
            let before = Self.fastCount(fixture)
            var answers = 0
            for step in testCase.steps {
                try connection.send(Self.fill(step.text, id: agent.id, token: agent.token, tag: tag))
                if step.answersSoFar <= answers {
                    try await Task.sleep(for: .milliseconds(150))
                } else {
                    let deadline = ContinuousClock.now + .seconds(20)
                    while DesiredStatePollHandlerTests.statuses(connection.text).count < step.answersSoFar, ContinuousClock.now < deadline {
                        try await Task.sleep(for: .milliseconds(10))
                        connection.poll()
                    }
                    answers = step.answersSoFar
                }
            }
            #expect(DesiredStatePollHandlerTests.statuses(connection.text) == testCase.statuses)
            #expect(Self.fastCount(fixture) - before == testCase.fast, "answered by the fast path")
        }
    }

    /// A request after which its connection ends: HTTP/1.1 with `Connection: close`, or HTTP/1.0 without keep-alive.
    /// Its connection is closed after its answer, and a poll sent behind it is not answered from its raw bytes. The
    /// HTTP/1.0 one was kept open for the idle timeout (the version is lost on the way to the router), and a poll behind
    /// either was answered by the fast path, into a closed output, each answer holding the connection open longer.
    @Test(arguments: [
        (head: "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", closes: true),
        (head: "GET /healthz HTTP/1.0\r\n\r\n", closes: true),
        (head: "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: Close\r\n\r\n", closes: true),
        (head: "GET /healthz HTTP/1.0\r\nConnection: TE\r\n\r\n", closes: true),
        (head: "GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", closes: false),
    ])
    func aRequestThatEndsItsConnectionEndsTheFastPath(_ row: (head: String, closes: Bool)) async throws {
        try await Self.withPolledAgent { fixture, port, agent, tag in
            let connection = try RawConnection(port: port)
            let before = Self.fastCount(fixture)
            try connection.send(row.head)
            #expect(try await connection.waitForStatus(timeout: .seconds(10)) == 200)
            // Sent behind it; a closed connection may refuse it (reset), which is no failure here.
            try? connection.send(Self.fill(Self.poll, id: agent.id, token: agent.token, tag: tag))
            if row.closes {
                let closed = try await connection.waitUntilClosed(timeout: .seconds(10))
                #expect(closed != nil, "still open 10 s after its answer")
                #expect(DesiredStatePollHandlerTests.statuses(connection.text) == [200], "\(connection.text)")
                #expect(Self.fastCount(fixture) == before, "a poll behind a closing request answered by the fast path")
            } else {
                try await DesiredStatePollHandlerTests.waitUntil {
                    connection.poll()
                    return DesiredStatePollHandlerTests.statuses(connection.text).count == 2
                }
                #expect(DesiredStatePollHandlerTests.statuses(connection.text) == [200, 304], "\(connection.text)")
                #expect(Self.fastCount(fixture) - before == 1, "answered by the fast path")
                #expect(try await connection.waitUntilClosed(timeout: .milliseconds(500)) == nil, "kept alive")
            }
        }
    }

    /// A poll has no body: a parked one sent with a body is the router's, which never reads it, and holds nothing of
    /// the body budget. Held by the poll handler, it counted against no token's share, so one agent's parked polls with
    /// bodies of 1 MiB took the whole budget every report and publish shares.
    @Test func aParkedPollsBodyHoldsNoneOfTheBudget() async throws {
        try await Self.withPolledAgent { fixture, port, agent, tag in
            let connection = try RawConnection(port: port)
            let body = String(repeating: "x", count: 4_000)
            let request =
                Self.head.replacingOccurrences(of: "state ", with: "state?wait=2 ") + "Content-Length: \(body.utf8.count)\r\n"
                + "If-None-Match: {tag}\r\n\r\n"
            try connection.send(Self.fill(request, id: agent.id, token: agent.token, tag: tag) + body)
            // Watched for the whole parked wait, until the answer: held, the body stayed counted all that time.
            var mostHeld = 0
            let deadline = ContinuousClock.now + .seconds(20)
            while DesiredStatePollHandlerTests.statuses(connection.text).isEmpty, ContinuousClock.now < deadline {
                mostHeld = max(mostHeld, fixture.controller.core.bodyBudget.bytesHeld)
                try await Task.sleep(for: .milliseconds(10))
                connection.poll()
            }
            #expect(mostHeld == 0)
            #expect(DesiredStatePollHandlerTests.statuses(connection.text) == [304])
        }
    }

    /// A poll with `Connection: close` whose answer is larger than the socket takes at once, from a client that reads
    /// late: the connection closes only once the whole answer is written. Closed at once, as it was, NIO dropped the
    /// writes still pending and the client got a body cut short under its full `Content-Length`.
    @Test func connectionCloseWaitsForTheWholeAnswer() async throws {
        try await Fixture.with { fixture in
            let agent = try await fixture.withRouter { client in
                // 24 services with 250 KB of env each: an answer of about 8 MB, more than the kernel buffers on loopback.
                let services = (0..<24).map { "svc\($0)" }
                let agent = try await fixture.enroll(client, name: "a", services: services)
                let artifact = try await fixture.upload(client, Array("app".utf8))
                for service in services {
                    var release = Fixture.release(service: service, serial: 1, artifact: artifact)
                    release.env = Dictionary(uniqueKeysWithValues: (0..<10).map { ("VALUE_\($0)", String(repeating: "v", count: 25_000)) })
                    #expect(try await fixture.publish(client, release).status == .created)
                }
                return agent
            }
            try await fixture.withLiveServer { base in
                guard let port = URLComponents(string: base)?.port else { throw FixtureError("no port in \(base)") }
                let connection = try RawConnection(port: port, receiveBuffer: 4096)
                try connection.send(Self.fill(Self.head + "Connection: close\r\n\r\n", id: agent.id, token: agent.token, tag: ""))
                // Not reading: the answer fills the socket, and the rest waits in the channel when the poll handler closes.
                try await Task.sleep(for: .seconds(1))
                #expect(try await connection.waitUntilClosed(timeout: .seconds(20)) != nil)
                let text = String(decoding: connection.received, as: UTF8.self)
                guard let split = text.range(of: "\r\n\r\n") else {
                    Issue.record("no answer head: \(text.prefix(200))")
                    return
                }
                let head = text[..<split.lowerBound].lowercased()
                let length = head.split(separator: "\r\n").first { $0.hasPrefix("content-length: ") }.flatMap { Int($0.dropFirst(16)) }
                #expect(head.hasPrefix("http/1.1 200"), "\(head)")
                #expect((length ?? 0) > 7_000_000, "\(head)")
                #expect(connection.received.count - text.utf8.distance(from: text.utf8.startIndex, to: split.upperBound) == length)
            }
        }
    }

    /// A body the router answered without reading (a health check that declares one) is still the decoder's: a poll's
    /// bytes sent as that body are the body, and the request after it gets its own answer. Answered as a poll, they left
    /// the decoder waiting for the body, which swallowed the next request.
    @Test func aBodyTheRouterDidNotReadIsNotTakenForAPoll() async throws {
        try await Self.withPolledAgent { fixture, port, agent, tag in
            let connection = try RawConnection(port: port)
            let before = Self.fastCount(fixture)
            let poll = Self.fill(Self.poll, id: agent.id, token: agent.token, tag: tag)
            try connection.send("GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: \(poll.utf8.count)\r\n\r\n")
            #expect(try await connection.waitForStatus(timeout: .seconds(20)) == 200)
            try await Task.sleep(for: .milliseconds(150))
            try connection.send(poll)
            try await Task.sleep(for: .milliseconds(150))
            try connection.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            let deadline = ContinuousClock.now + .seconds(20)
            while DesiredStatePollHandlerTests.statuses(connection.text).count < 2, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(10))
                connection.poll()
            }
            #expect(DesiredStatePollHandlerTests.statuses(connection.text) == [200, 200])
            #expect(Self.fastCount(fixture) == before)
            // Between requests again: the next poll is answered from its bytes.
            try connection.send(poll)
            while DesiredStatePollHandlerTests.statuses(connection.text).count < 3, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(10))
                connection.poll()
            }
            #expect(DesiredStatePollHandlerTests.statuses(connection.text) == [200, 200, 304])
            #expect(Self.fastCount(fixture) == before + 1)
        }
    }

    /// The fast path's 304 is byte for byte the one the HTTP encoder writes for the same poll (here after a wait of a
    /// second, answered by `DesiredStatePollHandler` through the decoder and encoder), but for the `Date` value.
    @Test func theHeadIsTheEncodersByteForByte() async throws {
        try await Self.withPolledAgent { fixture, port, agent, tag in
            func answer(to request: String) async throws -> [UInt8] {
                let connection = try RawConnection(port: port)
                try connection.send(Self.fill(request, id: agent.id, token: agent.token, tag: tag))
                #expect(try await connection.waitForStatus(timeout: .seconds(20)) == 304)
                return connection.received
            }
            let before = Self.fastCount(fixture)
            let fast = try await answer(to: Self.poll)
            #expect(Self.fastCount(fixture) - before == 1)
            let encoded = try await answer(to: Self.poll.replacingOccurrences(of: "state ", with: "state?wait=1 "))
            #expect(Self.fastCount(fixture) - before == 1)
            let (fastText, fastDates) = DesiredStatePollHandlerTests.datesBlanked(String(decoding: fast, as: UTF8.self))
            let (encodedText, encodedDates) = DesiredStatePollHandlerTests.datesBlanked(String(decoding: encoded, as: UTF8.self))
            #expect(fastText == encodedText, "the same bytes but for the Date value")
            #expect(fastDates.count == 1 && encodedDates.count == 1)
            #expect(String(decoding: fast, as: UTF8.self).contains("ETag: \(tag)\r\n"))
        }
    }

    /// A removed agent's token is refused on the very next poll, with its connection to the fast path kept open.
    @Test func aRevokedTokenIsRefusedAtOnce() async throws {
        try await Self.withPolledAgent { fixture, port, agent, tag in
            let connection = try RawConnection(port: port)
            try connection.send(Self.fill(Self.poll, id: agent.id, token: agent.token, tag: tag))
            #expect(try await connection.waitForStatus(timeout: .seconds(20)) == 304)
            try await fixture.withRouter { client in
                let response = try await client.execute(uri: "/v1/agents/a", method: .delete, headers: Fixture.bearer(fixture.operatorToken))
                #expect(response.status.code < 300)
            }
            let before = Self.fastCount(fixture)
            try connection.send(Self.fill(Self.poll, id: agent.id, token: agent.token, tag: tag))
            let deadline = ContinuousClock.now + .seconds(20)
            while DesiredStatePollHandlerTests.statuses(connection.text).count < 2, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(10))
                connection.poll()
            }
            #expect(DesiredStatePollHandlerTests.statuses(connection.text) == [304, 401])
            #expect(Self.fastCount(fixture) == before)
        }
    }

    /// A client that does not read its answers leaves the socket unwritable: the fast path then passes even a plain poll
    /// on to the decoder's way (which stops reading and closes a slow reader) instead of queueing 304s without bound.
    /// The same poll on a writable socket is answered here. An `EmbeddedChannel`, whose writability the test sets.
    @Test(arguments: [(writable: true, answeredHere: true), (writable: false, answeredHere: false)])
    func anUnwritableSocketGoesTheDecodersWay(_ row: (writable: Bool, answeredHere: Bool)) async throws {
        try await Self.withPolledAgent { fixture, _, agent, tag in
            let dependencies = Self.dependencies(fixture)
            let channel = EmbeddedChannel(handler: DesiredStateFastPath(dependencies))
            try await channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9)).get()
            channel.isWritable = row.writable
            let request = Self.fill(Self.poll, id: agent.id, token: agent.token, tag: tag)
            try channel.writeInbound(ByteBuffer(string: request))
            let answer = try channel.readOutbound(as: ByteBuffer.self).map { String(buffer: $0) }
            let passedOn = try channel.readInbound(as: ByteBuffer.self).map { String(buffer: $0) }
            if row.answeredHere {
                #expect(answer?.hasPrefix("HTTP/1.1 304 Not Modified\r\n") == true, "\(answer ?? "no answer")")
                #expect(passedOn == nil)
            } else {
                #expect(answer == nil, "\(answer ?? "")")
                #expect(passedOn == request, "the poll reaches the decoder untouched")
            }
            _ = try? await channel.close().get()
        }
    }

    /// A head the framing takes for complete and the decoder refuses (`Foo : bar`: a blank before the colon), behind a
    /// request the router has not answered yet: once that answer's end was written, the fast path opened again and
    /// answered a poll that arrived meanwhile before the router's 400 for the refused head, out of order. Now an error
    /// turns the fast path off for the connection. NIO's own decoder and encoder, on an `EmbeddedChannel`.
    @Test func aHeadTheDecoderRefusesTurnsTheFastPathOff() async throws {
        try await Self.withPolledAgent { fixture, _, agent, tag in
            let dependencies = Self.dependencies(fixture)
            let channel = EmbeddedChannel()
            try channel.pipeline.syncOperations.addHandlers([
                DesiredStateFastPath(dependencies), HTTPResponseEncoder(), ByteToMessageHandler(HTTPRequestDecoder()),
                HTTP1ToHTTPServerCodec(secure: false), DesiredStatePollHandler(dependencies),
            ])
            try await channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9)).get()
            try channel.writeInbound(ByteBuffer(string: "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))
            #expect(throws: (any Error).self) { try channel.writeInbound(ByteBuffer(string: "GET /x HTTP/1.1\r\nFoo : bar\r\n\r\n")) }
            // The router answers the first request.
            try channel.writeOutbound(HTTPResponsePart.head(HTTPResponse(status: .ok)))
            try channel.writeOutbound(HTTPResponsePart.end(nil))
            _ = try? channel.writeInbound(ByteBuffer(string: Self.fill(Self.poll, id: agent.id, token: agent.token, tag: tag)))
            var written = ""
            while let buffer = try channel.readOutbound(as: ByteBuffer.self) { written += String(buffer: buffer) }
            #expect(written.hasPrefix("HTTP/1.1 200 OK"), "\(written)")
            #expect(!written.contains("304"), "the poll was answered before the refused head: \(written)")
            _ = try? await channel.close().get()
        }
    }

    /// What the fast path and the poll handler of `fixture`'s controller work with, for a pipeline a test builds.
    static func dependencies(_ fixture: Fixture) -> DesiredStatePollHandler.Dependencies {
        let core = fixture.controller.core
        return DesiredStatePollHandler.Dependencies(
            authenticator: core.authenticator,
            desiredStates: core.desiredStates,
            metrics: ControllerMetrics(registry: fixture.registry),
            maximumWait: .seconds(60)
        )
    }

    /// A controller with one enrolled agent that has polled once (so its token and state are cached), served live.
    static func withPolledAgent(
        _ body: @Sendable (Fixture, _ port: Int, _ agent: (id: String, token: String), _ tag: String) async throws -> Void
    ) async throws {
        try await Fixture.with { fixture in
            let agent = try await fixture.withRouter { client in try await fixture.enroll(client, name: "a") }
            try await fixture.withLiveServer { base in
                guard let port = URLComponents(string: base)?.port else { throw FixtureError("no port in \(base)") }
                let first = try await LiveHTTP().send("GET", base + "/v1/agents/\(agent.id)/desired-state", token: agent.token)
                let tag = try #require(first.header("ETag"))
                try await body(fixture, port, (agent.id, agent.token), tag)
            }
        }
    }

    static func fastCount(_ fixture: Fixture) -> Int {
        fixture.counter("ferry_desired_state_fast_path_answers_total")
    }
}
