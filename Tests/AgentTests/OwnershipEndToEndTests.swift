import Foundation
import Shared
import TestSupport
import Testing

@testable import Agent

/// What happens behind the agent's back, under each process manager: an orphan in Ferry's namespace is removed, a
/// bystander outside it is left alone, an app deleted by hand or a killed daemon is repaired, and after a reboot the
/// process manager's own saved table (`pm2 save` → `pm2 resurrect`, the supervisor's `apps.json`) is exactly Ferry's.
@Suite("Drift, ownership and reboot end to end", .serialized)
struct OwnershipEndToEndTests {
    @Test(
        "orphan removed, bystander untouched, delete and kill repaired, reboot resurrects Ferry's table",
        .timeLimit(.minutes(6)),
        arguments: Backend.allCases
    )
    func driftOwnershipAndReboot(backend: Backend) async throws {
        _ = try backend.pm2Binary()
        try await FleetFixture.with { fleet in try await run(fleet, backend: backend) }
    }

    private func run(_ fleet: FleetFixture, backend: Backend) async throws {
        try await fleet.startController()
        let port = try freeLoopbackPort()
        try await fleet.publish(serial: 1, version: "1.0.0", port: port)
        let config = try await fleet.enrollAgent(name: "edge-1", longPollSeconds: 2, backend: backend)
        let agent = try fleet.startAgent(config: config, label: "agent")
        let control = try #require(fleet.controls["edge-1"])
        try await fleet.waitUntilRunning("1.0.0", port: port, agent: "edge-1")

        // A bystander outside Ferry's ownership: another namespace of the same PM2 daemon, or a process of its own
        // next to the builtin supervisor. And an orphan: an app in Ferry's namespace that no release names.
        let idle = fleet.root.appendingPathComponent("idle.js").path
        try "setInterval(() => {}, 1000);\n".write(toFile: idle, atomically: true, encoding: .utf8)
        let bystanderPid: Int32
        switch backend {
        case .pm2:
            try await control.startStray(name: "bystander", script: idle, namespace: "other")
            let row = try await eventually("the bystander online") {
                try await control.wholeTable().first { $0.name == "bystander" && $0.status == .online && $0.pid != nil }
            }
            bystanderPid = try #require(row.pid)
        case .builtin:
            bystanderPid = try fleet.startStray("/usr/bin/env", ["node", idle], label: "bystander").pid
        }
        try await control.startStray(name: "stray", script: idle, namespace: "ferry")
        try await eventually("the agent removes the orphan", timeout: .seconds(60)) { () -> Bool? in
            let table = try await control.table()
            return !table.contains { $0.name == "stray" } && table.contains { $0.name == "web-app" && $0.status == .online } ? true : nil
        }
        #expect(try await Self.bystanderAlive(backend, control, pid: bystanderPid), "the bystander outside Ferry's namespace still runs, same pid")

        // Drift 1: the app deleted by hand. The agent may already be repairing it when the table is read again, so the
        // deletion shows as the old process being gone, not as an empty table.
        let deletedPid = try await control.table().first { $0.name == "web-app" }?.pid
        try await control.deleteApp("web-app")
        #expect(try await control.table().contains { $0.name == "web-app" && $0.pid == deletedPid } == false)
        try await eventually("the agent starts the deleted app again", timeout: .seconds(60)) {
            await fleet.appAnswer(port: port)?.hasPrefix("1.0.0") == true ? true : nil
        }
        #expect(try await Self.bystanderAlive(backend, control, pid: bystanderPid), "repairing drift left the bystander alone")

        // Drift 2: the daemon killed, every app with it.
        try await control.killDaemon()
        try await eventually("the agent brings the app back after the daemon was killed", timeout: .seconds(90)) {
            await fleet.appAnswer(port: port)?.hasPrefix("1.0.0") == true ? true : nil
        }
        let before = try await eventually("a settled table") { () -> [ManagedProcess]? in
            let table = try await control.table()
            return table.count == 1 && table.allSatisfy({ $0.status == .online && $0.pid != nil }) ? table : nil
        }

        // A reboot with the agent down: the process manager's own saved table comes back, exactly Ferry's.
        await agent.terminate()
        if backend == .pm2 {
            let dump = try JSONValue.parse(Array(try Data(contentsOf: URL(fileURLWithPath: "\(control.pm2Home ?? "")/dump.pm2"))))
            let saved = (dump.arrayValue ?? []).map { "\($0["name"]?.stringValue ?? "?")@\($0["namespace"]?.stringValue ?? "?")" }
            // `pm2 save` dumps the daemon's whole table: whether the bystander is in it depends on whether it ran at the
            // agent's last save (a killed daemon takes it down; PM2 may bring it back). Ferry's part must be exact.
            #expect(saved.filter { $0.hasSuffix("@ferry") } == ["web-app@ferry"], "pm2 save left exactly Ferry's table in its namespace: \(saved)")
            #expect(saved.allSatisfy { $0 == "web-app@ferry" || $0 == "bystander@other" }, "nothing else in the dump: \(saved)")
        }
        try await control.rebootAndResurrect()
        let after = try await eventually("the resurrected table online", timeout: .seconds(60)) { () -> [ManagedProcess]? in
            let table = try await control.table()
            return !table.isEmpty && table.allSatisfy({ $0.status == .online && $0.pid != nil }) ? table : nil
        }
        #expect(after.map(Self.identity) == before.map(Self.identity), "resurrected \(after.map(Self.identity)) saved \(before.map(Self.identity))")
        #expect(Set(after.compactMap(\.pid)).isDisjoint(with: before.compactMap(\.pid)), "every instance is a new process after the reboot")
        try await eventually("the resurrected app serves v1") { await fleet.appAnswer(port: port)?.hasPrefix("1.0.0") == true ? true : nil }
    }

    /// What a resurrect must restore: everything but pids, uptimes and counters.
    static func identity(_ process: ManagedProcess) -> String {
        [
            process.name, process.namespace, "\(process.instances)", "\(process.instanceIndex)", process.execMode.rawValue, process.scriptPath,
            process.cwd, AppAction.InterpreterKind(observed: process.interpreter ?? "none") == .node ? "node" : (process.interpreter ?? "none"),
        ].joined(separator: " ")
    }

    /// Whether the bystander still runs as the same process (and, under PM2, is still in its namespace, online).
    static func bystanderAlive(_ backend: Backend, _ control: BackendControl, pid: Int32) async throws -> Bool {
        guard kill(pid, 0) == 0 else { return false }
        guard backend == .pm2 else { return true }
        return try await control.wholeTable().contains { $0.name == "bystander" && $0.namespace == "other" && $0.pid == pid && $0.status == .online }
    }
}
