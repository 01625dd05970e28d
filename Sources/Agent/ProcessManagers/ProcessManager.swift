import Shared

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Which process manager runs the apps on this instance.
enum ProcessManagerKind: String, Sendable, Codable, CaseIterable {
    /// PM2 when `pm2` is found on PATH, else the builtin supervisor.
    case auto
    case pm2
    case builtin
}

/// A process manager the agent drives: PM2 in production, the builtin supervisor where PM2 is absent.
///
/// The agent decides *what* to do (see `Planner`); a process manager only carries out one primitive at a time and
/// reports the table. Every method acts on apps Ferry owns (its namespace) and never touches anything else.
/// After any call that changes something, the caller reads `processes()` again: success of a command is not proof
/// that the app runs (PM2's `reload` exits 0 when the new code crashes at boot).
protocol ProcessManager: Sendable {
    /// The Ferry-owned processes, one element per instance.
    func processes() async throws -> [ManagedProcess]

    /// Starts `app`, which is absent. `ecosystem` is the generated ecosystem file of its service.
    func start(_ app: AppSpec, ecosystem: String) async throws

    /// Reloads `app`, which runs with the same script, interpreter, exec mode and instance count, picking up the code
    /// behind the `current` symlink and the env from `ecosystem`. Cluster mode is zero-downtime; fork mode restarts.
    func reload(_ app: AppSpec, ecosystem: String) async throws

    /// Stops and forgets the app named `name`.
    func delete(appNamed name: String) async throws

    /// Restarts an app that is errored or stopped.
    func restart(appNamed name: String) async throws

    /// Persists the table so it survives a reboot (`pm2 save`); the builtin supervisor has nothing to do.
    func save() async throws
}

/// PM2's process states (`pm2_env.status`).
enum ProcessStatus: String, Sendable, Codable, CaseIterable {
    case online
    case launching
    case stopping
    case stopped
    case errored
    case waitingRestart = "waiting restart"
    case oneLaunchStatus = "one-launch-status"

    /// Whether the instance counts as up for the health gate.
    var isOnline: Bool { self == .online }
}

/// One app instance as the process manager reports it (one element per instance, like `pm2 jlist`).
struct ManagedProcess: Sendable, Equatable, Codable {
    /// App name.
    var name: String
    /// The process manager's namespace (Ferry's own, default `ferry`).
    var namespace: String
    /// PM2's `pm_id` (the builtin supervisor numbers instances the same way).
    var pmId: Int
    /// OS pid; `nil` when not running.
    var pid: Int32?
    var status: ProcessStatus
    /// Restarts of any kind since the app was started.
    var restarts: Int
    /// Seconds since the last (re)start while running, else `nil`.
    var uptimeSeconds: Int64?
    var memoryBytes: Int64
    var cpuPercent: Double
    var execMode: ExecMode
    /// The app's total instance count.
    var instances: Int
    /// Index of this instance (`NODE_APP_INSTANCE`).
    var instanceIndex: Int
    /// Absolute script path as the process manager stored it (symlinks not resolved).
    var scriptPath: String
    /// Working directory as stored (symlinks not resolved).
    var cwd: String
    /// Interpreter as stored (`node`, `none`, a path), if known.
    var interpreter: String?
    /// Exit code of the last exit, if the instance has exited at least once (PM2's `pm2_env.exit_code`).
    var lastExitCode: Int32? = nil
}

/// An app as the agent wants it run: derived from a release, the instance env and the agent's layout.
///
/// `cwd` is `services/<svc>/current` and `script` is absolute below it, so a reload after `current` is switched
/// runs the new release (the symlink is re-resolved at every spawn).
struct AppSpec: Sendable, Equatable, Codable {
    var name: String
    /// Service the app belongs to.
    var service: String
    /// Absolute script path below `cwd`.
    var script: String
    /// Absolute working directory (the service's `current` symlink).
    var cwd: String
    var args: [String]
    /// `node` for `.js`/`.mjs`/`.cjs` scripts unless the release says otherwise; `nil` runs the script directly.
    var interpreter: String?
    var interpreterArgs: [String]
    /// Resolved instance count (≥ 1).
    var instances: Int
    var execMode: ExecMode
    /// Fully merged environment: release env < app env < instance env file. Never reported.
    var env: [String: String]
    var autorestart: Bool
    /// Crash restarts (within `minUptime` of the start) before the app is `errored`.
    var maxRestarts: Int
    /// A run shorter than this counts as unstable (milliseconds).
    var minUptimeMilliseconds: Int64
    /// Delay before an automatic restart (milliseconds); 0 = immediate, with exponential backoff on repeated crashes.
    var restartDelayMilliseconds: Int64
    /// Time between SIGINT and SIGKILL when stopping (milliseconds).
    var killTimeoutMilliseconds: Int64
    /// Restart when resident memory exceeds this many bytes.
    var maxMemoryBytes: Int64?
    /// The release's PM2 options exactly as signed, for process managers that pass them through (PM2).
    var pm2Options: [String: JSONValue]
}
