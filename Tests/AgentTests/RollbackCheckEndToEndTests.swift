import Foundation
import Shared
import TestSupport
import Testing

/// A rollback whose restored release does not come back: the report says the rollback happened, then that the
/// release running again is not healthy either (its own health gate's verdict), instead of leaving "rolled back" and
/// the table's `online` as the last word. Once the restored release boots again, the service is healthy.
@Suite("Rollback check end to end", .serialized)
struct RollbackCheckEndToEndTests {
    @Test("a rollback to a release that no longer starts is reported as such", .timeLimit(.minutes(5)), arguments: Backend.allCases)
    func restoredReleaseNotHealthy(backend: Backend) async throws {
        _ = try backend.pm2Binary()
        try await FleetFixture.with { fleet in try await run(fleet, backend: backend) }
    }

    private func run(_ fleet: FleetFixture, backend: Backend) async throws {
        try await fleet.startController()
        let port = try freeLoopbackPort()
        let trigger = fleet.root.appendingPathComponent("v1-broken").path
        try await fleet.publish(serial: 1, version: "1.0.0", port: port, crashWhen: trigger)
        let config = try await fleet.enrollAgent(name: "edge-1", longPollSeconds: 2, backend: backend)
        _ = try fleet.startAgent(config: config, label: "agent")
        try await fleet.waitUntilRunning("1.0.0", port: port, agent: "edge-1")

        // v1 runs, but would not start again (its dependency went away); v2 crashes at boot, so the agent rolls back
        // to v1, which crashes at boot too.
        #expect(FileManager.default.createFile(atPath: trigger, contents: Data()))
        try await fleet.publish(serial: 2, version: "2.0.0", port: port, crash: true)
        let entry = try await eventually("the fleet shows v1 not healthy either", timeout: .seconds(120), interval: .milliseconds(500)) {
            () -> JSONValue? in
            let entry = try await fleet.fleetEntry(agent: "edge-1")
            return (entry?["message"]?.stringValue ?? "").contains("; serial 1 is not healthy either: ") ? entry : nil
        }
        let message = entry["message"]?.stringValue ?? ""
        #expect(message.hasPrefix("serial 2 (2.0.0) failed and was rolled back to serial 1 (1.0.0): "), "\(message)")
        #expect(entry["phase"]?.stringValue == "rolled-back")
        #expect(entry["health"]?.stringValue == "unhealthy")
        #expect(entry["serial"]?.intValue == 1)
        #expect(!message.contains("is healthy again"), "\(message)")

        // v1's dependency is back: the drift repair starts it again, and the service is healthy.
        try FileManager.default.removeItem(atPath: trigger)
        try await eventually("v1 serving again", timeout: .seconds(120)) {
            await fleet.appAnswer(port: port)?.hasPrefix("1.0.0") == true ? true : nil
        }
        try await eventually("the fleet shows web healthy", timeout: .seconds(60)) {
            try await fleet.fleetEntry(agent: "edge-1")?["health"]?.stringValue == "healthy" ? true : nil
        }
    }
}
