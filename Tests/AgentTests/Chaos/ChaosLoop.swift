import Foundation
import Shared
import TestSupport
import Testing

@testable import Agent

/// The fault-injection loop (issue 14, docs/reliability.md): one controller, one agent per process manager (the builtin
/// supervisor, and real PM2 when it is here), a stream of good, crashing and unhealthy releases, and at a random moment
/// of each cycle one fault. After every cycle it waits for each agent to converge — to the new release, or to its last
/// good release with the failure reported — within `convergenceBound`, then checks the invariants
/// (`ChaosInvariants`). Everything is real: processes, sockets, SQLite, PM2, a tmpfs filled by a real file.
final class ChaosLoop {
    struct Configuration {
        var cycles: Int
        var seed: UInt64
        var backends: [Backend]
        /// How long one agent may take to converge after a cycle's publish before that is a violation.
        var convergenceBound: Duration = .seconds(150)
        /// Where the Markdown results go (`scripts/chaos --report`), if anywhere.
        var reportPath: String?
        /// No new cycle starts after this much time (`scripts/chaos --minutes`); the summary says how many ran.
        var timeLimit: Duration?

        /// From the environment `scripts/chaos` sets: `FERRY_CHAOS_CYCLES` (default `defaultCycles`),
        /// `FERRY_CHAOS_SEED` (default: random, printed), `FERRY_CHAOS_REPORT`, `FERRY_CHAOS_BACKENDS`
        /// (`builtin,pm2`; default both when real PM2 is here).
        static func fromEnvironment(defaultCycles: Int) throws -> Configuration {
            let environment = ProcessInfo.processInfo.environment
            let cycles =
                try environment["FERRY_CHAOS_CYCLES"].map { text -> Int in
                    guard let value = Int(text), (1...100_000).contains(value) else {
                        throw HarnessError("FERRY_CHAOS_CYCLES=\(text): a count from 1")
                    }
                    return value
                } ?? defaultCycles
            let seed =
                try environment["FERRY_CHAOS_SEED"].map { text -> UInt64 in
                    guard let value = UInt64(text) else { throw HarnessError("FERRY_CHAOS_SEED=\(text): an unsigned integer") }
                    return value
                } ?? UInt64.random(in: 1...UInt64(UInt32.max))
            var backends: [Backend]
            if let text = environment["FERRY_CHAOS_BACKENDS"] {
                backends = try text.split(separator: ",").map { name in
                    guard let backend = Backend(rawValue: String(name)) else { throw HarnessError("FERRY_CHAOS_BACKENDS: unknown \(name)") }
                    return backend
                }
            } else {
                backends = Backend.realPM2 == nil ? [.builtin] : [.builtin, .pm2]
            }
            if backends.contains(.pm2), Backend.realPM2 == nil {
                throw HarnessError("the chaos loop was asked for real PM2 but FERRY_TEST_PM2 is not set (scripts/real-pm2)")
            }
            let timeLimit = try environment["FERRY_CHAOS_MINUTES"].map { text -> Duration in
                guard let minutes = Int(text), (1...10_000).contains(minutes) else {
                    throw HarnessError("FERRY_CHAOS_MINUTES=\(text): minutes from 1")
                }
                return .seconds(minutes * 60)
            }
            return Configuration(
                cycles: cycles,
                seed: seed,
                backends: backends,
                reportPath: environment["FERRY_CHAOS_REPORT"],
                timeLimit: timeLimit
            )
        }
    }

    /// One agent of the loop.
    final class Agent {
        let name: String
        let backend: Backend
        let config: String
        let port: Int
        let stateDir: String
        let disk: SmallFileSystem?
        let control: BackendControl
        var process: ChildProcess?
        var starts = 0
        /// The release the agent should be running when nothing new succeeds: the last one it converged to.
        var lastGood: (serial: Int64, version: String)
        /// A process next to the agent's apps that it must never touch.
        var bystanderPID: Int32 = 0

        init(
            name: String,
            backend: Backend,
            config: String,
            port: Int,
            stateDir: String,
            disk: SmallFileSystem?,
            control: BackendControl,
            lastGood: (Int64, String)
        ) {
            self.name = name
            self.backend = backend
            self.config = config
            self.port = port
            self.stateDir = stateDir
            self.disk = disk
            self.control = control
            self.lastGood = lastGood
        }
    }

    let configuration: Configuration
    let fleet: FleetFixture
    private(set) var agents: [Agent] = []
    private var random: SeededRandom
    private var controllerPort = 0
    private(set) var report: ChaosReport
    private let invariants: ChaosInvariants
    private var serial: Int64 = 1
    /// The serials the controller acknowledged (2xx), which must all be there at the end of every cycle.
    private var acknowledged: [Int64] = []
    private var faults: [ChaosFault] = []

    init(configuration: Configuration, fleet: FleetFixture) {
        self.configuration = configuration
        self.fleet = fleet
        self.random = SeededRandom(seed: configuration.seed)
        self.report = ChaosReport(seed: configuration.seed, backends: configuration.backends, bound: configuration.convergenceBound)
        self.invariants = ChaosInvariants(fleet: fleet)
    }

    /// The environment every agent runs with: a 1 MiB free-space margin (the state disk is a 32 MiB tmpfs).
    static let agentEnvironment = ["FERRY_TEST_FREE_SPACE_MARGIN": "\(1 << 20)"]

    // MARK: - Set-up

    func setUp() async throws {
        try await fleet.startController()
        controllerPort = fleet.controller.port
        let first = try await ChaosArtifacts.publish(fleet, serial: 1, version: "1.0.1", kind: .good)
        try await expectAcknowledged(first, serial: 1)
        var diskProblem: String?
        for backend in configuration.backends {
            let name = backend == .pm2 ? "edge-pm2" : "edge-builtin"
            let agentRoot = fleet.root.appendingPathComponent(name)
            let stateDir = agentRoot.appendingPathComponent("state").path
            var disk: SmallFileSystem?
            switch SmallFileSystem.mountIfPossible(at: stateDir, megabytes: 32) {
            case .success(let mounted): disk = mounted
            case .failure(let problem): diskProblem = problem.reason
            }
            let port = try freeLoopbackPort()
            let config = try await fleet.enrollAgent(
                name: name,
                reportSeconds: 2,
                longPollSeconds: 5,
                backend: backend,
                instanceEnv: ["PORT": "\(port)"]
            )
            let control = try #require(fleet.controls[name])
            let agent = Agent(
                name: name,
                backend: backend,
                config: config,
                port: port,
                stateDir: stateDir,
                disk: disk,
                control: control,
                lastGood: (1, "1.0.1")
            )
            agents.append(agent)
            try start(agent)
            let idle = fleet.root.appendingPathComponent("bystander-\(name).js").path
            try "setInterval(() => {}, 1000);\n".write(toFile: idle, atomically: true, encoding: .utf8)
            agent.bystanderPID = try fleet.startStray("/usr/bin/env", ["node", idle], label: "bystander-\(name)").pid
        }
        faults = ChaosFault.allCases.filter { $0 != .fillDisk || diskProblem == nil }
        report.unavailable = ChaosFault.unavailable(diskAvailable: diskProblem)
        // Applied, not only answering: an app that answers is still inside its health gate, and a fault in cycle 1
        // (an agent killed there) would leave the agent with no release to roll back to, which is not what the
        // cycle's verdict expects of it.
        for agent in agents {
            try await eventually("\(agent.name) serves 1.0.1 and has applied it", timeout: .seconds(120)) { () async -> Bool? in
                guard await fleet.appAnswer(port: agent.port)?.hasPrefix("1.0.1 ") == true else { return nil }
                return await invariants.settledOutcome(agent, serial: 1, version: "1.0.1").outcome == .newRelease ? true : nil
            }
        }
        report.print(
            "chaos: seed \(configuration.seed), \(configuration.cycles) cycles, agents \(agents.map { "\($0.name) (\($0.backend.testDescription))" }.joined(separator: ", "))"
        )
        for (fault, reason) in report.unavailable { report.print("chaos: \(fault.rawValue) left out: \(reason)") }
        report.print("chaos: \(ChaosFault.clockStepReason)")
    }

    /// Unmounts the state disks (after the fixture stopped every process that could hold them).
    func unmountDisks() {
        for agent in agents { agent.disk?.unmount() }
        // The fixture could not remove the mount points while they were mounted.
        if ProcessInfo.processInfo.environment["FERRY_KEEP_TEST_DIRS"] == nil { try? FileManager.default.removeItem(at: fleet.root) }
    }

    private func start(_ agent: Agent) throws {
        agent.starts += 1
        agent.process = try fleet.startAgent(config: agent.config, label: "\(agent.name)-\(agent.starts)", environment: Self.agentEnvironment)
    }

    // MARK: - The loop

    func run() async throws {
        let started = ContinuousClock.now
        for cycle in 1...configuration.cycles {
            if let limit = configuration.timeLimit, started.duration(to: .now) >= limit {
                report.print("chaos: time limit of \(ChaosReport.seconds(limit)) reached: \(cycle - 1) of \(configuration.cycles) cycles ran")
                break
            }
            try await runCycle(cycle)
        }
        report.finish(asked: configuration.cycles)
        if let path = configuration.reportPath {
            try report.markdown().write(toFile: path, atomically: true, encoding: .utf8)
            report.print("chaos: results written to \(path)")
        }
    }

    private func runCycle(_ cycle: Int) async throws {
        serial += 1
        let kind = pickKind()
        let version = "1.0.\(serial)"
        let fault = faults.randomElement(using: &random) ?? .killApp
        let target = agents.randomElement(using: &random) ?? agents[0]
        let delay = random.duration(0...3)
        let published = ContinuousClock.now
        let envelope = try await ChaosArtifacts.publish(fleet, serial: serial, version: version, kind: kind)
        try await expectAcknowledged(envelope, serial: serial)

        try await Task.sleep(for: delay)
        var violations = try await inject(fault, on: target)

        var outcomes: [String: ChaosReport.Outcome] = [:]
        var times: [String: Duration] = [:]
        for (agent, result) in await converge(serial: serial, version: version, kind: kind, since: published) {
            outcomes[agent.name] = result.outcome
            times[agent.name] = result.time
            violations += result.violations
            switch result.outcome {
            case .newRelease: agent.lastGood = (serial, version)
            case .rolledBack: break
            case .notConverged:
                // Counted once: the next cycle expects what the agent applies now, not a cascade of the same failure.
                if let applied = try? StateStore(path: "\(agent.stateDir)/state.json").load()[ChaosInvariants.service].applied {
                    agent.lastGood = (applied.serial, applied.version)
                }
            }
        }
        violations += await invariants.controllerChecks(acknowledged: acknowledged)
        for agent in agents { violations += await invariants.daemonProblems(agent) }
        report.record(
            ChaosReport.Cycle(
                number: cycle,
                serial: serial,
                kind: kind,
                fault: fault,
                target: fault == .killController || fault == .controllerUnreachable ? "controller" : target.name,
                faultAfter: delay,
                outcomes: outcomes,
                convergence: times,
                violations: violations
            )
        )
    }

    private func pickKind() -> ChaosReleaseKind {
        let roll = Int.random(in: 0..<10, using: &random)
        return roll < 6 ? .good : roll < 8 ? .crashing : .unhealthy
    }

    private func expectAcknowledged(_ result: (status: Int, body: String), serial: Int64) async throws {
        guard (200..<300).contains(result.status) else {
            throw HarnessError("publish of serial \(serial) answered \(result.status): \(result.body)")
        }
        acknowledged.append(serial)
    }

    // MARK: - Faults

    /// Injects `fault`; returns the violations seen at the moment of the fault (a kill must never leave a partial
    /// release `current`).
    private func inject(_ fault: ChaosFault, on agent: Agent) async throws -> [String] {
        switch fault {
        case .killAgent:
            guard let process = agent.process else { return [] }
            await Self.killAndReap(process)
            // What a kill -9 at this instant left must already be safe: `current` is a complete release.
            let found = invariants.currentIsComplete(agent)
            try await Task.sleep(for: random.duration(0.2...2))
            try start(agent)
            return found.map { "\(agent.name) right after kill -9: \($0)" }
        case .killController:
            guard let process = fleet.controller.process else { return [] }
            await Self.killAndReap(process)
            try await Task.sleep(for: random.duration(0.2...3))
            try await fleet.controller.start(port: controllerPort)
            return []
        case .killDaemon:
            // The daemon found by its command line and home, not by its pid file: in the 200-cycle run (seed 14014)
            // `pm2.pid` named 23779 while the live daemon was 23772 — a pid of no daemon, which after a wrap (pid_max
            // 32768 here) became the agent's own: the kill by the file took the agent down at cycle 122.
            for pid in DaemonDeathTests.daemons(agent.control) { kill(pid, SIGKILL) }
            return []
        case .killApp:
            let pids = (try? await agent.control.table().compactMap(\.pid)) ?? []
            if let pid = pids.randomElement(using: &random), pid > 1 { kill(pid, SIGKILL) }
            return []
        case .fillDisk:
            guard let disk = agent.disk else { return [] }
            try disk.fill()
            try await Task.sleep(for: random.duration(2...6))
            disk.free()
            return []
        case .controllerUnreachable:
            guard let pid = fleet.controller.process?.pid else { return [] }
            kill(pid, SIGSTOP)
            try await Task.sleep(for: random.duration(2...8))
            kill(pid, SIGCONT)
            return []
        }
    }

    /// SIGKILL, then waits (without blocking a thread) until the process is reaped.
    static func killAndReap(_ process: ChildProcess) async {
        guard process.signal(SIGKILL) else { return }
        let deadline = ContinuousClock.now + .seconds(20)
        while process.isRunning, ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(20)) }
    }

    // MARK: - Convergence

    /// Waits until every agent runs `serial` (good) or its last good release with `serial` failed and reported, all
    /// watched together within one bound; then the invariants must hold. Returns each agent's outcome, its time from
    /// the publish, and the violations.
    private func converge(
        serial: Int64,
        version: String,
        kind: ChaosReleaseKind,
        since published: ContinuousClock.Instant
    ) async -> [(Agent, (outcome: ChaosReport.Outcome, time: Duration, violations: [String]))] {
        let deadline = published + configuration.convergenceBound
        var results: [String: (outcome: ChaosReport.Outcome, time: Duration, violations: [String])] = [:]
        var lastProblems: [String: [String]] = [:]
        repeat {
            for agent in agents where results[agent.name] == nil {
                let settled = await invariants.settledOutcome(agent, serial: serial, version: version)
                guard let outcome = settled.outcome else {
                    lastProblems[agent.name] = settled.waitingFor
                    continue
                }
                let expected: (Int64, String) = outcome == .newRelease ? (serial, version) : agent.lastGood
                let problems = await invariants.check(agent, running: expected, failedSerial: outcome == .newRelease ? nil : serial)
                guard problems.isEmpty else {
                    lastProblems[agent.name] = problems
                    continue
                }
                var violations: [String] = []
                if kind != .good && outcome == .newRelease {
                    violations.append("\(agent.name): the \(kind.rawValue) serial \(serial) was kept as healthy")
                }
                results[agent.name] = (outcome, published.duration(to: .now), violations)
            }
            if results.count == agents.count { break }
            try? await Task.sleep(for: .milliseconds(250))
        } while ContinuousClock.now < deadline
        return agents.map { agent in
            let result =
                results[agent.name]
                ?? (
                    .notConverged, configuration.convergenceBound,
                    [
                        "\(agent.name): not converged within \(configuration.convergenceBound): "
                            + (lastProblems[agent.name] ?? ["not looked at"]).joined(separator: "; ")
                    ]
                )
            return (agent, result)
        }
    }
}
