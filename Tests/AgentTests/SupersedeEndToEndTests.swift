import Foundation
import Shared
import TestSupport
import Testing

/// An operator's fix published while the broken release is still in its health gate: the agent sees it during the
/// gate (it polls on the side while a pass runs), ends the gate without a verdict, puts the release of before back and
/// installs the fix — instead of waiting out the broken release's deadline (ten minutes here) and rolling back first.
@Suite("Superseding a release in its health gate end to end", .serialized)
struct SupersedeEndToEndTests {
    @Test("a newer release ends the health gate of the one before", .timeLimit(.minutes(5)), arguments: Backend.allCases)
    func aNewerReleaseEndsTheGate(backend: Backend) async throws {
        _ = try backend.pm2Binary()
        try await FleetFixture.with { fleet in try await run(fleet, backend: backend) }
    }

    private func run(_ fleet: FleetFixture, backend: Backend) async throws {
        try await fleet.startController()
        let port = try freeLoopbackPort()
        // v2's health URL names a port nothing listens on: its gate can only end at its deadline, 600 s away.
        let silentPort = try freeLoopbackPort()
        try await fleet.publish(serial: 1, version: "1.0.0", port: port)
        let config = try fleet.enrollAgent(name: "edge-1", longPollSeconds: 2, backend: backend)
        _ = try fleet.startAgent(config: config, label: "agent")
        try await fleet.waitUntilRunning("1.0.0", port: port, agent: "edge-1")

        try await fleet.publish(serial: 2, version: "2.0.0", port: port, healthURL: "http://127.0.0.1:\(silentPort)/", deadline: 600)
        try await eventually("v2 serving, in its health gate", timeout: .seconds(90)) {
            await fleet.appAnswer(port: port)?.hasPrefix("2.0.0") == true ? true : nil
        }
        try await eventually("the fleet shows serial 2 deploying", timeout: .seconds(30)) {
            try await fleet.fleetEntry(agent: "edge-1")?["phase"]?.stringValue == "deploying" ? true : nil
        }

        try await fleet.publish(serial: 3, version: "3.0.0", port: port)
        let published = ContinuousClock.now
        try await fleet.waitUntilRunning("3.0.0", port: port, agent: "edge-1", timeout: .seconds(120))
        let entry = try await eventually("the fleet shows serial 3 healthy", timeout: .seconds(60)) { () -> JSONValue? in
            let entry = try await fleet.fleetEntry(agent: "edge-1")
            return entry?["serial"]?.intValue == 3 && entry?["health"]?.stringValue == "healthy" ? entry : nil
        }
        #expect(ContinuousClock.now - published < .seconds(300), "v3 waited for v2's deadline")
        #expect(entry["message"]?.stringValue == "serial 3 (3.0.0) is running and healthy")
        // Superseded is not failed: serial 2 is in no failure list, and it never rolled back.
        let text = "\(entry)"
        #expect(!text.contains("rolled back"), "\(text)")
        let agentLog = (try? String(contentsOf: fleet.root.appendingPathComponent("logs/agent.err"), encoding: .utf8)) ?? ""
        let agentOut = (try? String(contentsOf: fleet.root.appendingPathComponent("logs/agent.out"), encoding: .utf8)) ?? ""
        #expect((agentLog + agentOut).contains("a newer release supersedes the one in its health gate"))
        #expect(!(agentLog + agentOut).contains("release unhealthy, rolling back"))
    }
}
