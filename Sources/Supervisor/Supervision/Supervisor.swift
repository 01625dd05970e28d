import Glibc
import Logging
import Shared

/// The builtin supervisor's app table and the lifecycle of every process in it. It lives in the daemon
/// (`ferry-agent supervisor`); `SupervisorServer` feeds it requests.
///
/// Semantics follow PM2 (see shared/pm2-reference "Behaviours observed" 11 and 12):
/// - `start` spawns `instances` processes, each `online` once spawned, each in its own process group, with exactly the
///   app's env plus `PATH`/`HOME` defaults, `NODE_APP_INSTANCE` (or `instance_var`) and `increment_var`
///   (`AppSpec.environment(instance:)`). `start` of an app that exists restarts it with the
///   new definition (restart count + 1 for instances that were running).
/// - An exit that the supervisor did not ask for is a crash. `autorestart: false` → `stopped`. Otherwise a run shorter
///   than `min_uptime` is unstable; when the consecutive unstable exits reach `max_restarts` the instance is
///   `errored` (PM2: `max_restarts: 3` → errored at restart count 2). Else it is `waiting restart` for
///   `restart_delay`, or for the `RestartBackoff` delay when that is 0, then relaunched (restart count + 1).
/// - Stopping sends SIGINT to the process group, then SIGKILL after `kill_timeout`. When a process exits, whatever
///   is left in its process group is killed too.
/// - `restart` of a running instance counts a restart; of a `stopped`/`errored` one it just starts it again with the
///   unstable count and backoff reset (PM2 keeps `restart_time` there too).
/// - `reload` in fork mode restarts every instance; in cluster mode it replaces them one at a time: start the new
///   process, wait until it has been up for `min_uptime` (at most `Configuration.reloadSettleLimit`) or has exited,
///   then stop the old one. Unlike Node's cluster module the supervisor cannot share one listening port between
///   processes: an app whose instances all bind the same port gets `EADDRINUSE` in every instance but one (and, during
///   a rolling reload, in the new process until the old one is gone: it then recovers through the crash restart).
///   Use instances with ports of their own (`increment_var: "PORT"`, as under PM2) or a port-sharing server.
/// - The CPU percent and resident memory of each process are read from `/proc` when the table is listed, and every
///   `memoryCheckInterval` (30 s, as PM2); an instance above `max_memory_restart` is restarted (restart count + 1).
///
/// The actor is split by concern: requests and the operations lock here, `Supervisor+Operations` (what each request
/// does to the table), `Supervisor+Processes` (spawning, stopping, exits, restart timers: it performs what each
/// instance's `SupervisedInstance.StateMachine` decides), `Supervisor+Resurrection` (the saved table after a daemon
/// restart), `Supervisor+Sampling` (CPU, memory, `max_memory_restart`), `Supervisor+Table` (the process table and the
/// saved table). Its stored state is internal only so those extensions reach it; nothing outside the actor touches it.
actor Supervisor {
    /// Settings of the supervisor; the daemon passes them on from its command line.
    struct Configuration: Sendable {
        /// Home directory: app logs go to `<home>/logs`, the table to `<home>/apps.json`.
        var home: String
        /// Namespace reported for every process. Default `ferry`.
        var namespace = "ferry"
        /// Rotation of the app logs. Default 10 MiB, 3 rotated files kept.
        var logRotation = LogRotation()
        /// Delays between automatic restarts when `restart_delay` is 0. Default 100 ms doubling up to 15 s.
        var restartBackoff = RestartBackoff()
        /// How often every process's memory is checked against `max_memory_restart` when nobody asks for the table.
        /// Default 30 s, as PM2 (`WORKER_INTERVAL`). CPU and memory are also read whenever the table is listed.
        var memoryCheckInterval: Duration = .seconds(30)
        /// Longest a cluster-mode reload waits for a new process before stopping the old one. Default 5 s.
        var reloadSettleLimit: Duration = Self.defaultReloadSettleLimit
        /// How long a process may take to go away after SIGKILL before the stop gives up waiting. Default 10 s.
        var killGrace: Duration = Self.defaultKillGrace

        /// The daemon's `reloadSettleLimit` (clients size their request timeouts by it).
        static let defaultReloadSettleLimit: Duration = .seconds(5)
        /// The daemon's `killGrace` (clients size their request timeouts by it).
        static let defaultKillGrace: Duration = .seconds(10)
        /// Whether the daemon lets go of its code pages at the memory check after start-up or a request that changed
        /// the table (`LoadedCode`). `FERRY_CODE_PAGES=keep` keeps them.
        var releasesCodePages = true

        init(home: String) {
            self.home = home
        }

        var logsDirectory: String { "\(home)/logs" }
        var tablePath: String { "\(home)/apps.json" }
        /// The daemon's own log (`DaemonLog`).
        var ownLogPath: String { DaemonLog.path(home: home) }
    }

    /// A slot of the table: app name and `pm_id`.
    struct InstanceKey: Hashable, Sendable {
        var app: String
        var pmId: Int
    }

    let configuration: Configuration
    let logger: Logger
    let pump: OutputPump
    let tableFile: AppTableFile
    /// Held by every request that changes the table, by resurrection and by the final stop: they never interleave
    /// (reads, exits and timers still run in between).
    let operations = AsyncLock()

    /// The apps by name.
    var apps: [String: SupervisedApp] = [:]
    /// Every live process, including ones a rolling reload is retiring.
    var children: [RunID: SupervisedChild] = [:]
    /// Tasks waiting for a process to exit, by process and waiter.
    var exitWaiters: [RunID: [UInt64: CheckedContinuation<Bool, Never>]] = [:]
    /// Armed crash-restart timers.
    var restartTimers: [InstanceKey: Task<Void, Never>] = [:]
    /// Processes above their memory limit whose restart is queued.
    var memoryRestartsPending: Set<RunID> = []
    /// Writes `apps.json` off the actor; a failed write (a full disk) is made again at every memory check until it works.
    let tableWriter: AppTableWriter
    /// Requests (and resurrection, and the final stop) under way that save the table once at their end
    /// (`savingTableAtEnd`): the saves asked for meanwhile only mark it changed.
    var savesDeferred = 0
    var tableChanged = false
    var sampler: Task<Void, Never>?
    var stopAllTask: Task<Void, Never>?
    /// Set by the final stop: nothing starts any more.
    var isShuttingDown = false
    var nextRunID: UInt64 = 1
    /// When to let go of code an idle daemon does not run again (start-up, a start, reload, restart or delete).
    var codePages = LoadedCode.Pacing(minimumInterval: LoadedCode.defaultMinimumInterval)
    /// The file the daemon's own log was last seen to be at `supervisor.log` (`DaemonLog.rotateIfNeeded`).
    var ownLog: DaemonLog.FileIdentity?
    var nextWaiterID: UInt64 = 1

    init(configuration: Configuration, pump: OutputPump, logger: Logger) {
        self.configuration = configuration
        self.pump = pump
        self.logger = logger
        self.tableFile = AppTableFile(path: configuration.tablePath)
        self.tableWriter = AppTableWriter(file: tableFile, logger: logger)
        self.ownLog = DaemonLog.identity(ofStandardErrorAt: configuration.ownLogPath)
    }

    // MARK: - Requests

    /// Carries out one request (everything except `shutdown`, which the daemon handles) and returns the answer.
    func handle(_ request: SupervisorRequest) async -> SupervisorResponse {
        do throws(SupervisorFailure) {
            switch request {
            case .ping: return .success(pid: getpid())
            case .list:
                sample()
                return .success(processes: processTable(), killTimeouts: apps.mapValues(\.spec.killTimeoutMilliseconds))
            case .start(let spec): try await start(spec)
            case .reload(let spec): try await reload(spec)
            case .delete(let name): try await delete(appNamed: name)
            case .restart(let name): try await restart(appNamed: name)
            case .shutdown: await stopAll()
            }
            codePages.ranOnceOffCode()
            return .success(processes: processTable())
        } catch {
            codePages.ranOnceOffCode()
            logger.info(
                "supervisor.request.refused",
                metadata: [
                    "supervisor.operation": "\(request.operation.rawValue)",
                    "error.code": "\(error.code.rawValue)", "error": "\(error.message)",
                ]
            )
            return .failure(error)
        }
    }

    /// Runs `body` after every earlier operation finished: requests that change the table never interleave (reads
    /// and crash handling still run in between). Refused once the daemon is shutting down.
    func exclusively(_ body: () async throws(SupervisorFailure) -> Void) async throws(SupervisorFailure) {
        try await operations.withLock { () async throws(SupervisorFailure) in
            guard !isShuttingDown else { throw SupervisorFailure(.shuttingDown, "the supervisor is stopping every app and exiting") }
            try await savingTableAtEnd(body)
        }
    }

    // MARK: - Lookups

    func instance(_ key: InstanceKey) -> SupervisedInstance? {
        apps[key.app]?.instances.first { $0.pmId == key.pmId }
    }

    func pmIds(of name: String) -> [Int] {
        apps[name]?.instances.map(\.pmId) ?? []
    }

    func allPmIds() -> Set<Int> {
        Set(apps.values.flatMap { $0.instances.map(\.pmId) })
    }

    /// Whether nothing may start in the app any more (it is being deleted, or the supervisor is stopping).
    func isClosing(_ name: String) -> Bool {
        isShuttingDown || apps[name]?.isDeleting == true
    }

    /// Ids the daemon hands out, and reuses from a saved table: PM2's `pm_id` range.
    static let pmIds = 0...Int(Int32.max)

    /// The next id after the highest in use, or 0 for an empty table (PM2 reuses ids after `delete all`). Past the top
    /// of `pmIds`, the lowest free id.
    static func nextId(after used: Set<Int>) -> Int {
        let highest = used.max() ?? -1
        if highest < pmIds.upperBound { return highest + 1 }
        var id = 0
        while used.contains(id) { id += 1 }
        return id
    }

    static func unknownApp(_ name: String) -> SupervisorFailure {
        SupervisorFailure(.unknownApp, "no app named \(name.debugDescription.prefix(120)) is supervised")
    }

    enum LogStream: String {
        case output = "out"
        case error = "err"
    }

    func logPath(_ key: InstanceKey, _ stream: LogStream) -> String {
        let index = instance(key)?.index ?? 0
        return "\(configuration.logsDirectory)/\(PM2App.fileSafeName(key.app))-\(index)-\(stream.rawValue).log"
    }
}
