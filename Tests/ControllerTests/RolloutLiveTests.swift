import Dispatch
import Foundation
import Logging
import ServiceLifecycle
import Shared
import Synchronization
import TestSupport
import Testing

@testable import Controller

/// The rollout machinery as `serve` runs it: the whole service group on a loopback port (the timer service included),
/// real HTTP, long-polls, and the `ferry-controller rollout` binary.
@Suite struct RolloutLiveTests {
    @Test func timerAdvancesWavesWakesLongPollsAndTheCLIShowsIt() async throws {
        try await RolloutHarness.with { harness in
            var configuration = harness.configuration
            configuration.port = 0
            let port = BoundPort()
            let app = try makeApplication(
                configuration: configuration,
                store: harness.store,
                logger: RolloutHarness.logger,
                onServerRunning: { bound in port.value.withLock { $0 = bound } }
            )
            let group = app.serviceGroup(handlingSignals: false)
            async let running: Void = group.run()
            do {
                let base = try await Self.waitForPort(port)
                try await Self.exercise(base: base, harness: harness)
            } catch {
                await group.triggerGracefulShutdown()
                try? await running
                throw error
            }
            await group.triggerGracefulShutdown()
            try await running
        }
    }

    /// The port the server reports once listening.
    private final class BoundPort: Sendable {
        let value = Mutex<Int?>(nil)
    }

    private static func waitForPort(_ port: BoundPort) async throws -> String {
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            if let bound = port.value.withLock({ $0 }) { return "http://127.0.0.1:\(bound)" }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw RolloutTestError("the server did not start listening within 30 s")
    }

    private static func exercise(base: String, harness: RolloutHarness) async throws {
        let http = HTTPClient()
        func send(
            _ method: HTTPClient.Request.Method,
            _ path: String,
            token: String,
            body: [UInt8]? = nil,
            headers: HTTPClient.Headers = [:]
        )
            async throws -> HTTPClient.Response
        {
            var request = HTTPClient.Request(method: method, url: base + path, headers: headers, body: body, timeout: .seconds(30))
            request.setBearerToken(token)
            return try await http.send(request)
        }
        func enroll(_ name: String) async throws -> RolloutAgent {
            let body = Array(EnrollRequest(name: name, hostname: name, services: ["web"]).json.encoded())
            let answer = try EnrollResponse(json: JSONValue.parse(try await send(.post, "/v1/agents", token: harness.enrollToken, body: body).body))
            return RolloutAgent(id: answer.agentID, name: name, token: answer.token)
        }
        func publish(_ serial: Int64, query: String = "") async throws {
            let envelope = try harness.envelope(serial: serial, version: "\(serial).0.0")
            let response = try await send(.post, "/v1/releases" + query, token: harness.operatorToken, body: Array(envelope.encoded()))
            #expect(response.status == 201, "\(String(decoding: response.body, as: UTF8.self))")
        }
        let a = try await enroll("a")
        let b = try await enroll("b")
        try await publish(1)
        try await publish(2, query: "?strategy=waves:50,100&waveStableSeconds=1")

        // b holds the stable serial and long-polls for a change.
        let first = try await send(.get, "/v1/agents/\(b.id)/desired-state", token: b.token)
        let etag = try #require(first.headers["ETag"])
        #expect(try Self.serial(in: first) == 1)

        let report = StatusReport(
            agentVersion: "test",
            hostname: "a",
            processManager: "builtin",
            services: [
                ServiceStatus(
                    service: "web",
                    serial: 2,
                    version: "2.0.0",
                    targetSerial: 2,
                    phase: .running,
                    message: "healthy",
                    health: .healthy,
                    processes: []
                )
            ]
        )
        let started = ContinuousClock.now
        #expect(try await send(.post, "/v1/agents/\(a.id)/status", token: a.token, body: Array(report.json.encoded())).status == 204)
        // No further report and no manual evaluation: the timer service reaches wave 2 after a second, which must
        // answer b's parked request well before its 20 s wait ends.
        let woken = try await send(.get, "/v1/agents/\(b.id)/desired-state?wait=20", token: b.token, headers: ["If-None-Match": etag])
        #expect(woken.status == 200)
        #expect(try Self.serial(in: woken) == 2)
        #expect(ContinuousClock.now - started < .seconds(15))

        // The operator CLI, as a real process, sees the same rollout.
        let result = try await Command.run(
            TestPaths.executable("ferry-controller"),
            ["rollout", "status", "--service", "web"],
            environment: ["FERRY_CONTROLLER_URL": base, "FERRY_TOKEN": harness.viewerToken]
        )
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("web: serial 2 (2.0.0) rolling, wave 2/2, strategy waves:50,100, stable serial 1"), "\(result.stdout)")
        #expect(result.stdout.contains("wave 1 [reached]: a healthy (serial 2)"), "\(result.stdout)")

        let paused = try await Command.run(
            TestPaths.executable("ferry-controller"),
            ["rollout", "pause", "--service", "web", "--controller", base, "--token", harness.operatorToken, "--json"],
            environment: [:]
        )
        #expect(paused.status == 0, "\(paused.stderr)")
        #expect(try RolloutDoc(JSONValue.parse(Array(paused.stdout.utf8)))["state"].string == "paused")

        let refused = try await Command.run(
            TestPaths.executable("ferry-controller"),
            ["rollout", "pause", "--service", "web", "--controller", base, "--token", harness.viewerToken],
            environment: [:]
        )
        #expect(refused.status != 0)
        #expect(refused.stderr.contains("403 forbidden: this needs a token with role operator"), "\(refused.stderr)")
    }

    private static func serial(in response: HTTPClient.Response) throws -> Int64? {
        let state = try DesiredState(json: JSONValue.parse(response.body))
        return try state.releases.map { try Release.decode($0.payload).serial }.first
    }

}
