import Foundation
import Hummingbird
import Shared
import Synchronization
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

    /// The restored release's processes stay online while its HTTP check answers 500: the gate's verdict
    /// (`unhealthy`) stands, instead of the pass's look at the table making it `healthy` in the same report.
    @Test("a restored release that is online but answers 500 stays unhealthy", .timeLimit(.minutes(3)))
    func restoredReleaseOnlineButFailing() async throws {
        let status = Atomic<Int>(200)
        let router = Router()
        router.get("/health") { _, _ -> Response in Response(status: .init(code: status.load(ordering: .relaxed))) }
        let standInPort = Mutex(0)
        let started: @Sendable (Int) -> Void = { port in standInPort.withLock { $0 = port } }
        let closing: @Sendable () -> Void = {}
        try await LoopbackServer.with(router: router, label: "health", started: started, closing: closing) {
            try await FleetFixture.with { fleet in
                try await fleet.startController()
                let port = try freeLoopbackPort()
                let health = "http://127.0.0.1:\(standInPort.withLock { $0 })/health"
                try await fleet.publish(serial: 1, version: "1.0.0", port: port, healthURL: health, deadline: 8)
                let config = try await fleet.enrollAgent(name: "edge-1", longPollSeconds: 2)
                _ = try fleet.startAgent(config: config, label: "agent")
                try await fleet.waitUntilRunning("1.0.0", port: port, agent: "edge-1")

                status.store(500, ordering: .relaxed)
                try await fleet.publish(serial: 2, version: "2.0.0", port: port, healthURL: health, deadline: 5)
                let entry = try await eventually("v1 not healthy either", timeout: .seconds(90), interval: .milliseconds(250)) { () -> JSONValue? in
                    let entry = try await fleet.fleetEntry(agent: "edge-1")
                    return (entry?["message"]?.stringValue ?? "").contains("; serial 1 is not healthy either: ") ? entry : nil
                }
                #expect(entry["health"]?.stringValue == "unhealthy", "\(entry)")
                #expect(entry["phase"]?.stringValue == "rolled-back")
                // Later passes look at the same online processes: the verdict still stands.
                try await Task.sleep(for: .seconds(6))
                #expect(try await fleet.fleetEntry(agent: "edge-1")?["health"]?.stringValue == "unhealthy")
            }
        }
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
        let v2 = try await fleet.publish(serial: 2, version: "2.0.0", port: port, crash: true)
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
        // The failed release's artifact goes with the rollback (it stayed until the next healthy install: a run of failed
        // releases filled the disk); the restored release's stays.
        let artifacts = fleet.root.appendingPathComponent("edge-1/state/artifacts").path
        let v2Digest = try Release.decode(v2.payload).artifact.sha256.hex
        try await eventually("v2's artifact removed after the rollback", timeout: .seconds(30)) { () -> Bool? in
            ((try? FileManager.default.contentsOfDirectory(atPath: artifacts)) ?? []).contains(v2Digest) ? nil : true
        }
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: artifacts)) ?? []).count == 1, "v1's artifact stays")

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
