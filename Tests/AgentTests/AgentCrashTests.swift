import Foundation
import Shared
import TestSupport
import Testing

/// kill -9 of the agent in the middle of an install, then a restart: the instance converges and a partial release
/// is never `current`. The agent pauses at a test-only point (an environment variable) so the kill lands there.
@Suite("Agent crash safety", .serialized)
struct AgentCrashTests {
    enum Step: String, CaseIterable, Sendable {
        case download = "FERRY_TEST_PAUSE_AFTER_BYTES"
        case extraction = "FERRY_TEST_PAUSE_AFTER_ENTRIES"
    }

    @Test(.timeLimit(.minutes(4)), arguments: Step.allCases)
    func killDashNineDuringAnInstallThenRestartConverges(_ step: Step) async throws {
        try await FleetFixture.with { fleet in try await run(fleet, step: step) }
    }

    /// kill -9 of the agent after a release's verdict, in the middle of its rollback: the restarted agent finishes the
    /// rollback and records the failure. It installed the failed serial again (a broken release reloaded into production
    /// and a whole gate deadline more), because nothing of the verdict had been saved.
    @Test(.timeLimit(.minutes(4)), arguments: Backend.allCases)
    func killDashNineDuringARollbackKeepsTheVerdict(backend: Backend) async throws {
        _ = try backend.pm2Binary()
        try await FleetFixture.with { fleet in
            try await fleet.startController()
            let port = try freeLoopbackPort()
            try await fleet.publish(serial: 1, version: "1.0.0", port: port)
            let config = try await fleet.enrollAgent(name: "crashy", backend: backend)
            let stateFile = URL(fileURLWithPath: config).deletingLastPathComponent().appendingPathComponent("state/state.json").path
            let first = try fleet.startAgent(config: config, label: "agent-1")
            try await eventually("v1 applied (through its gate)") { () -> Bool? in
                let entry = try await fleet.fleetEntry(agent: "crashy")
                return entry?["serial"]?.intValue == 1 && entry?["phase"]?.stringValue == "running" ? true : nil
            }
            await first.terminate()

            try await fleet.publish(serial: 2, version: "2.0.0", port: port, crash: true, deadline: 3)
            let pausing = try fleet.startAgent(config: config, label: "agent-2", environment: ["FERRY_TEST_PAUSE_BEFORE_ROLLBACK": "1"])
            try await eventually("serial 2's verdict saved", timeout: .seconds(60)) {
                ((try? String(contentsOfFile: stateFile, encoding: .utf8)) ?? "").contains("\"pendingVerdict\"") ? true : nil
            }
            pausing.kill()

            let restarted = try fleet.startAgent(config: config, label: "agent-3")
            try await eventually("v1 serving again, serial 2 rolled back", timeout: .seconds(60)) { () -> Bool? in
                let entry = try await fleet.fleetEntry(agent: "crashy")
                guard await fleet.appAnswer(port: port)?.hasPrefix("1.0.0") == true, entry?["serial"]?.intValue == 1,
                    entry?["phase"]?.stringValue == "rolled-back"
                else { return nil }
                return true
            }
            // A few passes more: serial 2 is not installed again.
            try await Task.sleep(for: .seconds(3))
            await restarted.terminate()
            let log = (try? String(contentsOf: fleet.root.appendingPathComponent("logs/agent-3.err"), encoding: .utf8)) ?? ""
            #expect(!log.contains("installing release"), "serial 2 was installed again after the restart")
            let state = (try? String(contentsOfFile: stateFile, encoding: .utf8)) ?? ""
            #expect(!state.contains("\"pendingVerdict\""))
        }
    }

    private func run(_ fleet: FleetFixture, step: Step) async throws {
        try await fleet.startController()
        let port = try freeLoopbackPort()
        try await fleet.publish(serial: 1, version: "1.0.0", port: port)
        let config = try await fleet.enrollAgent(name: "crashy")
        let state = URL(fileURLWithPath: config).deletingLastPathComponent().appendingPathComponent("state")
        let releases = state.appendingPathComponent("services/web/releases")
        let first = try fleet.startAgent(config: config, label: "agent-1")
        try await eventually("v1 serving") { await fleet.appAnswer(port: port)?.hasPrefix("1.0.0") == true ? true : nil }
        await first.terminate()

        // v2 is big enough to be caught mid-way: 4 MiB of random bytes plus 200 small files.
        let v2 = try await fleet.publish(serial: 2, version: "2.0.0", port: port, padding: 4 << 20)
        let digest = try Release.decode(v2.payload).artifact.sha256.hex
        let pausing = try fleet.startAgent(config: config, label: "agent-2", environment: [step.rawValue: step == .download ? "1048576" : "50"])
        switch step {
        case .download:
            let part = state.appendingPathComponent("artifacts/\(digest).part").path
            try await eventually("a partial download") { () -> Bool? in
                let size = (try? FileManager.default.attributesOfItem(atPath: part)[.size] as? Int) ?? 0
                return size >= 1 << 20 ? true : nil
            }
        case .extraction:
            try await eventually("a staging directory") { () -> Bool? in
                let names = (try? FileManager.default.contentsOfDirectory(atPath: releases.path)) ?? []
                return names.contains { $0.contains(".staging-") } ? true : nil
            }
        }
        pausing.kill()

        // Nothing half-installed is current; v1 keeps serving.
        let current = try FileManager.default.destinationOfSymbolicLink(atPath: state.appendingPathComponent("services/web/current").path)
        #expect(current.hasPrefix("releases/1-"), "current points at \(current)")
        #expect(await fleet.appAnswer(port: port)?.hasPrefix("1.0.0") == true)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: releases.path)
        #expect(!leftovers.contains { $0.hasPrefix("2-") && !$0.contains(".staging-") }, "no finished v2 tree yet: \(leftovers)")

        // Restart without the pause: converges to v2, and the leftovers are gone.
        _ = try fleet.startAgent(config: config, label: "agent-3")
        try await eventually("v2 serving after the restart") { await fleet.appAnswer(port: port)?.hasPrefix("2.0.0") == true ? true : nil }
        try await eventually("v2 recorded as applied") {
            try await fleet.fleetEntry(agent: "crashy")?["serial"]?.intValue == 2 ? true : nil
        }
        let after = try FileManager.default.contentsOfDirectory(atPath: releases.path)
        #expect(!after.contains { $0.contains(".staging-") }, "staging leftovers removed: \(after)")
        #expect(!FileManager.default.fileExists(atPath: state.appendingPathComponent("artifacts/\(digest).part").path))
        let log = (try? String(contentsOf: fleet.root.appendingPathComponent("logs/agent-3.err"), encoding: .utf8)) ?? ""
        if step == .download {
            #expect(log.contains("artifact.resume_from=") && !log.contains("artifact.resume_from=0 "), "the download resumed")
        }
    }
}
