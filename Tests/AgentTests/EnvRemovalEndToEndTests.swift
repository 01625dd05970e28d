import Foundation
import Shared
import TestSupport
import Testing

/// A variable a new release drops, or one removed from the instance env file (a revoked secret), must be gone from the
/// running process. PM2 merges a reload's env into the one it stored, so under PM2 such an app is started afresh instead
/// of reloaded; the builtin supervisor sets the env whole either way.
@Suite("Env variables removed", .serialized)
struct EnvRemovalEndToEndTests {
    @Test("a variable a release drops or the instance env file loses leaves the process", .timeLimit(.minutes(5)), arguments: Backend.allCases)
    func removedVariablesLeaveTheProcess(backend: Backend) async throws {
        _ = try backend.pm2Binary()
        try await FleetFixture.with { fleet in
            try await fleet.startController()
            let port = try freeLoopbackPort()
            // v1 sets GREETING; the instance env file sets PORT and FAREWELL (printed by nobody, checked in /proc).
            try await fleet.publish(serial: 1, version: "1.0.0", port: 0, appOptions: ["env": .object(["GREETING": .string("one")])])
            let config = try await fleet.enrollAgent(
                name: "edge-1",
                backend: backend,
                instanceEnv: ["PORT": "\(port)", "FAREWELL": "revoked-secret"]
            )
            _ = try fleet.startAgent(config: config, label: "agent")
            try await eventually("v1 serving with GREETING", timeout: .seconds(90)) {
                await fleet.appAnswer(port: port)?.hasPrefix("1.0.0 one ") == true ? true : nil
            }
            #expect(await Self.environment(ofAppOn: port, fleet)?["FAREWELL"] == "revoked-secret")

            // v2 drops GREETING (same script, mode and instances: a reload would do).
            try await fleet.publish(serial: 2, version: "2.0.0", port: 0, appOptions: ["env": .object([:])])
            let answer = try await eventually("v2 serving", timeout: .seconds(90)) { () -> String? in
                guard let answer = await fleet.appAnswer(port: port), answer.hasPrefix("2.0.0") else { return nil }
                return answer
            }
            #expect(answer.hasPrefix("2.0.0  pid="), "GREETING is gone: \(answer)")

            // The instance env file loses FAREWELL: the agent's env refresh must take it out of the process.
            let envFile = fleet.root.appendingPathComponent("edge-1/env/web.env")
            try "PORT=\(port)\n".write(to: envFile, atomically: true, encoding: .utf8)
            try await eventually("FAREWELL gone from the process", timeout: .seconds(90)) { () -> Bool? in
                guard let environment = await Self.environment(ofAppOn: port, fleet) else { return nil }
                return environment["FAREWELL"] == nil && environment["PORT"] == "\(port)" ? true : nil
            }
            #expect(await fleet.appAnswer(port: port)?.hasPrefix("2.0.0  pid=") == true)
        }
    }

    /// The agent ends right after writing the ecosystem file that no longer names a removed secret (as a kill -9 between
    /// that write and the reload ends it): at its restart the file about to be replaced already lacked the secret, so
    /// nothing counted as removed, PM2's reload merged the old env in, and the secret stayed in the process for good,
    /// the state saying the reload worked. What is owed is now kept on disk before that write, and the restarted agent
    /// starts the app afresh.
    @Test("a secret removed just before the agent dies still leaves the process (real PM2)", .timeLimit(.minutes(5)))
    func aRemovalSurvivesADeathBetweenTheWriteAndTheReload() async throws {
        _ = try Backend.pm2.pm2Binary()
        try await FleetFixture.with { fleet in
            try await fleet.startController()
            let port = try freeLoopbackPort()
            try await fleet.publish(serial: 1, version: "1.0.0", port: 0)
            let config = try await fleet.enrollAgent(name: "edge-1", backend: .pm2, instanceEnv: ["PORT": "\(port)", "FAREWELL": "revoked-secret"])
            let first = try fleet.startAgent(config: config, label: "agent")
            try await eventually("v1 serving with FAREWELL", timeout: .seconds(90)) { () -> Bool? in
                await Self.environment(ofAppOn: port, fleet)?["FAREWELL"] == "revoked-secret" ? true : nil
            }
            await first.terminate()

            let envFile = fleet.root.appendingPathComponent("edge-1/env/web.env")
            try "PORT=\(port)\n".write(to: envFile, atomically: true, encoding: .utf8)
            let dying = try fleet.startAgent(config: config, label: "dying", environment: ["FERRY_TEST_EXIT_AFTER_ECOSYSTEM_WRITE": "1"])
            try await eventually("the agent ended after writing the new ecosystem file", timeout: .seconds(60)) { dying.isRunning ? nil : true }
            let ecosystem = try String(contentsOf: fleet.root.appendingPathComponent("edge-1/state/services/web/ecosystem.json"), encoding: .utf8)
            #expect(!ecosystem.contains("FAREWELL"), "the new file was written")
            #expect(await Self.environment(ofAppOn: port, fleet)?["FAREWELL"] == "revoked-secret", "not applied yet")

            _ = try fleet.startAgent(config: config, label: "restarted")
            try await eventually("FAREWELL gone from the process", timeout: .seconds(90)) { () -> Bool? in
                guard let environment = await Self.environment(ofAppOn: port, fleet) else { return nil }
                return environment["FAREWELL"] == nil && environment["PORT"] == "\(port)" ? true : nil
            }
            #expect(!FileManager.default.fileExists(atPath: fleet.root.appendingPathComponent("edge-1/state/services/web/removed.json").path))
        }
    }

    /// The environment of the process answering on `port` (its pid is in its answer), or `nil` when none answers.
    static func environment(ofAppOn port: Int, _ fleet: FleetFixture) async -> [String: String]? {
        guard let answer = await fleet.appAnswer(port: port), let pidText = answer.components(separatedBy: "pid=").last,
            let pid = Int32(pidText), let data = FileManager.default.contents(atPath: "/proc/\(pid)/environ")
        else { return nil }
        var environment: [String: String] = [:]
        for entry in data.split(separator: 0) {
            let text = String(decoding: entry, as: UTF8.self)
            guard let equals = text.firstIndex(of: "=") else { continue }
            environment[String(text[..<equals])] = String(text[text.index(after: equals)...])
        }
        return environment
    }
}
