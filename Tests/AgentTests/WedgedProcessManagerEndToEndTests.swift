import Foundation
import Shared
import TestSupport
import Testing

/// The process manager's daemon stops answering (wedged: here stopped with SIGSTOP, its apps running on). Before, the
/// agent's reports went on saying what the last readable table said: the service healthy, its processes online with
/// frozen uptimes, for as long as it lasted; only the agent's own log said otherwise. Now the service's health is
/// unknown and its message says why, at once, until the table can be read again.
@Suite("Wedged process manager end to end", .serialized)
struct WedgedProcessManagerEndToEndTests {
    @Test("a process table that cannot be read is reported as such, not as the last one read", .timeLimit(.minutes(4)))
    func anUnreadableTableIsReported() async throws {
        try await FleetFixture.with { fleet in
            try await fleet.startController()
            let port = try freeLoopbackPort()
            try await fleet.publish(serial: 1, version: "1.0.0", port: port)
            let config = try await fleet.enrollAgent(name: "edge-1", longPollSeconds: 2)
            _ = try fleet.startAgent(config: config, label: "agent", environment: ["FERRY_TEST_SUPERVISOR_REQUEST_SECONDS": "2"])
            try await fleet.waitUntilRunning("1.0.0", port: port, agent: "edge-1")
            #expect(try await fleet.fleetEntry(agent: "edge-1")?["health"]?.stringValue == "healthy")

            let pidFile = fleet.root.appendingPathComponent("edge-1/state/supervisor/supervisor.pid")
            let daemon = try #require(Int32(String(contentsOf: pidFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
            #expect(kill(daemon, SIGSTOP) == 0)
            let stopped: Result<JSONValue, any Error>
            do {
                stopped = .success(
                    try await eventually("the fleet shows web's health unknown, and why", timeout: .seconds(60), interval: .milliseconds(250)) {
                        () -> JSONValue? in
                        guard let entry = try await fleet.fleetEntry(agent: "edge-1"), entry["health"]?.stringValue == "unknown",
                            entry["message"]?.stringValue?.contains("cannot read the builtin process table") == true
                        else { return nil }
                        return entry
                    }
                )
            } catch {
                stopped = .failure(error)
            }
            // Going on before anything can fail: the fixture's tear-down needs the daemon.
            #expect(kill(daemon, SIGCONT) == 0)
            let entry = try stopped.get()
            #expect(entry["phase"]?.stringValue == "running", "the release stays applied: \(entry)")
            // The app itself never stopped.
            #expect(await fleet.appAnswer(port: port)?.hasPrefix("1.0.0") == true)

            try await eventually("healthy again once the table answers", timeout: .seconds(60), interval: .milliseconds(250)) { () -> Bool? in
                guard let entry = try await fleet.fleetEntry(agent: "edge-1") else { return nil }
                let clean = !(entry["message"]?.stringValue ?? "").contains("cannot read")
                return entry["health"]?.stringValue == "healthy" && clean ? true : nil
            }
        }
    }
}
