import Foundation
import Logging
import Shared
import Supervisor
import TestSupport
import Testing

@testable import Agent

/// The process managers every end-to-end scenario runs under, so PM2 and the builtin supervisor stay interchangeable.
enum Backend: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case builtin
    case pm2

    var testDescription: String { self == .pm2 ? "real PM2" : "builtin supervisor" }

    /// The real pm2 binary: `FERRY_TEST_PM2`, which `scripts/test` and `.ci/run` set from `scripts/real-pm2`.
    static let realPM2: String? = ProcessInfo.processInfo.environment["FERRY_TEST_PM2"].flatMap { $0.isEmpty ? nil : $0 }

    /// The pm2 binary this backend drives (`nil` for the builtin supervisor). On a machine without PM2 the test case
    /// is cancelled with the reason in the log; under CI (`CI=true`) that is a failure instead, since CI must run the
    /// real-PM2 variants.
    func pm2Binary() throws -> String? {
        guard self == .pm2 else { return nil }
        if let binary = Self.realPM2 {
            guard FileManager.default.isExecutableFile(atPath: binary) else {
                throw HarnessError("FERRY_TEST_PM2=\(binary) is not an executable file; run scripts/test, which unpacks PM2")
            }
            return binary
        }
        let reason = "FERRY_TEST_PM2 is not set: run scripts/test (scripts/real-pm2 unpacks PM2 7.0.3) to run the real-PM2 variant"
        if ProcessInfo.processInfo.environment["CI"] == "true" { throw HarnessError("CI must run real PM2: \(reason)") }
        try Test.cancel(Comment(rawValue: reason))
    }
}

/// What an operator (or a reboot) can do to the process manager behind one agent's back: the drift the agent must
/// repair, apps outside its ownership it must leave alone. PM2 is driven through its own CLI, the builtin supervisor
/// through its socket and `ferry-agent supervisor`.
struct BackendControl {
    let backend: Backend
    /// The agent's pm2 binary and `PM2_HOME` (PM2 only).
    let pm2: String?
    let pm2Home: String?
    /// The agent's supervisor home (builtin only).
    let supervisorHome: String
    /// `HOME` the agent and its pm2 run with.
    let home: String
    let namespace = "ferry"

    static let quietLogger = Logger(label: "ferry.test") { _ in SwiftLogNoOpLogHandler() }

    /// The environment of a pm2 CLI call made by hand: the agent's daemon, no colours.
    var pm2Environment: [String: String] {
        var path = ["/usr/local/bin", "/usr/bin", "/bin"]
        if let pm2 { path.insert((pm2 as NSString).deletingLastPathComponent, at: 0) }
        return ["PM2_HOME": pm2Home ?? "", "HOME": home, "PATH": path.joined(separator: ":"), "NO_COLOR": "1"]
    }

    /// Runs `pm2 arguments…` against the agent's daemon and returns its stdout; throws unless it exits 0.
    ///
    /// Through the agent's own runner (swift-subprocess), not Foundation's `Process`: one test process must not mix
    /// the two child-reaping schemes (a Foundation child went unreaped here), and a pm2 call that spawns the daemon
    /// (`resurrect` after `kill`) leaves it holding the output pipes, which the runner does not wait on.
    @discardableResult
    func pm2(_ arguments: [String]) async throws -> String {
        guard let pm2 else { throw HarnessError("pm2 \(arguments.joined(separator: " ")) asked of the builtin backend") }
        let command = PM2Command(executable: pm2, arguments: arguments, environment: pm2Environment, workingDirectory: "/", timeout: .seconds(90))
        let output = try await PM2CommandRunner().run(command)
        let stdout = String(decoding: output.stdout, as: UTF8.self)
        guard output.termination.isSuccess else {
            throw HarnessError(
                "pm2 \(arguments.joined(separator: " ")) ended \(output.termination): \(stdout.suffix(1500)) \(output.stderr.suffix(1500))"
            )
        }
        return stdout
    }

    /// A client of the agent's process manager (reads tables, starts stray apps).
    func manager() throws -> any ProcessManager {
        switch backend {
        case .pm2:
            return try PM2ProcessManager(
                configuration: .init(executable: pm2 ?? "pm2", pm2Home: pm2Home, home: home, namespace: namespace, repairsDaemons: false),
                logger: Self.quietLogger,
                agentEnvironment: pm2Environment
            )
        case .builtin:
            return BuiltinProcessManager(
                configuration: .init(home: supervisorHome, executablePath: TestPaths.executable("ferry-agent"), namespace: namespace),
                logger: Self.quietLogger
            )
        }
    }

    /// Ferry's namespace of the table.
    func table() async throws -> [ManagedProcess] {
        try requireDaemon()
        return try await manager().processes()
    }

    /// Throws unless a PM2 daemon listens on the home's `rpc.sock`. A test reads the table as an observer: a `pm2 jlist`
    /// while no daemon runs spawns one, and next to the agent's own call it would spawn a second (`PM2Daemons`).
    private func requireDaemon() throws {
        guard backend == .pm2 else { return }
        let socket = "\(pm2Home ?? "")/rpc.sock"
        guard PM2Daemons.listener(of: socket) != nil else {
            throw HarnessError("no PM2 daemon listens on \(socket) (the table is not read: pm2 would spawn a daemon)")
        }
    }

    /// Every namespace of PM2's table (the builtin supervisor only has Ferry's).
    func wholeTable() async throws -> [ManagedProcess] {
        switch backend {
        case .pm2:
            try requireDaemon()
            guard let manager = try manager() as? PM2ProcessManager else { return [] }
            return try await manager.table().processes
        case .builtin:
            return try await table()
        }
    }

    /// `pm2 delete NAME` by hand; the supervisor's delete for the builtin backend.
    func deleteApp(_ name: String) async throws {
        switch backend {
        case .pm2: try await pm2(["delete", name])
        case .builtin: try await manager().delete(appNamed: name)
        }
    }

    /// `pm2 kill`: the daemon and every app it runs are gone. The builtin equivalent is `ferry-agent supervisor --stop`.
    func killDaemon() async throws {
        switch backend {
        case .pm2:
            try await pm2(["kill"])
        case .builtin:
            let result = try await Command.run(TestPaths.executable("ferry-agent"), ["supervisor", "--stop", "--home", supervisorHome])
            guard result.status == 0 else { throw HarnessError("supervisor --stop exited \(result.status): \(result.stderr)") }
        }
    }

    /// Starts `script` as an app named `name` in `namespace` behind the agent's back. The builtin supervisor has only
    /// Ferry's namespace, so it starts there whatever `namespace` says.
    func startStray(name: String, script: String, namespace: String) async throws {
        switch backend {
        case .pm2:
            try await pm2(["start", script, "--name", name, "--namespace", namespace])
        case .builtin:
            let directory = (script as NSString).deletingLastPathComponent
            let app = AppSpec(
                name: name,
                service: "stray",
                script: script,
                cwd: directory,
                args: [],
                interpreter: "node",
                interpreterArgs: [],
                instances: 1,
                execMode: .fork,
                env: [:],
                autorestart: true,
                maxRestarts: 16,
                minUptimeMilliseconds: 1000,
                restartDelayMilliseconds: 0,
                killTimeoutMilliseconds: 1600,
                maxMemoryBytes: nil,
                pm2Options: [:]
            )
            try await manager().start(app, ecosystem: "")
        }
    }

    /// A reboot: the daemon and every app die without warning, then the process manager's own boot step restores what
    /// was saved — `pm2 resurrect` from `dump.pm2`, or the supervisor daemon reloading `apps.json`.
    func rebootAndResurrect() async throws {
        switch backend {
        case .pm2:
            try await pm2(["kill"])
            try await pm2(["resurrect"])
        case .builtin:
            let pids = try await table().compactMap(\.pid)
            let daemon = SmallFile.text("\(supervisorHome)/supervisor.pid").flatMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
            if let daemon { kill(daemon, SIGKILL) }
            for pid in pids { kill(pid, SIGKILL) }
            let started = try await Command.run(TestPaths.executable("ferry-agent"), ["supervisor", "--home", supervisorHome, "--detach"])
            guard started.status == 0 else { throw HarnessError("supervisor --detach exited \(started.status): \(started.stderr)") }
        }
    }
}
