import Foundation
import Shared
import TestSupport

@testable import Agent

/// The invariants the chaos loop checks after every cycle (issue 14). Each check returns the violations it found, one
/// sentence each naming the agent; empty means it holds.
struct ChaosInvariants {
    let fleet: FleetFixture
    static let service = "web"
    static let app = "web-app"

    // MARK: - Convergence

    /// Whether `agent` has settled on `serial` (installed and applied) or rolled it back to its last good release;
    /// `nil` with what it is still doing otherwise.
    func settledOutcome(_ agent: ChaosLoop.Agent, serial: Int64, version: String) async -> (outcome: ChaosReport.Outcome?, waitingFor: [String]) {
        let state: AgentState
        do {
            state = try StateStore(path: "\(agent.stateDir)/state.json").load()
        } catch {
            return (nil, ["\(agent.name): state.json unreadable: \(error)"])
        }
        let service = state[Self.service]
        if service.pending == nil, service.applied?.serial == serial { return (.newRelease, []) }
        if service.pending == nil, service.failures.contains(where: { $0.serial == serial && $0.kind == .rolledBack }),
            service.applied?.serial == agent.lastGood.serial
        {
            return (.rolledBack, [])
        }
        return (
            nil,
            [
                "\(agent.name): applied \(service.applied.map { String($0.serial) } ?? "none"), pending \(service.pending.map { String($0.serial) } ?? "none"), "
                    + "\(service.phase.rawValue): \(service.message)"
            ]
        )
    }

    // MARK: - The invariants of one agent

    /// Every invariant of one agent that should run `running`; `failedSerial` is the serial it should report as failed.
    func check(_ agent: ChaosLoop.Agent, running: (serial: Int64, version: String), failedSerial: Int64?) async -> [String] {
        var problems: [String] = []
        problems += stateIsConsistent(agent, running: running)
        problems += currentIsComplete(agent)
        problems += noLeftovers(agent)
        let table = await tableProblems(agent)
        problems += table.problems
        problems += orphans(agent, tablePids: table.pids)
        problems += await answers(agent, version: running.version, tablePids: table.pids)
        if kill(agent.bystanderPID, 0) != 0 { problems.append("\(agent.name): the bystander (pid \(agent.bystanderPID)) is gone") }
        if agent.process?.isRunning != true { problems.append("the agent process is gone") }
        problems += await reported(agent, running: running, failedSerial: failedSerial)
        return problems.map { "\(agent.name): \($0)" }
    }

    /// More than one daemon for the agent's home (or none), still so 20 s after the cycle converged. Two `pm2` CLIs that
    /// overlap while no daemon runs each start one (the agent's and an operator's — here this loop's table read, which
    /// only runs while a daemon listens, so it is the agent's own calls racing after a fault); the agent stops a daemon
    /// of its home that holds neither socket after its next `pm2 jlist` (`PM2Daemons`), so the check waits for that.
    func daemonProblems(_ agent: ChaosLoop.Agent) async -> [String] {
        let deadline = ContinuousClock.now + .seconds(20)
        var daemons = DaemonDeathTests.daemons(agent.control)
        while daemons.count != 1, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(250))
            daemons = DaemonDeathTests.daemons(agent.control)
        }
        guard daemons.count != 1 else { return [] }
        return [
            "\(agent.name): \(daemons.count) \(agent.backend == .pm2 ? "PM2 daemons" : "supervisor daemons") run for its home 20 s after it converged: \(daemons.sorted())"
        ]
    }

    /// `state.json` reads back and says the agent runs `running`, with no install pending.
    func stateIsConsistent(_ agent: ChaosLoop.Agent, running: (serial: Int64, version: String)) -> [String] {
        guard let state = try? StateStore(path: "\(agent.stateDir)/state.json").load() else { return ["state.json is unreadable"] }
        let service = state[Self.service]
        var problems: [String] = []
        if service.applied?.serial != running.serial || service.applied?.version != running.version {
            problems.append(
                "state.json applies \(service.applied.map { "\($0.serial) \($0.version)" } ?? "nothing"), not \(running.serial) \(running.version)"
            )
        }
        if let pending = service.pending { problems.append("state.json still has serial \(pending.serial) pending") }
        if let accepted = service.highestAcceptedSerial, accepted < running.serial {
            problems.append("state.json accepted only up to \(accepted) but applies \(running.serial)")
        }
        return problems
    }

    /// `current` points at a release directory holding every file of its version's artifact, with the right size, and
    /// it is the directory `state.json` applies. Must hold at any instant, also right after a kill -9.
    func currentIsComplete(_ agent: ChaosLoop.Agent) -> [String] {
        let serviceDir = "\(agent.stateDir)/services/\(Self.service)"
        guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "\(serviceDir)/current") else {
            return ["\(serviceDir)/current is not a symbolic link"]
        }
        let directory = target.hasPrefix("/") ? target : "\(serviceDir)/\(target)"
        guard let versionText = try? String(contentsOfFile: "\(directory)/VERSION", encoding: .utf8) else {
            return ["current -> \(target) has no VERSION file (a partial or missing tree)"]
        }
        let version = versionText.trimmingCharacters(in: .whitespacesAndNewlines)
        guard let manifest = ChaosArtifacts.manifest(of: version) else { return ["current -> \(target) holds version \(version), never published"] }
        var problems: [String] = []
        for (path, size) in manifest.sorted(by: { $0.key < $1.key }) {
            var info = stat()
            guard stat("\(directory)/\(path)", &info) == 0 else {
                problems.append("current -> \(target) lacks \(path)")
                continue
            }
            if Int(info.st_size) != size { problems.append("current -> \(target): \(path) has \(info.st_size) bytes, not \(size)") }
        }
        if target.contains(".staging-") { problems.append("current points at a staging directory \(target)") }
        if let state = try? StateStore(path: "\(agent.stateDir)/state.json").load(), let applied = state[Self.service].applied,
            state[Self.service].pending == nil, !target.hasSuffix(applied.directoryName)
        {
            problems.append("current -> \(target), but state.json applies \(applied.directoryName)")
        }
        return problems
    }

    /// No staging directories, temporary files or partial downloads once the agent has converged.
    func noLeftovers(_ agent: ChaosLoop.Agent) -> [String] {
        var problems: [String] = []
        let releases = "\(agent.stateDir)/services/\(Self.service)/releases"
        for name in (try? FileManager.default.contentsOfDirectory(atPath: releases)) ?? [] where name.contains(".staging-") {
            problems.append("staging directory left: \(name)")
        }
        for directory in [agent.stateDir, "\(agent.stateDir)/services/\(Self.service)", "\(agent.stateDir)/artifacts"] {
            for name in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
            where name.contains(".tmp-") || name.hasSuffix(".part") {
                problems.append("temporary file left: \(directory)/\(name)")
            }
        }
        return problems
    }

    /// Ferry's part of the table holds exactly the release's app, every instance online with a live process.
    func tableProblems(_ agent: ChaosLoop.Agent) async -> (problems: [String], pids: Set<Int32>) {
        let table: [ManagedProcess]
        do {
            table = try await agent.control.table()
        } catch {
            return (["cannot read the \(agent.backend.testDescription) table: \(error)"], [])
        }
        var problems: [String] = []
        let names = Set(table.map(\.name))
        if names != [Self.app] { problems.append("Ferry's table holds \(names.sorted()), not exactly [\(Self.app)]") }
        let app = table.filter { $0.name == Self.app }
        if app.count != 1 { problems.append("\(Self.app) has \(app.count) instances in the table, not 1") }
        for process in app {
            if process.status != .online { problems.append("\(Self.app) pm_id \(process.pmId) is \(process.status)") }
            guard let pid = process.pid, kill(pid, 0) == 0 else {
                problems.append("\(Self.app) pm_id \(process.pmId) has no live process")
                continue
            }
        }
        return (problems, Set(app.compactMap(\.pid)))
    }

    /// No process runs from the service's releases except those the table lists (and their children): no orphan of a
    /// dead daemon, no second copy.
    func orphans(_ agent: ChaosLoop.Agent, tablePids: Set<Int32>) -> [String] {
        let services = (try? FileManager.default.destinationOfSymbolicLink(atPath: agent.stateDir)).map { $0 } ?? agent.stateDir
        let prefix = "\(services)/services/\(Self.service)/"
        var strays: [String] = []
        for name in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = Int32(name), !tablePids.contains(pid),
                let cwd = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/cwd"), cwd.hasPrefix(prefix)
            else { continue }
            if let parent = Self.parent(of: pid), tablePids.contains(parent) { continue }
            let state = Self.procStat(of: pid)?.state
            if state == "Z" || state == "X" { continue }
            strays.append("pid \(pid) in \(cwd)")
        }
        return strays.isEmpty ? [] : ["processes run from the releases outside the table: \(strays.joined(separator: ", "))"]
    }

    /// The app answers on its port with `version`, from a process the table lists.
    func answers(_ agent: ChaosLoop.Agent, version: String, tablePids: Set<Int32>) async -> [String] {
        guard let answer = await fleet.appAnswer(port: agent.port) else { return ["nothing answers on port \(agent.port)"] }
        guard answer.hasPrefix("\(version) ") else { return ["port \(agent.port) answers \"\(answer)\", not \(version)"] }
        if let pid = answer.split(separator: "=").last.flatMap({ Int32($0) }), !tablePids.contains(pid) {
            return ["port \(agent.port) is answered by pid \(pid), which the table does not list"]
        }
        return []
    }

    /// The controller has the agent's report of what it runs.
    func reported(_ agent: ChaosLoop.Agent, running: (serial: Int64, version: String), failedSerial: Int64?) async -> [String] {
        guard let entry = try? await fleet.fleetEntry(agent: agent.name, service: Self.service) else {
            return ["the controller has no report of \(Self.service)"]
        }
        var problems: [String] = []
        if entry["serial"]?.intValue != running.serial {
            problems.append("the controller's report says serial \(entry["serial"]?.intValue.map(String.init) ?? "none"), not \(running.serial)")
        }
        let phase = entry["phase"]?.stringValue ?? "?"
        let expected = failedSerial == nil ? "running" : "rolled-back"
        if phase != expected { problems.append("the controller's report says \(phase), not \(expected)") }
        return problems
    }

    // MARK: - The controller

    /// Every acknowledged publish is in the controller's database, which passes SQLite's integrity check.
    func controllerChecks(acknowledged: [Int64]) async -> [String] {
        var problems: [String] = []
        do {
            let listing = try await fleet.controller.get("/v1/services/\(Self.service)/releases?limit=500", token: fleet.operatorToken)
            let stored = Set(listing["releases"]?.arrayValue.compactMap { $0["serial"]?.intValue } ?? [])
            let lost = acknowledged.filter { !stored.contains($0) }
            if !lost.isEmpty { problems.append("controller: acknowledged publishes lost: serials \(lost)") }
        } catch {
            problems.append("controller: cannot list releases: \(error)")
        }
        let database = fleet.controller.dataDir.appendingPathComponent("ferry.sqlite").path
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/sqlite3") {
            let request = CommandRunner.Request(
                executable: "/usr/bin/sqlite3",
                arguments: ["-readonly", database, "PRAGMA integrity_check;"],
                environment: ["PATH": "/usr/bin:/bin"],
                timeout: .seconds(30)
            )
            do {
                let output = try await CommandRunner.run(request)
                let text = String(decoding: output.standardOutput, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                if text != "ok" {
                    problems.append("controller: SQLite integrity check says \(text) \(String(decoding: output.standardError, as: UTF8.self))")
                }
            } catch {
                problems.append("controller: sqlite3 failed: \(error)")
            }
        }
        return problems
    }

    // MARK: - /proc

    private struct Stat {
        var state: Character
        var parent: Int32
    }

    private static func procStat(of pid: Int32) -> Stat? {
        guard let text = SmallFile.text("/proc/\(pid)/stat"), let close = text.lastIndex(of: ")") else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count > 2, let state = fields[0].first, let parent = Int32(fields[1]) else { return nil }
        return Stat(state: state, parent: parent)
    }

    private static func parent(of pid: Int32) -> Int32? { procStat(of: pid)?.parent }
}
