import Foundation
import Shared
import TestSupport
import Testing

@testable import Agent

/// An app that crashes a while after each start (a stable run by `min_uptime`): the process manager restarts it
/// forever and its table shows it `online` between crashes. The agent finds the loop in the restart counter
/// (`RestartWatch`) and reports the service unhealthy, with a sentence naming the app; a release that fixes it is
/// installed and judged on its own.
@Suite("Crash loop behind an online table, end to end", .serialized)
struct CrashLoopReportEndToEndTests {
    @Test("a crash loop the process manager keeps restarting is reported unhealthy", .timeLimit(.minutes(5)), arguments: Backend.allCases)
    func crashLoopIsReported(backend: Backend) async throws {
        _ = try backend.pm2Binary()
        try await FleetFixture.with { fleet in try await run(fleet, backend: backend) }
    }

    /// PM2 restarts an app with a `cron_restart` schedule on every tick, and each run raises its restart counter: a job
    /// run every few seconds (or minutes, as PM2's periodic jobs are) is not a crash loop. Real PM2 only: the builtin
    /// supervisor has no schedules.
    @Test("restarts on a cron_restart schedule are not a crash loop", .timeLimit(.minutes(3)))
    func scheduledRestartsAreNotACrashLoop() async throws {
        _ = try Backend.pm2.pm2Binary()
        try await FleetFixture.with { fleet in
            try await fleet.startController()
            let port = try freeLoopbackPort()
            // Every 3 s: a few runs within the test, each one restart on PM2's counter.
            try await fleet.publish(serial: 1, version: "1.0.0", port: port, appOptions: ["cron_restart": .string("*/3 * * * * *")])
            let config = try await fleet.enrollAgent(name: "edge-1", longPollSeconds: 2, backend: .pm2)
            let agent = try fleet.startAgent(config: config, label: "agent")
            try await fleet.waitUntilRunning("1.0.0", port: port, agent: "edge-1")
            // The status the agent reported once PM2 had restarted the app on its schedule 4 times: it must say healthy.
            let report = try await eventually("a reported status shows web-app restarted 4 times", timeout: .seconds(60)) { () -> JSONValue? in
                let detail = try await fleet.controller.get("/v1/agents/edge-1", token: fleet.viewerToken)
                let newest = detail["services"]?.arrayValue.first { $0["service"]?.stringValue == "web" }
                let restarts = newest?["processes"]?.arrayValue.compactMap { $0["restarts"]?.intValue }.max() ?? 0
                return restarts >= 4 ? newest : nil
            }
            #expect(report["health"]?.stringValue == "healthy", "\(report)")
            let message = report["message"]?.stringValue ?? ""
            #expect(!message.contains("crash loop"), "\(report)")
            #expect(report["serial"]?.intValue == 1, "the release stays applied: \(report)")
            #expect(!(agent.stdout + agent.stderr).contains("an app is in a crash loop"))
        }
    }

    private func run(_ fleet: FleetFixture, backend: Backend) async throws {
        try await fleet.startController()
        let port = try freeLoopbackPort()
        let trigger = fleet.root.appendingPathComponent("crash-later").path
        try await fleet.publish(serial: 1, version: "1.0.0", port: port, crashLater: trigger)
        let config = try await fleet.enrollAgent(name: "edge-1", longPollSeconds: 2, backend: backend)
        let agent = try fleet.startAgent(config: config, label: "agent")
        let control = try #require(fleet.controls["edge-1"])
        try await fleet.waitUntilRunning("1.0.0", port: port, agent: "edge-1")
        let healthy = try await fleet.fleetEntry(agent: "edge-1")
        #expect(healthy?["health"]?.stringValue == "healthy", "before the loop: \(String(describing: healthy))")

        // From now on every start of the app crashes 1.5 s later. Killing the running one starts the loop: the process
        // manager restarts it, each run outlasts `min_uptime` (1 s), so it never gives up.
        #expect(FileManager.default.createFile(atPath: trigger, contents: Data()))
        let pid = try #require(try await control.table().first { $0.name == "web-app" }?.pid)
        #expect(kill(pid, SIGKILL) == 0)

        let entry = try await eventually("the fleet shows web unhealthy with the crash loop", timeout: .seconds(90), interval: .milliseconds(500)) {
            () -> JSONValue? in
            guard let entry = try await fleet.fleetEntry(agent: "edge-1"), entry["health"]?.stringValue == "unhealthy",
                entry["message"]?.stringValue?.contains("a crash loop the process manager keeps restarting") == true
            else { return nil }
            return entry
        }
        let message = entry["message"]?.stringValue ?? ""
        #expect(message.contains("web-app (pm_id "), "\(message)")
        #expect(entry["phase"]?.stringValue == "running", "the release stays applied: \(entry)")
        // The loop hides behind `online`: the process manager never gave up.
        let table = try await control.table().filter { $0.name == "web-app" }
        #expect(table.allSatisfy { $0.status != .errored }, "\(table)")
        #expect((agent.stdout + agent.stderr).contains("an app is in a crash loop"))

        // The fix: a release whose app does not crash. Installed at once, and healthy on its own (the counter's past
        // does not carry over).
        try FileManager.default.removeItem(atPath: trigger)
        try await fleet.publish(serial: 2, version: "2.0.0", port: port, crashLater: trigger)
        try await fleet.waitUntilRunning("2.0.0", port: port, agent: "edge-1")
        try await eventually("the fleet shows serial 2 healthy, without the crash loop", timeout: .seconds(60)) { () -> Bool? in
            guard let entry = try await fleet.fleetEntry(agent: "edge-1") else { return nil }
            let clean = !(entry["message"]?.stringValue ?? "").contains("crash loop")
            return entry["serial"]?.intValue == 2 && entry["health"]?.stringValue == "healthy" && clean ? true : nil
        }
    }
}
