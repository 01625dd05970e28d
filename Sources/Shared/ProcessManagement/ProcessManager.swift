/// A process manager the agent drives: PM2 in production (`PM2ProcessManager`), the builtin supervisor where PM2 is
/// absent (`BuiltinProcessManager`, in the Supervisor target).
///
/// The agent decides *what* to do (see `Planner`); a process manager only carries out one primitive at a time and
/// reports the table. Every method acts on apps Ferry owns (its namespace) and never touches anything else.
/// After any call that changes something, the caller reads `processes()` again: success of a command is not proof
/// that the app runs (PM2's `reload` exits 0 when the new code crashes at boot).
package protocol ProcessManager: Sendable {
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

    /// `processes` with what the table leaves out about how each instance last ended filled in, as far as the process
    /// manager recorded it elsewhere (PM2 writes the signal that ended an instance to its daemon log only). Called
    /// when a release fails, never on the polling path; best effort, never throws.
    func explainingExits(_ processes: [ManagedProcess]) async -> [ManagedProcess]

    /// Whether a reload leaves the variables a new env no longer names in the process (PM2 merges the new env into the
    /// one it stored: `Utility.extend`), and likewise the options a new ecosystem entry no longer sets (PM2 merges the
    /// new app config into the stored one: `Utility.extendMix`), so that only a fresh start (delete + start) removes them.
    var reloadKeepsRemovedEnvironment: Bool { get }

    /// Whether the process manager restarts apps on their `cron_restart` schedule (PM2; the builtin supervisor has no
    /// schedules, so every restart it counts is a crash or the agent's).
    var restartsOnSchedules: Bool { get }

    /// Whether apps whose names differ only in characters made dashes write the same log files (PM2 names them after
    /// `PM2App.logName`; the builtin supervisor's names never collide): such a pair is refused across services.
    var logFilesFollowLogNames: Bool { get }

    /// Why this process manager cannot run `app` as it is, checked before anything is stopped for it (a replace deletes
    /// the running app before starting the new one); `nil` when it can. `start` and `reload` refuse the same apps.
    func refusal(toRun app: AppSpec) -> (any Error)?

    /// What the process manager repaired on its own since last asked (PM2: a second daemon for its home stopped), one
    /// sentence each, for the report. Each is handed out once.
    func takeNotices() -> [String]
}

extension ProcessManager {
    /// The table says all there is (the builtin supervisor reports exit codes and signals itself).
    package func explainingExits(_ processes: [ManagedProcess]) async -> [ManagedProcess] { processes }

    /// Every app the release validation passed can run.
    package func refusal(toRun app: AppSpec) -> (any Error)? { nil }

    /// No schedules.
    package var restartsOnSchedules: Bool { false }

    /// Nothing is repaired behind the agent's back.
    package func takeNotices() -> [String] { [] }

    /// A reload sets the new env whole (the builtin supervisor spawns with the spec's env).
    package var reloadKeepsRemovedEnvironment: Bool { false }

    /// Log files named so that two names never share one (`PM2App.fileSafeName`).
    package var logFilesFollowLogNames: Bool { false }
}
