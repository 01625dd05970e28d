import Foundation
import Shared
import TestSupport
import Testing

@testable import Agent

/// A deploy while requests keep coming: in cluster mode under PM2 not one request fails (PM2 replaces the workers one
/// by one behind the port the cluster master holds); in fork mode the reload is a restart, under either process
/// manager: a new process, one more restart, and possibly a short gap, which is what docs/pm2.md promises.
///
/// The builtin supervisor has no cluster master to share one port between instances (see `Supervisor`), so the
/// zero-downtime case runs under PM2 only; the fork-mode case runs under both.
@Suite("Reload under load end to end", .serialized)
struct ReloadUnderLoadEndToEndTests {
    static let cases: [(Backend, ExecMode)] = [(.pm2, .cluster), (.pm2, .fork), (.builtin, .fork)]

    @Test("a deploy under load", .timeLimit(.minutes(5)), arguments: cases)
    func deployUnderLoad(backend: Backend, mode: ExecMode) async throws {
        _ = try backend.pm2Binary()
        try await FleetFixture.with { fleet in try await run(fleet, backend: backend, mode: mode) }
    }

    private func run(_ fleet: FleetFixture, backend: Backend, mode: ExecMode) async throws {
        try await fleet.startController()
        let port = try freeLoopbackPort()
        let options: [String: JSONValue] =
            mode == .cluster ? ["exec_mode": .string("cluster"), "instances": .integer(2)] : ["exec_mode": .string("fork")]
        try await fleet.publish(serial: 1, version: "1.0.0", port: port, appOptions: options)
        let config = try await fleet.enrollAgent(name: "edge-1", backend: backend)
        _ = try fleet.startAgent(config: config, label: "agent")
        let control = try #require(fleet.controls["edge-1"])
        try await eventually("v1 running", timeout: .seconds(90)) { () -> Bool? in
            let entry = try await fleet.fleetEntry(agent: "edge-1")
            return entry?["phase"]?.stringValue == "running" && entry?["serial"]?.intValue == 1 ? true : nil
        }
        let before = try await control.table()
        #expect(before.count == (mode == .cluster ? 2 : 1) && before.allSatisfy { $0.execMode == mode })

        let load = LoadGenerator(port: port)
        let loading = Task { await load.run() }
        try await Task.sleep(for: .milliseconds(500))
        try await fleet.publish(serial: 2, version: "2.0.0", port: port, appOptions: options)
        try await eventually("v2 running", timeout: .seconds(90)) { () -> Bool? in
            let entry = try await fleet.fleetEntry(agent: "edge-1")
            return entry?["phase"]?.stringValue == "running" && entry?["serial"]?.intValue == 2 ? true : nil
        }
        try await Task.sleep(for: .milliseconds(500))
        await load.stop()
        let result = await loading.value

        #expect(result.answers["2.0.0", default: 0] > 0, "the new release answered under load: \(result)")
        #expect(result.total >= 100, "enough requests to mean something: \(result)")
        let after = try await control.table()
        #expect(after.count == before.count)
        #expect(Set(after.compactMap(\.pid)).isDisjoint(with: before.compactMap(\.pid)), "every instance was replaced")
        switch mode {
        case .cluster:
            #expect(result.failures == 0, "a cluster reload loses no request: \(result)")
        case .fork:
            // Honest: a fork-mode reload is a restart of the one process.
            #expect(after.allSatisfy { $0.restarts >= 1 }, "the fork-mode reload counts as a restart: \(after.map(\.restarts))")
        }
        print("[\(backend.testDescription), \(mode.rawValue) mode] \(result)")
    }
}

/// Sends GET / one after the other until stopped, counting answers by version and failures.
actor LoadGenerator {
    struct Result: Sendable, CustomStringConvertible {
        enum Outcome: Sendable {
            case answer(String)
            case failure(String)
        }

        var total = 0
        var failures = 0
        var answers: [String: Int] = [:]
        var firstFailure: String?
        var description: String {
            "\(total) requests, \(failures) failed\(firstFailure.map { " (first: \($0))" } ?? ""), answers \(answers.sorted { $0.key < $1.key })"
        }
    }

    let port: Int
    private var stopped = false
    private var result = Result()

    init(port: Int) { self.port = port }

    func stop() { stopped = true }

    /// Sends from `concurrency` loops at once (a loaded test machine still produces enough requests) until stopped.
    func run(concurrency: Int = 4) async -> Result {
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<concurrency {
                group.addTask { await self.loop() }
            }
        }
        return result
    }

    private func loop() async {
        let client = HTTPClient()
        while !stopped {
            let outcome: Result.Outcome
            do {
                let response = try await client.send(HTTPClient.Request(url: "http://127.0.0.1:\(port)/", timeout: .seconds(5)))
                guard response.isSuccess else { throw HarnessError("HTTP \(response.status)") }
                outcome = .answer(String(decoding: response.body, as: UTF8.self).split(separator: " ").first.map(String.init) ?? "?")
            } catch {
                outcome = .failure("\(error)")
            }
            record(outcome)
        }
    }

    private func record(_ outcome: Result.Outcome) {
        result.total += 1
        switch outcome {
        case .answer(let version):
            result.answers[version, default: 0] += 1
        case .failure(let reason):
            result.failures += 1
            if result.firstFailure == nil { result.firstFailure = reason }
        }
    }
}
