import Foundation
import Shared
import Synchronization
import TestSupport
import Testing

@testable import Controller

/// A live controller on 127.0.0.1 and a free port, for clients that misbehave on the wire.
struct HostileClientWorld: Sendable {
    let fixture: ControllerFixture
    let port: Int

    /// A request head, complete.
    static func get(_ path: String, token: String? = nil, headers: [String: String] = [:]) -> String {
        var text = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        if let token { text += "Authorization: Bearer \(token)\r\n" }
        for (name, value) in headers.sorted(by: { $0.key < $1.key }) { text += "\(name): \(value)\r\n" }
        return text + "\r\n"
    }

    /// An agent enrolled straight in the store; its id, token and current desired-state ETag.
    func agent(_ name: String) async throws -> (id: String, token: String, etag: String) {
        let token = Token.generate()
        let agent = try await fixture.store.enrollAgent(
            proposedID: AgentRoutes.newAgentID(),
            name: name,
            hostname: name,
            services: ["api"],
            tokenHash: Token.digest(token),
            at: Date()
        )
        guard let state = try await fixture.controller.core.desiredStates.current(for: agent.id) else {
            throw FixtureError("no desired state for \(agent.id)")
        }
        return (agent.id, token, state.etag)
    }

    /// A long-poll that parks: the agent already has the current state.
    func longPoll(_ agent: (id: String, token: String, etag: String), wait: Int) -> String {
        Self.get("/v1/agents/\(agent.id)/desired-state?wait=\(wait)", token: agent.token, headers: ["If-None-Match": agent.etag])
    }

    var hub: LongPollHub { fixture.controller.core.desiredStates.hub }

    /// Sends `piece()` on `connection` every `interval` until the server closes it (at most 10 s after `start`), and
    /// expects the close about a second (one timeout of the test's limits) after `start`.
    static func trickle(
        _ connection: RawConnection,
        since start: ContinuousClock.Instant,
        every interval: Duration,
        _ piece: () -> String
    ) async throws {
        while !connection.isClosedByPeer, ContinuousClock.now - start < .seconds(10) {
            try? connection.send(piece())
            try await Task.sleep(for: interval)
            connection.poll()
        }
        let elapsed = ContinuousClock.now - start
        #expect(connection.isClosedByPeer, "still open after \(elapsed)")
        expectClosedAfterOneTimeout(elapsed)
    }

    /// Expects a close about a second (one timeout of the test's limits) after the clock started: not before 900 ms,
    /// within 5 s (`nil`: never closed).
    static func expectClosedAfterOneTimeout(_ closed: Duration?, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(
            closed.map { $0 >= .milliseconds(900) && $0 < .seconds(5) } == true,
            "closed after \(String(describing: closed))",
            sourceLocation: sourceLocation
        )
    }

    /// The head of an operator's artifact upload of `length` bytes.
    func artifactUploadHead(length: Int) -> String {
        "POST /v1/artifacts HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \(fixture.operatorToken)\r\n"
            + "Content-Type: application/octet-stream\r\nContent-Length: \(length)\r\n\r\n"
    }

    /// Waits until `count` long-polls are parked.
    func waitForParked(_ count: Int, timeout: Duration = .seconds(30)) async throws {
        let deadline = ContinuousClock.now + timeout
        while hub.waiterCount != count {
            guard ContinuousClock.now < deadline else { throw FixtureError("\(hub.waiterCount) long-polls parked, expected \(count)") }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// A sample of the app's Prometheus text, `0` when the series does not exist.
    func metric(_ series: String) -> Double {
        let text = fixture.registry.emitToString()
        for line in text.split(separator: "\n") where line.hasPrefix(series + " ") {
            return Double(line.dropFirst(series.count + 1)) ?? .nan
        }
        return 0
    }
}

/// Clients that misbehave on purpose, each against a fresh live controller, and what the connection guard does.
@Suite(.serialized) struct HostileClientTests {
    struct Case: Sendable, CustomTestStringConvertible {
        let name: String
        let limits: ConnectionLimits
        /// The Prometheus series that records what happened, and its value afterwards.
        let metric: String
        let value: Double
        let run: @Sendable (HostileClientWorld) async throws -> Void

        var testDescription: String { "\(name) → \(metric) = \(Int(value))" }
    }

    static func limits(header: Int = 30, idle: Int = 30, cap: Int = 1000) -> ConnectionLimits {
        ConnectionLimits(headerTimeout: .seconds(header), idleTimeout: .seconds(idle), maximumConnections: cap)
    }

    static let cases: [Case] = [
        Case(
            name: "slowloris: a request head that never ends is closed after the header timeout",
            limits: limits(header: 1),
            metric: #"ferry_connections_timed_out_total{reason="header"}"#,
            value: 1
        ) { world in
            // Timed from before the connect: the server's header timer starts no earlier.
            let start = ContinuousClock.now
            let connection = try RawConnection(port: world.port)
            try connection.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            // A header line every 200 ms: always busy, never done.
            try await HostileClientWorld.trickle(connection, since: start, every: .milliseconds(200)) {
                "X-Slow-\(Int.random(in: 0..<1_000_000)): 1\r\n"
            }
            #expect(connection.received.isEmpty, "no answer to a request that never completed")
        },
        Case(
            // The decoder's default let each connection hold 80 KiB of a head that never ends, for the header timeout.
            name: "a request head past 16 KiB is refused at once, not held until the header timeout",
            limits: limits(header: 30),
            metric: #"ferry_connections_timed_out_total{reason="header"}"#,
            value: 0
        ) { world in
            // A head of a browser's size passes (fields of 6 KiB, 12 KiB in all).
            let fair = try RawConnection(port: world.port)
            try fair.send(
                HostileClientWorld.get(
                    "/healthz",
                    headers: ["X-Big-1": String(repeating: "a", count: 6 << 10), "X-Big-2": String(repeating: "b", count: 6 << 10)]
                )
            )
            #expect(try await fair.waitForStatus(timeout: .seconds(10)) == 200)
            let sent = ContinuousClock.now
            for head in [
                // One field over 8 KiB.
                "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Huge: " + String(repeating: "x", count: 9 << 10),
                // Fields of 4 KiB each, 20 KiB in all.
                "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    + (0..<5).map { "X-Part-\($0): " + String(repeating: "y", count: 4 << 10) + "\r\n" }.joined(),
            ] {
                let connection = try RawConnection(port: world.port)
                // The head never ends: refused for its size alone.
                try connection.send(head)
                #expect(try await connection.waitForStatus(timeout: .seconds(10)) == 400)
                let closed = try await connection.waitUntilClosed(timeout: .seconds(10), since: sent)
                #expect(closed.map { $0 < .seconds(10) } == true, "closed after \(String(describing: closed))")
            }
        },
        Case(
            name: "a connection that never sends anything is closed after the header timeout",
            limits: limits(header: 1),
            metric: #"ferry_connections_timed_out_total{reason="header"}"#,
            value: 1
        ) { world in
            let connected = ContinuousClock.now
            let connection = try RawConnection(port: world.port)
            let closed = try await connection.waitUntilClosed(timeout: .seconds(10), since: connected)
            HostileClientWorld.expectClosedAfterOneTimeout(closed)
        },
        Case(
            name: "a kept-alive connection without a next request is closed after the idle timeout",
            limits: limits(idle: 1),
            metric: #"ferry_connections_timed_out_total{reason="idle"}"#,
            value: 1
        ) { world in
            let connection = try RawConnection(port: world.port)
            // Timed from the request: the server's idle timer starts once it has answered, never before the request
            // was sent, however late this test gets to read the answer (700 ms late once under a loaded CI run).
            let asked = ContinuousClock.now
            try connection.send(HostileClientWorld.get("/healthz"))
            #expect(try await connection.waitForStatus(timeout: .seconds(10)) == 200)
            let closed = try await connection.waitUntilClosed(timeout: .seconds(10), since: asked)
            HostileClientWorld.expectClosedAfterOneTimeout(closed)
        },
        Case(
            name: "an upload that stops sending is closed after the idle timeout",
            limits: limits(idle: 1),
            metric: #"ferry_connections_timed_out_total{reason="body"}"#,
            value: 1
        ) { world in
            let connection = try RawConnection(port: world.port)
            let sent = ContinuousClock.now
            try connection.send(world.artifactUploadHead(length: 100_000) + String(repeating: "x", count: 1000))
            let closed = try await connection.waitUntilClosed(timeout: .seconds(10), since: sent)
            HostileClientWorld.expectClosedAfterOneTimeout(closed)
            #expect(world.metric("ferry_artifacts_stored_total") == 0)
        },
        Case(
            // A byte every 300 ms never stalls for the idle timeout: it kept the request in flight for ever, on a
            // connection the cap never sheds.
            name: "an upload trickled below the minimum rate is closed once it has had the idle timeout",
            limits: limits(idle: 1),
            metric: #"ferry_connections_timed_out_total{reason="body"}"#,
            value: 1
        ) { world in
            let connection = try RawConnection(port: world.port)
            let sent = ContinuousClock.now
            try connection.send(world.artifactUploadHead(length: 100_000))
            try await HostileClientWorld.trickle(connection, since: sent, every: .milliseconds(300)) { "x" }
            #expect(world.metric("ferry_artifacts_stored_total") == 0)
        },
        Case(
            name: "a parked long-poll outlives the idle and header timeouts and gets its answer",
            limits: limits(header: 1, idle: 1),
            metric: #"ferry_desired_state_responses_total{code="304"}"#,
            value: 1
        ) { world in
            let agent = try await world.agent("patient")
            let connection = try RawConnection(port: world.port)
            let start = ContinuousClock.now
            try connection.send(world.longPoll(agent, wait: 3))
            #expect(try await connection.waitForStatus(timeout: .seconds(20)) == 304)
            #expect(ContinuousClock.now - start >= .milliseconds(2900), "answered after \(ContinuousClock.now - start)")
            #expect(world.metric(#"ferry_connections_timed_out_total{reason="header"}"#) == 0)
            #expect(world.metric(#"ferry_connections_timed_out_total{reason="slow-reader"}"#) == 0)
        },
        Case(
            name: "a client pipelining polls without reading the answers is closed as a slow reader",
            limits: limits(idle: 1),
            metric: #"ferry_connections_timed_out_total{reason="slow-reader"}"#,
            value: 1
        ) { world in
            let agent = try await world.agent("greedy")
            // Its token cached, as every agent's is after its first poll: its polls are answerable before the router.
            let first = try RawConnection(port: world.port)
            try first.send(HostileClientWorld.get("/v1/agents/\(agent.id)/desired-state", token: agent.token))
            #expect(try await first.waitForStatus(timeout: .seconds(10)) == 200)
            let poll = HostileClientWorld.get("/v1/agents/\(agent.id)/desired-state", token: agent.token, headers: ["If-None-Match": agent.etag])
            let sender = BlockingSender(
                try RawConnection(port: world.port, receiveBuffer: 1024),
                text: String(repeating: poll, count: 100),
                times: 2_000
            )
            let started = ContinuousClock.now
            let stopped = try await eventually("the server closed the connection", timeout: .seconds(120), interval: .milliseconds(50)) {
                sender.stoppedAt
            }
            // Before, every poll was answered into the channel's outbound buffer (200,000 answers, without bound) and the
            // connection counted as idle in between: it was never cut as a slow reader.
            #expect(started.duration(to: stopped) < .seconds(15), "closed after \(started.duration(to: stopped))")
            #expect(sender.failed, "every poll was sent: the server kept reading from a client that read nothing")
            #expect(world.metric(#"ferry_desired_state_responses_total{code="304"}"#) < 50_000)
        },
        Case(
            name: "idle connections over the cap are shed, /healthz answers at once",
            limits: limits(header: 60, idle: 60, cap: 10),
            metric: "ferry_connections_shed_total",
            value: 21
        ) { world in
            var junk: [RawConnection] = []
            for index in 0..<30 {
                junk.append(try RawConnection(port: world.port))
                // Admitted one by one (each before the next is opened), so "longest idle" is the order they came in.
                try await eventually("connection \(index + 1) admitted", timeout: .seconds(10), interval: .milliseconds(2)) {
                    world.metric("ferry_connections_accepted_total") >= Double(index + 1) ? true : nil
                }
            }
            let start = ContinuousClock.now
            let health = try RawConnection(port: world.port)
            try health.send(HostileClientWorld.get("/healthz"))
            #expect(try await health.waitForStatus(timeout: .seconds(5)) == 200)
            #expect(ContinuousClock.now - start < .seconds(2))
            // The first 21 junk connections were closed (oldest first), the last 9 still stand with /healthz's. The 21st
            // is shed by /healthz's own admission, on its own event loop: its close can reach this side after the answer.
            _ = try await eventually("the 21 oldest junk connections closed", timeout: .seconds(10)) { () -> Bool? in
                for connection in junk.prefix(21) { connection.poll() }
                return junk.prefix(21).allSatisfy(\.isClosedByPeer) ? true : nil
            }
            for connection in junk.suffix(9) { connection.poll() }
            #expect(junk.suffix(9).allSatisfy { !$0.isClosedByPeer })
            #expect(world.fixture.controller.connections.openCount <= 10)
            #expect(world.metric("ferry_connections_open_count") <= 10)
        },
        Case(
            // An agent polling through the fast path kept the place in the order of shedding it took when it last went
            // through the router: idle connections opened after that were kept, and the agent's connection was shed.
            name: "at the cap, an agent whose polls are answered at once is not shed before connections idle since",
            limits: limits(header: 60, idle: 60, cap: 3),
            metric: "ferry_connections_shed_total",
            value: 1
        ) { world in
            let agent = try await world.agent("polling")
            let polling = try RawConnection(port: world.port)
            try polling.send(HostileClientWorld.get("/v1/agents/\(agent.id)/desired-state", token: agent.token))
            #expect(try await polling.waitForStatus(timeout: .seconds(10)) == 200)
            var junk: [RawConnection] = []
            for index in 0..<2 {
                junk.append(try RawConnection(port: world.port))
                try await eventually("junk connection \(index + 1) admitted", timeout: .seconds(10), interval: .milliseconds(2)) {
                    world.metric("ferry_connections_accepted_total") >= Double(index + 2) ? true : nil
                }
            }
            try polling.send(
                HostileClientWorld.get("/v1/agents/\(agent.id)/desired-state", token: agent.token, headers: ["If-None-Match": agent.etag])
            )
            try await eventually("the poll answered before the HTTP decoder", timeout: .seconds(10), interval: .milliseconds(2)) {
                world.metric("ferry_desired_state_fast_path_answers_total") >= 1 ? true : nil
            }
            let newcomer = try RawConnection(port: world.port)
            _ = try await eventually("the oldest junk connection shed", timeout: .seconds(10)) { () -> Bool? in
                junk[0].poll()
                return junk[0].isClosedByPeer ? true : nil
            }
            polling.poll()
            junk[1].poll()
            newcomer.poll()
            #expect(!polling.isClosedByPeer, "the polling agent's connection was shed")
            #expect(!junk[1].isClosedByPeer && !newcomer.isClosedByPeer)
        },
        Case(
            name: "at the cap with every connection busy (parked long-polls), a new connection is refused",
            limits: limits(cap: 2),
            metric: "ferry_connections_refused_total",
            value: 1
        ) { world in
            // Short waits: a client's connection keeps its slot until its request is answered, even after the client
            // closed its side, so the server's final health check needs these answered.
            let first = try RawConnection(port: world.port)
            try first.send(world.longPoll(try await world.agent("one"), wait: 5))
            let second = try RawConnection(port: world.port)
            try second.send(world.longPoll(try await world.agent("two"), wait: 5))
            try await world.waitForParked(2)
            let third = try RawConnection(port: world.port)
            try? third.send(HostileClientWorld.get("/healthz"))
            #expect(try await third.waitUntilClosed(timeout: .seconds(5)) != nil)
            #expect(third.received.isEmpty)
            // The busy ones were not touched.
            first.poll()
            second.poll()
            #expect(!first.isClosedByPeer && !second.isClosedByPeer)
            #expect(world.hub.waiterCount == 2)
        },
        Case(
            name: "300 long-polls of one agent token leave one parked waiter",
            limits: ConnectionLimits(),
            metric: "ferry_long_poll_waiters",
            value: 1
        ) { world in
            let agent = try await world.agent("greedy")
            var connections: [RawConnection] = []
            for _ in 0..<300 {
                let connection = try RawConnection(port: world.port)
                try connection.send(world.longPoll(agent, wait: 60))
                connections.append(connection)
            }
            // Each new wait answers the one before it with the current state (304): all but one are answered.
            let deadline = ContinuousClock.now + .seconds(60)
            var answered = 0
            while ContinuousClock.now < deadline {
                answered = 0
                for connection in connections {
                    connection.poll()
                    if String(decoding: connection.received, as: UTF8.self).hasPrefix("HTTP/1.1 304") { answered += 1 }
                }
                if answered == 299 { break }
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(answered == 299)
            #expect(world.hub.waiterCount == 1)
            #expect(connections.filter { $0.received.isEmpty }.count == 1)
        },
    ]

    @Test(arguments: cases)
    func hostileClient(_ testCase: Case) async throws {
        let limits = testCase.limits
        func adjust(_ configuration: inout ControllerConfiguration) { configuration.connectionLimits = limits }
        try await ControllerFixture.with(adjust: adjust) { fixture in
            try await fixture.withLiveServer { base in
                guard let port = Int(base.split(separator: ":").last ?? "") else { throw FixtureError("no port in \(base)") }
                let world = HostileClientWorld(fixture: fixture, port: port)
                try await testCase.run(world)
                // Counters are bumped just after the close the client saw: give them a moment.
                let deadline = ContinuousClock.now + .seconds(5)
                while world.metric(testCase.metric) != testCase.value, ContinuousClock.now < deadline {
                    try await Task.sleep(for: .milliseconds(20))
                }
                #expect(world.metric(testCase.metric) == testCase.value, "\(testCase.metric)")
                // Whatever the client did, the server still answers (once the client's own connections are gone).
                var status: Int?
                while status != 200, ContinuousClock.now < deadline + .seconds(5) {
                    let check = try RawConnection(port: port)
                    try? check.send(HostileClientWorld.get("/healthz"))
                    status = try await check.waitForStatus(timeout: .seconds(2))
                }
                #expect(status == 200)
            }
        }
    }

    /// The issue's report, against the built binary: 1,100 idle connections to a server whose open-file limit is 1,024
    /// starved `/healthz`. Now the cap is lowered to fit the limit (with a warning), idle connections are shed past it,
    /// `/healthz` answers, and the cap is logged once, not once per connection.
    @Test func elevenHundredIdleConnectionsUnderA1024FileLimitDoNotStarveHealthz() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-fd-limit") { directory in
            let keyPrefix = directory.appendingPathComponent("operator").path
            let keygen = try await CommandLineEndToEndTests.cli(["keygen", "--out", keyPrefix])
            #expect(keygen.status == 0, "\(keygen.errors)")
            let server = try await ServerProcess(
                arguments: ["--data-dir", directory.appendingPathComponent("data").path, "--trusted-key", keyPrefix + ".pub"],
                logDirectory: directory,
                openFileLimit: 1024
            )
            defer { server.stop() }
            #expect(server.log.contains("the cap is lowered to fit"), "\(server.log)")
            #expect(server.log.contains("ferry.max_connections=768"), "1,024 descriptors less 256 kept for files")
            guard let port = Int(server.baseURL.split(separator: ":").last ?? "") else { throw FixtureError("no port in \(server.baseURL)") }
            var junk: [RawConnection] = []
            for _ in 0..<1100 { junk.append(try RawConnection(port: port)) }
            let health = try RawConnection(port: port)
            try health.send(HostileClientWorld.get("/healthz"))
            #expect(try await health.waitForStatus(timeout: .seconds(10)) == 200, "\(server.log.suffix(2000))")
            let metrics = try RawConnection(port: port)
            try metrics.send(HostileClientWorld.get("/metrics"))
            #expect(try await metrics.waitForStatus(timeout: .seconds(10)) == 200)
            _ = try await metrics.waitUntilClosed(timeout: .milliseconds(500))
            let text = String(decoding: metrics.received, as: UTF8.self)
            let shed = text.split(separator: "\n").first { $0.hasPrefix("ferry_connections_shed_total ") }
            #expect(shed.flatMap { Double($0.split(separator: " ").last ?? "") }.map { $0 >= 300 } == true, "\(shed ?? "no sample")")
            let capLines = server.log.split(separator: "\n").filter { $0.contains("Connection cap reached") }
            #expect(!capLines.isEmpty && capLines.count <= 3, "logged \(capLines.count) times")
            #expect(server.process.isRunning)
        }
    }
}

/// Sends `text` `times` times on its own thread with blocking sends, until done or a send fails (the server closed).
private final class BlockingSender: Sendable {
    private let state = Mutex<(stoppedAt: ContinuousClock.Instant?, failed: Bool)>((nil, false))

    var stoppedAt: ContinuousClock.Instant? { state.withLock { $0.stoppedAt } }
    var failed: Bool { state.withLock { $0.failed } }

    init(_ connection: RawConnection, text: String, times: Int) {
        nonisolated(unsafe) let connection = connection
        let thread = Thread { [self] in
            var failed = false
            for _ in 0..<times {
                do { try connection.send(text) } catch {
                    failed = true
                    break
                }
            }
            self.state.withLock { $0 = (ContinuousClock.now, failed) }
        }
        thread.start()
    }
}
