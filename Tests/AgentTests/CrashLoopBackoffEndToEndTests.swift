import Foundation
import Shared
import TestSupport
import Testing

@testable import Agent

/// An installed app that starts crashing at every boot: the process manager restarts it until its limit and marks it
/// `errored`, then the agent's drift repair restarts it — at once the first time, then only after 10 s, 20 s, …
/// (`RepairBackoff`), not on every pass; the service's report says so; and a new release is installed at once all the
/// same.
///
/// The loop is started by deleting the app, not by killing it: the agent starts it again, and it crashes within PM2's
/// window for counting unstable restarts (PM2 counts them only within `min_uptime × max_restarts` of the app's start;
/// an app that begins crashing later is restarted by PM2 itself, forever, and never becomes errored).
@Suite("Crash-loop backoff end to end", .serialized)
struct CrashLoopBackoffEndToEndTests {
    @Test("an app that keeps crashing is restarted after a growing wait, not on every pass", .timeLimit(.minutes(5)), arguments: Backend.allCases)
    func crashLoopBacksOff(backend: Backend) async throws {
        _ = try backend.pm2Binary()
        try await FleetFixture.with { fleet in try await run(fleet, backend: backend) }
    }

    private func run(_ fleet: FleetFixture, backend: Backend) async throws {
        try await fleet.startController()
        let port = try freeLoopbackPort()
        let trigger = fleet.root.appendingPathComponent("crash-at-boot").path
        // A generous window, so a slow boot on a loaded machine still counts as an unstable restart.
        let crashLimits: [String: JSONValue] = ["max_restarts": .integer(2), "min_uptime": .integer(5000)]
        try await fleet.publish(serial: 1, version: "1.0.0", port: port, crashWhen: trigger, appOptions: crashLimits)
        let config = try await fleet.enrollAgent(name: "edge-1", longPollSeconds: 2, backend: backend)
        let agent = try fleet.startAgent(config: config, label: "agent")
        let control = try #require(fleet.controls["edge-1"])
        try await fleet.waitUntilRunning("1.0.0", port: port, agent: "edge-1")

        // From now on every start of the app throws at boot; deleting the running one starts the loop. The agent
        // starts it again (a missing app is never held back), the process manager restarts it twice
        // (`max_restarts: 2`) and gives up: errored.
        #expect(FileManager.default.createFile(atPath: trigger, contents: Data()))
        try await control.deleteApp("web-app")

        // Three restarts by the agent: the first at once, then one at least 10 s later, then one at least 20 s after
        // that. Without the backoff they came every pass, about every 2 s here.
        let repairs = try await eventually("three drift repairs of the crashing app", timeout: .seconds(120), interval: .seconds(1)) {
            () -> [Date]? in
            let times = Self.repairTimes(in: agent.stdout + agent.stderr)
            return times.count >= 3 ? times : nil
        }
        let gaps = zip(repairs, repairs.dropFirst()).map { $1.timeIntervalSince($0) }
        let lines = (agent.stdout + agent.stderr).split(separator: "\n").filter { $0.contains("web-app") }.joined(separator: "\n")
        // Log timestamps are whole seconds: a gap of 10 s can print as 9.
        #expect(gaps[0] >= 9, "the second restart waited at least 10 s after the first: \(gaps)\n\(lines)")
        #expect(gaps[1] >= 19, "the third waited at least 20 s after the second: \(gaps)\n\(lines)")
        try await eventually("the report says the restarts back off", timeout: .seconds(30)) { () -> Bool? in
            let message = try await fleet.fleetEntry(agent: "edge-1")?["message"]?.stringValue ?? ""
            return message.contains("in a row: the next one waits at least") ? true : nil
        }

        // A new release is not held back by the wait: it installs at once, and runs once the app boots again.
        try FileManager.default.removeItem(atPath: trigger)
        let published = Date()
        try await fleet.publish(serial: 2, version: "2.0.0", port: port, crashWhen: trigger, appOptions: crashLimits)
        try await eventually("v2 serving", timeout: .seconds(90)) { await fleet.appAnswer(port: port)?.hasPrefix("2.0.0") == true ? true : nil }
        // When the agent began the install (its log, before any download or start: what a held-back install would
        // have waited for is this line, not the app's boot, which a loaded machine can make slow on its own).
        let install = try #require(Self.times(of: ["installing release", "ferry.serial=2"], in: agent.stdout + agent.stderr).first)
        let waited = install.timeIntervalSince(published)
        #expect(waited < 20, "v2's install did not wait out the 40 s the next restart of v1 would have: began \(waited) s after the publish")
    }

    /// When the agent logged a line holding every one of `parts` (the log's timestamps, whole seconds).
    static func times(of parts: [String], in log: String) -> [Date] {
        let format = DateFormatter()
        format.locale = Locale(identifier: "en_US_POSIX")
        format.dateFormat = "yyyy-MM-dd'T'HH:mm:ssZ"
        return log.split(separator: "\n").compactMap { line in
            guard parts.allSatisfy({ line.contains($0) }), let stamp = line.split(separator: " ").first else { return nil }
            return format.date(from: String(stamp))
        }
    }

    /// When the agent logged a restart of the web app by drift repair (the log's timestamps, whole seconds).
    static func repairTimes(in log: String) -> [Date] {
        times(of: ["repairing drift", "ferry.action=restart", "ferry.app=web-app"], in: log)
    }
}
