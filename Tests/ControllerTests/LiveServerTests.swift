import Foundation
import Shared
import Synchronization
import Testing

@testable import Controller

/// Every route group once over real sockets on 127.0.0.1 (port 0), plus long-polling at scale and shutdown.
@Suite struct LiveServerTests {
    typealias Fixture = ControllerFixture

    @Test func operationsFleetAndDashboardOverSockets() async throws {
        try await Fixture.with { fixture in
            try await fixture.withLiveServer { base in
                let http = LiveHTTP()
                let health = try await http.send("GET", base + "/healthz")
                #expect(health.status == 200)
                let metrics = try await http.send("GET", base + "/metrics")
                #expect(metrics.status == 200)
                #expect(String(decoding: metrics.body, as: UTF8.self).contains("ferry_long_poll_waiters"))
                let fleet = try await http.send("GET", base + "/v1/fleet", token: fixture.viewerToken)
                #expect(fleet.status == 200)
                #expect(FleetDocument.agents(try JSONValue.parse(fleet.body)).isEmpty)
                let login = "Basic " + Data("me:\(fixture.viewerToken)".utf8).base64EncodedString()
                let page = try await http.send("GET", base + "/", headers: ["Authorization": login])
                #expect(page.status == 200)
                #expect(String(decoding: page.body, as: UTF8.self).contains("No agent has enrolled yet."))
                let denied = try await http.send("GET", base + "/v1/fleet")
                #expect(denied.status == 401)
                #expect(denied.header("WWW-Authenticate")?.hasPrefix("Bearer") == true)
            }
        }
    }

    /// A controller that cannot listen (its port is another controller's) ends `withLiveServer` with its error, at
    /// once: the fixture used to wait for a port that would never be reported, and hung the test run.
    @Test(.timeLimit(.minutes(1))) func aServerThatCannotListenEndsTheTest() async throws {
        try await Fixture.with { first in
            try await first.withLiveServer { base in
                let port = try #require(Int(base.split(separator: ":").last ?? ""))
                try await Fixture.with(adjust: { $0.port = port }) { second in
                    let started = ContinuousClock.now
                    let error = await #expect(throws: FixtureError.self) {
                        try await second.withLiveServer { _ in Issue.record("a second server listened on port \(port)") }
                    }
                    #expect("\(error.map { "\($0)" } ?? "")".contains("stopped before it reported its port"))
                    #expect(ContinuousClock.now - started < .seconds(30))
                }
                // The first one still answers.
                #expect(try await LiveHTTP().send("GET", base + "/healthz").status == 200)
            }
        }
    }

    @Test func artifactsStreamUpAndDownOverSockets() async throws {
        try await Fixture.with { fixture in
            try await fixture.withLiveServer { base in
                // 5 MiB of varied bytes from a file, uploaded the way `publish` does it.
                var bytes = [UInt8](repeating: 0, count: 5 << 20)
                var generator = SystemRandomNumberGenerator()
                for index in stride(from: 0, to: bytes.count, by: 8) {
                    withUnsafeBytes(of: generator.next()) { random in
                        for offset in 0..<8 where index + offset < bytes.count { bytes[index + offset] = random[offset] }
                    }
                }
                let file = fixture.directory.appendingPathComponent("upload.bin")
                try Data(bytes).write(to: file)
                let (digest, size) = try SHA256.hash(fileAt: file.path)
                let client = OperatorClient(baseURL: base, token: fixture.operatorToken)
                #expect(try await client.hasArtifact(digest) == false)
                let reported = Mutex<Int64>(0)
                let answer = try await client.uploadArtifact(file: file.path, digest: digest, size: size) { sent in
                    reported.withLock { $0 = max($0, sent) }
                }
                #expect(answer.object?["sha256"] == .string(digest.hex))
                #expect(answer.object?["size"] == .integer(size))
                #expect(try await client.hasArtifact(digest))
                #expect(try SHA256.hash(fileAt: fixture.controller.core.artifacts.path(for: digest)).digest == digest)

                let http = LiveHTTP()
                let range = try await http.send(
                    "GET",
                    base + "/v1/artifacts/\(digest.hex)",
                    token: fixture.operatorToken,
                    headers: ["Range": "bytes=1048576-1048585"]
                )
                #expect(range.status == 206)
                #expect(Array(range.body) == Array(bytes[1_048_576...1_048_585]))
                let whole = try await http.send("GET", base + "/v1/artifacts/\(digest.hex)", token: fixture.operatorToken)
                #expect(whole.status == 200)
                #expect(SHA256.hash(Array(whole.body)) == digest)
            }
        }
    }

    @Test func publishingAndListingOverSockets() async throws {
        try await Fixture.with { fixture in
            try await fixture.withLiveServer { base in
                let client = OperatorClient(baseURL: base, token: fixture.operatorToken)
                let file = fixture.directory.appendingPathComponent("a.tgz")
                try Data("artifact".utf8).write(to: file)
                let (digest, size) = try SHA256.hash(fileAt: file.path)
                _ = try await client.uploadArtifact(file: file.path, digest: digest, size: size) { _ in }
                let publisher = ReleasePublisher(client: client)
                #expect(try await publisher.nextSerial(of: "api") == 1)
                let artifact = ArtifactReference(url: ArtifactReference.controllerPath(for: digest), sha256: digest, size: size)
                let answer = try await publisher.publish(Fixture.release(serial: 1, artifact: artifact), keys: [fixture.signingKey])
                #expect(answer.object?["serial"] == .integer(1))
                #expect(try await publisher.nextSerial(of: "api") == 2)
                // Another release under serial 1 (the same one again would be a repeat, answered with the stored one).
                var other = Fixture.release(serial: 1, artifact: artifact)
                other.version = "1.0.1"
                await #expect(throws: CLIError.self) {
                    _ = try await publisher.publish(other, keys: [fixture.signingKey])
                }
                let services = try await client.getJSON("/v1/services")
                #expect(FleetDocument.array(services.object?["services"]).count == 1)
            }
        }
    }

    @Test func agentsEnrollPollAndReportOverSockets() async throws {
        try await Fixture.with { fixture in
            try await fixture.withLiveServer { base in
                let http = LiveHTTP()
                let enrolled = try await http.send(
                    "POST",
                    base + "/v1/agents",
                    token: fixture.enrollToken,
                    body: EnrollRequest(name: "web-1", hostname: "web-1", services: ["api"]).json.encoded()
                )
                #expect(enrolled.status == 201)
                let agent = try EnrollResponse(json: JSONValue.parse(enrolled.body))
                let url = base + "/v1/agents/\(agent.agentID)/desired-state"
                let first = try await http.send("GET", url, token: agent.token)
                #expect(first.status == 200)
                let tag = try #require(first.header("ETag"))
                let again = try await http.send("GET", url, token: agent.token, headers: ["If-None-Match": tag])
                #expect(again.status == 304)
                // A short long-poll with nothing published ends after its wait with 304.
                let started = ContinuousClock.now
                let waited = try await http.send("GET", url + "?wait=1", token: agent.token, headers: ["If-None-Match": tag])
                #expect(waited.status == 304)
                #expect(ContinuousClock.now - started >= .milliseconds(900))

                let report = StatusReport(
                    agentVersion: "0.1.0",
                    hostname: "web-1",
                    processManager: "builtin",
                    services: [
                        ServiceStatus(
                            service: "api",
                            serial: nil,
                            version: nil,
                            targetSerial: nil,
                            phase: .waiting,
                            message: "no release yet",
                            health: .unknown,
                            processes: []
                        )
                    ]
                )
                let posted = try await http.send("POST", base + "/v1/agents/\(agent.agentID)/status", token: agent.token, body: report.json.encoded())
                #expect(posted.status == 204)
                let stored = try await fixture.store.serviceStatuses()
                #expect(stored.map(\.status.phase) == [.waiting])
            }
        }
    }

    /// 200 agents park a long-poll each; one publish must answer all of them with their new state.
    @Test func twoHundredLongPollsAreAllAnsweredByOnePublish() async throws {
        try await Fixture.with { fixture in
            let waiters = 200
            var agents: [(id: String, token: String)] = []
            for index in 0..<waiters {
                let token = Token.generate()
                let agent = try await fixture.store.enrollAgent(
                    proposedID: "agt_\(String(format: "%016x", index))",
                    name: "node-\(index)",
                    hostname: "node-\(index)",
                    services: ["api"],
                    tokenHash: Token.digest(token),
                    at: Date()
                )
                agents.append((agent.id, token))
            }
            let pinned = agents
            try await fixture.withLiveServer { base in
                let http = LiveHTTP(maximumConnections: waiters + 16, timeout: 120)
                var tags: [String] = []
                for agent in pinned {
                    let response = try await http.send("GET", base + "/v1/agents/\(agent.id)/desired-state", token: agent.token)
                    tags.append(try #require(response.header("ETag")))
                }
                let oldTags = tags
                let hub = fixture.controller.core.desiredStates.hub
                let published = Mutex<ContinuousClock.Instant?>(nil)
                let results = try await withThrowingTaskGroup(of: (Int, LiveHTTP.Response, ContinuousClock.Instant).self) { group in
                    for (index, agent) in pinned.enumerated() {
                        group.addTask {
                            let response = try await http.send(
                                "GET",
                                base + "/v1/agents/\(agent.id)/desired-state?wait=60",
                                token: agent.token,
                                headers: ["If-None-Match": oldTags[index]]
                            )
                            return (index, response, ContinuousClock.now)
                        }
                    }
                    // Wait (with a deadline, not a sleep) until every request is parked, then publish once.
                    let deadline = ContinuousClock.now + .seconds(60)
                    while hub.waiterCount < waiters {
                        guard ContinuousClock.now < deadline else { throw FixtureError("only \(hub.waiterCount) of \(waiters) requests parked") }
                        try await Task.sleep(for: .milliseconds(20))
                    }
                    let client = OperatorClient(baseURL: base, token: fixture.operatorToken)
                    let file = fixture.directory.appendingPathComponent("a.tgz")
                    try Data("new release".utf8).write(to: file)
                    let (digest, size) = try SHA256.hash(fileAt: file.path)
                    _ = try await client.uploadArtifact(file: file.path, digest: digest, size: size) { _ in }
                    let artifact = ArtifactReference(url: ArtifactReference.controllerPath(for: digest), sha256: digest, size: size)
                    let release = Fixture.release(serial: 1, artifact: artifact)
                    _ = try await ReleasePublisher(client: client).publish(release, keys: [fixture.signingKey])
                    published.withLock { $0 = ContinuousClock.now }
                    var results: [(Int, LiveHTTP.Response, ContinuousClock.Instant)] = []
                    for try await result in group { results.append(result) }
                    return results
                }
                let publishedAt = try #require(published.withLock { $0 })
                #expect(results.count == waiters)
                #expect(results.allSatisfy { $0.1.status == 200 })
                for (index, response, _) in results {
                    let newTag = try #require(response.header("ETag"))
                    #expect(newTag != oldTags[index])
                    let state = try DesiredState(json: JSONValue.parse(response.body))
                    #expect(state.agentID == pinned[index].id)
                    #expect(state.releases.count == 1)
                }
                // How long after the publish returned each waiter had its answer (negative: before the client saw
                // the publish's own response).
                let delays = results.map { ($0.2 - publishedAt) / .milliseconds(1) }.sorted()
                let spread = (delays.last ?? 0) - (delays.first ?? 0)
                print(
                    "long-poll: \(results.count)/\(waiters) waiters got the new ETag; first \(String(format: "%.1f", delays.first ?? 0)) ms, "
                        + "median \(String(format: "%.1f", delays[delays.count / 2])) ms, last \(String(format: "%.1f", delays.last ?? 0)) ms "
                        + "after the publish returned; spread \(String(format: "%.1f", spread)) ms"
                )
                #expect(hub.waiterCount == 0)
            }
        }
    }

    /// SIGTERM's graceful shutdown answers parked long-polls at once (with the unchanged state) instead of waiting
    /// out their `wait`.
    @Test func gracefulShutdownAnswersParkedLongPolls() async throws {
        try await Fixture.with { fixture in
            // Twenty agents, one parked long-poll each (an agent has at most one: a second would answer the first).
            var agents: [(id: String, token: String)] = []
            for index in 0..<20 {
                let token = Token.generate()
                let agent = try await fixture.store.enrollAgent(
                    proposedID: "agt_\(String(format: "%016x", index + 1))",
                    name: "web-\(index + 1)",
                    hostname: "web-\(index + 1)",
                    services: ["api"],
                    tokenHash: Token.digest(token),
                    at: Date()
                )
                agents.append((agent.id, token))
            }
            let pinned = agents
            let group = fixture.controller.serviceGroup(handlingSignals: false)
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await group.run() }
                var ports = fixture.ports.makeAsyncIterator()
                guard let port = await ports.next() else { throw FixtureError("no port") }
                let http = LiveHTTP(maximumConnections: 32)
                var tags: [String] = []
                for agent in pinned {
                    let url = "http://127.0.0.1:\(port)/v1/agents/\(agent.id)/desired-state"
                    tags.append(try #require(try await http.send("GET", url, token: agent.token).header("ETag")))
                }
                let pinnedTags = tags
                let hub = fixture.controller.core.desiredStates.hub
                let started = ContinuousClock.now
                let answers = try await withThrowingTaskGroup(of: Int.self) { waiters in
                    for (index, agent) in pinned.enumerated() {
                        let url = "http://127.0.0.1:\(port)/v1/agents/\(agent.id)/desired-state?wait=60"
                        waiters.addTask { try await http.send("GET", url, token: agent.token, headers: ["If-None-Match": pinnedTags[index]]).status }
                    }
                    let deadline = ContinuousClock.now + .seconds(30)
                    while hub.waiterCount < 20 {
                        guard ContinuousClock.now < deadline else { throw FixtureError("waiters did not park") }
                        try await Task.sleep(for: .milliseconds(20))
                    }
                    await group.triggerGracefulShutdown()
                    var statuses: [Int] = []
                    for try await status in waiters { statuses.append(status) }
                    return statuses
                }
                try await tasks.waitForAll()
                #expect(answers == Array(repeating: 304, count: 20))
                #expect(ContinuousClock.now - started < .seconds(20))
                #expect(hub.isShutDown)
            }
        }
    }
}
