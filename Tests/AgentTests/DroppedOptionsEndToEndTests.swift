import Foundation
import Shared
import TestSupport
import Testing

/// PM2 options a new release no longer sets must stop applying. PM2's reload merges the new app config into the one
/// it stored and deletes nothing (`Utility.extendMix`), so under PM2 such an app is started afresh instead of reloaded.
@Suite("PM2 options a release drops", .serialized)
struct DroppedOptionsEndToEndTests {
    @Test("max_memory_restart and cron_restart a new release drops are gone from PM2's table", .timeLimit(.minutes(5)))
    func droppedOptionsLeavePM2() async throws {
        _ = try Backend.pm2.pm2Binary()
        try await FleetFixture.with { fleet in
            try await fleet.startController()
            let port = try freeLoopbackPort()
            let options: [String: JSONValue] = ["max_memory_restart": .string("300M"), "cron_restart": .string("0 3 * * *")]
            try await fleet.publish(serial: 1, version: "1.0.0", port: 0, appOptions: options)
            let config = try await fleet.enrollAgent(name: "edge-1", backend: .pm2, instanceEnv: ["PORT": "\(port)"])
            _ = try fleet.startAgent(config: config, label: "agent")
            try await eventually("v1 serving", timeout: .seconds(90)) {
                await fleet.appAnswer(port: port)?.hasPrefix("1.0.0") == true ? true : nil
            }
            let control = try #require(fleet.controls["edge-1"])
            let before = try await Self.pm2Environment(of: "web-app", control)
            #expect(before["max_memory_restart"] != nil)
            #expect(before["cron_restart"] == .string("0 3 * * *"))

            // v2 sets neither (same script, mode and instances: a reload would otherwise do).
            try await fleet.publish(serial: 2, version: "2.0.0", port: 0)
            try await eventually("v2 serving", timeout: .seconds(90)) {
                await fleet.appAnswer(port: port)?.hasPrefix("2.0.0") == true ? true : nil
            }
            let after = try await Self.pm2Environment(of: "web-app", control)
            #expect(after["max_memory_restart"] == nil, "still \(after["max_memory_restart"] ?? .null)")
            #expect(after["cron_restart"] == nil, "still \(after["cron_restart"] ?? .null)")
        }
    }

    /// `pm2_env` of the app's first instance in `pm2 jlist`.
    static func pm2Environment(of app: String, _ control: BackendControl) async throws -> [String: JSONValue] {
        let output = try await control.pm2(["jlist"])
        // A daemon's messages may come before the JSON.
        let json = output.drop { $0 != "[" }
        guard case .array(let processes) = try JSONValue.parse(Array(json.utf8)) else { throw HarnessError("jlist: \(output.prefix(300))") }
        for case .object(let process) in processes {
            guard case .string(app)? = process["name"], case .object(let environment)? = process["pm2_env"] else { continue }
            return environment
        }
        throw HarnessError("no \(app) in jlist")
    }
}
