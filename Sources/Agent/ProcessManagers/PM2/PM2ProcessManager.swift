import Glibc
import Logging
import Shared
import Supervisor
import Synchronization

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The production process manager: drives the `pm2` CLI the way PM2 7 really behaves (its captures are in
/// Tests/AgentTests/Fixtures/pm2/captures).
///
/// - Every call runs with a minimal, explicit environment (`PM2Invocation`) and is bounded by
///   `Configuration.commandTimeout`; a wedged pm2 is killed with its process group and reported as
///   `PM2Error.unresponsive`, never waited on.
/// - Ferry owns the apps in its namespace only. Because PM2 addresses apps by name across *all* namespaces (and falls
///   back to a namespace of that name when no app has it), every mutating call first reads the table and refuses to
///   act when another namespace holds the same name (`PM2Error.foreignNameClash`), and never sends a delete or restart
///   for a name that is not in Ferry's namespace.
/// - A command exiting 0 proves nothing about the app (`pm2 reload` exits 0 while the new code crashes at boot): the
///   caller reads `processes()` after acting (`AppAction.perform`) and judges it with `ProcessTableCheck`.
/// - Exactly one daemon runs for the home: after every `jlist`, after a failed command and while a command hangs, a
///   God Daemon that holds neither socket (spawned by a pm2 call that overlapped another while no daemon ran) is
///   stopped with its apps (`PM2Daemons`), and the reconciler reports it (`takeNotices()`).
struct PM2ProcessManager: ProcessManager {
    /// Where pm2 is and how it is run. Filled from the agent config (`pm2` section) and `ferry-agent enroll --pm2 PATH
    /// --pm2-home DIR`.
    struct Configuration: Sendable, Equatable {
        /// The pm2 binary: a path, or a name looked up on the agent's `PATH`, then in `/usr/local/bin:/usr/bin:/bin`.
        /// Default `pm2`. (`--pm2 PATH`)
        var executable: String
        /// `PM2_HOME` of the daemon Ferry drives. Default `nil`: `$HOME/.pm2` of the agent user, PM2's own default, so
        /// an operator running `pm2 ls` as that user sees the same table. (`--pm2-home DIR`)
        var pm2Home: String?
        /// `HOME` given to pm2. Default `nil`: the agent's `HOME`, else the passwd entry of its uid.
        var home: String?
        /// `PATH` given to pm2 (and so to the daemon it spawns). Default `nil`: the directory of the pm2 binary, the
        /// directory of `node` on the agent's `PATH`, then `/usr/local/bin:/usr/bin:/bin`.
        var path: String?
        /// The PM2 namespace Ferry's apps carry; apps in any other namespace are never touched. Default `ferry`.
        var namespace: String
        /// Bound on every pm2 call; on expiry the call's process group is killed. Default 60 s (a `wait_ready` app
        /// holds `pm2 start`/`reload` until it is ready, so keep this above the apps' `listen_timeout`).
        var commandTimeout: Duration
        /// Whether a second God Daemon found for the home is stopped (`PM2Daemons`), and the app processes a dead
        /// daemon left outside any table (`PM2Leftovers`). Default `true`; an observer that must not change what it
        /// looks at (a test reading the table) turns it off.
        var repairsDaemons: Bool
        /// Whether reading the table may start a daemon (`pm2 jlist` starts one when none runs). Default `true`; a
        /// command that only looks (`ferry-agent status`) turns it off: run by an operator (as root, or outside the
        /// agent's unit) it would start a daemon of its own that resurrects every saved app.
        var startsDaemon: Bool = true
        /// Whether the table is read from the daemon's RPC socket when one answers there (`PM2RPC`), not from
        /// `pm2 jlist`. Default `true`; tests that compare the two turn it off.
        var readsTableFromDaemon: Bool
        /// After a table read from the daemon's socket, the home's God Daemons are counted (a scan of `/proc`, 12.6 %
        /// of an idle agent's CPU samples once `pm2 jlist` was gone) at most this often. A second daemon only
        /// appears when a pm2 command starts one, and every pm2 command the agent runs is followed by a count; this
        /// bounds how long one started by someone else's command runs unnoticed. Default 30 s.
        var strayCheckInterval: Duration
        /// How the apps' log files are rotated (`PM2LogRotation`); `nil`: never (`logMaxBytes: 0`, rotation left to
        /// `pm2-logrotate`). Default 10 MiB, 3 kept, as the builtin supervisor's.
        var logRotation: LogRotation?
        /// How often the log files' sizes are checked (on a table read). Default 60 s.
        var logCheckInterval: Duration

        init(
            executable: String = "pm2",
            pm2Home: String? = nil,
            home: String? = nil,
            path: String? = nil,
            namespace: String = "ferry",
            commandTimeout: Duration = .seconds(60),
            repairsDaemons: Bool = true,
            readsTableFromDaemon: Bool = true,
            strayCheckInterval: Duration = .seconds(30),
            logRotation: LogRotation? = LogRotation(),
            logCheckInterval: Duration = .seconds(60)
        ) {
            self.executable = executable
            self.pm2Home = pm2Home
            self.home = home
            self.path = path
            self.namespace = namespace
            self.commandTimeout = commandTimeout
            self.repairsDaemons = repairsDaemons
            self.readsTableFromDaemon = readsTableFromDaemon
            self.strayCheckInterval = strayCheckInterval
            self.logRotation = logRotation
            self.logCheckInterval = logCheckInterval
        }
    }

    let configuration: Configuration
    /// The resolved binary and environment every command uses.
    let invocation: PM2Invocation
    let runner: PM2CommandRunner
    private let logger: Logger
    private let nowMilliseconds: @Sendable () -> Int64
    private let monotonicNow: @Sendable () -> ContinuousClock.Instant
    /// What this manager repaired on its own since the reconciler last asked (shared by its copies).
    private let notices = Notices()
    /// The God Daemon that answered the last census of leftovers (shared by its copies).
    private let censusDaemon = CensusDaemon()
    /// Why the daemon's socket last gave no table (shared by its copies).
    private let socketFailure = SocketFailure()
    /// When the God Daemons were last counted (shared by its copies).
    private let strayCount = StrayCount()
    /// When the apps' log files were last checked (shared by its copies).
    private let logSchedule = PM2LogRotation.Schedule()
    /// Exits already read from the daemon log (shared by its copies).
    private let explainedExits = ExplainedExits()

    /// Resolves the pm2 binary and environment once (see `PM2Invocation.resolve`).
    ///
    /// - Parameters:
    ///   - agentEnvironment: the agent's environment, used only to find `pm2`, `node` and the home directory.
    ///   - nowMilliseconds: wall-clock time in epoch milliseconds (for uptimes; PM2 stores start times that way).
    ///   - monotonicNow: the clock intervals are measured on (`strayCheckInterval`).
    /// - Throws: `PM2Error.executableNotFound`, `PM2Error.homeUnknown`.
    init(
        configuration: Configuration,
        logger: Logger,
        agentEnvironment: [String: String] = ProcessInfo.processInfo.environment,
        runner: PM2CommandRunner = PM2CommandRunner(),
        nowMilliseconds: @escaping @Sendable () -> Int64 = { Int64(Date().timeIntervalSince1970 * 1000) },
        monotonicNow: @escaping @Sendable () -> ContinuousClock.Instant = { .now }
    ) throws(PM2Error) {
        self.configuration = configuration
        self.invocation = try PM2Invocation.resolve(configuration, agentEnvironment: agentEnvironment)
        self.runner = runner
        self.logger = logger
        self.nowMilliseconds = nowMilliseconds
        self.monotonicNow = monotonicNow
    }

    /// The exact command an operation runs (argv, environment, working directory, timeout).
    func command(for operation: PM2Command.Operation) -> PM2Command {
        invocation.command(operation)
    }

    /// The whole table, every namespace: from the daemon's RPC socket when it answers there (`PM2RPC`: the array
    /// `pm2 jlist` would print, without starting a Node.js process), else from `pm2 jlist`, which also starts a daemon
    /// when none runs.
    func table() async throws(PM2Error) -> PM2ProcessTable {
        if let elements = await tableFromDaemon() {
            let table = try PM2ProcessTable(elements: elements, nowMilliseconds: nowMilliseconds())
            if strayCount.isDue(now: monotonicNow(), interval: configuration.strayCheckInterval) { await stopStrayDaemons() }
            return table
        }
        if !configuration.startsDaemon, let home = invocation.environment["PM2_HOME"], !Self.daemonListens(socketPath: "\(home)/rpc.sock") {
            throw .notRunning(home: home)
        }
        let output = try await execute(.list)
        return try PM2ProcessTable(jlistOutput: output.stdout, nowMilliseconds: nowMilliseconds())
    }

    /// Whether a daemon listens at `socketPath` (a connect is answered); a failure other than "nothing there" counts as
    /// listening, and is left to the pm2 command to report.
    private static func daemonListens(socketPath: String) -> Bool {
        switch UnixSocket.connectReportingErrno(to: socketPath, timeout: .seconds(2)) {
        case .success(let fd):
            close(fd)
            return true
        case .failure(let error):
            return !(error.code == ENOENT || error.code == ECONNREFUSED)
        }
    }

    /// The table's elements as the daemon answers `getMonitorData` on `$PM2_HOME/rpc.sock`; `nil` when no daemon
    /// listens there, or when it did not answer as PM2 does (logged; `pm2 jlist` is asked then).
    private func tableFromDaemon() async -> [JSONValue]? {
        guard configuration.readsTableFromDaemon, let home = invocation.environment["PM2_HOME"] else { return nil }
        do {
            let elements = try await PM2RPC.monitorData(
                socketPath: "\(home)/rpc.sock",
                timeout: min(configuration.commandTimeout, PM2RPC.defaultTimeout),
                limit: runner.stdoutLimit
            )
            _ = socketFailure.isNew(nil)
            return elements
        } catch .noDaemon {
            return nil
        } catch {
            logger.log(
                level: socketFailure.isNew("\(error)") ? .info : .debug,
                "pm2 daemon's rpc socket gave no table, asking pm2 jlist",
                metadata: ["pm2.home": "\(home)", "pm2.error": "\(error)"]
            )
            return nil
        }
    }

    // MARK: - ProcessManager

    /// PM2's reload merges the env into the one it stored (`God.reloadProcessId`: `Utility.extend(pm2_env.env, env)`,
    /// checked against PM2 7.0.3): a variable a release or the instance env file no longer names stays in the process.
    var reloadKeepsRemovedEnvironment: Bool { true }

    /// `cron_restart` (`God.registerCron`).
    var restartsOnSchedules: Bool { true }

    /// `$PM2_HOME/logs/<PM2App.logName>-out.log`: `api_v1` and `api-v1` share it.
    var logFilesFollowLogNames: Bool { true }

    func processes() async throws(PM2Error) -> [ManagedProcess] {
        let table = try await table()
        await stopLeftoversOfADeadDaemon(listed: Set(table.processes.compactMap(\.pid)))
        let owned = table.owned(by: configuration.namespace)
        await rotateLogsIfDue(owned)
        return owned
    }

    /// Rotates the log files of `processes` that grew past the limit (`PM2LogRotation`), at most every
    /// `logCheckInterval`, and has PM2 reopen them. Never throws: a failure is logged, and a reopen that failed is asked
    /// for again at the next check (PM2 writes on to the renamed file meanwhile, so nothing is lost).
    private func rotateLogsIfDue(_ processes: [ManagedProcess]) async {
        guard configuration.repairsDaemons, let rotation = configuration.logRotation,
            logSchedule.begin(now: monotonicNow(), interval: configuration.logCheckInterval)
        else { return }
        defer { logSchedule.end() }
        let paths = Set(processes.flatMap { [$0.outLogPath, $0.errLogPath].compactMap { $0 } })
        let outcome = PM2LogRotation.rotate(paths, rotation: rotation)
        for failure in outcome.failures {
            logger.warning("An app log file past its size limit could not be rotated", metadata: ["error.message": "\(failure)"])
        }
        if outcome.rotatedAny {
            logger.info(
                "Rotated app log files past their size limit",
                metadata: [
                    "log.files": "\((outcome.renamed + outcome.emptied).joined(separator: ", "))",
                    "log.max_bytes": "\(rotation.maximumFileBytes)", "log.kept": "\(rotation.keptFiles)",
                ]
            )
        }
        guard !outcome.renamed.isEmpty || logSchedule.reloadPending else { return }
        do {
            try await execute(.reloadLogs)
            logSchedule.reloadPending = false
        } catch {
            logSchedule.reloadPending = true
            logger.warning(
                "pm2 reloadLogs failed: PM2 writes on to the rotated log files until it reopens them (asked again at the next check)",
                metadata: ["error.message": "\(error)"]
            )
        }
    }

    /// When the daemon that answers is not the one the last census saw (the agent just started, or a daemon died and
    /// another took over): stops the app processes of this home that no table lists (`PM2Leftovers`), and notes them.
    ///
    /// This runs after every `jlist`, so it only `lstat`s `rpc.sock` then: a new daemon binds a new socket file. The
    /// daemon is asked who it is (`SO_PEERCRED`) and `/proc` is searched only when that file changed.
    private func stopLeftoversOfADeadDaemon(listed: Set<Int32>) async {
        guard configuration.repairsDaemons, let home = invocation.environment["PM2_HOME"] else { return }
        let socket = "\(home)/rpc.sock"
        guard let file = SocketFile(path: socket), censusDaemon.isNew(file), let daemon = PM2Daemons.listener(of: socket) else { return }
        censusDaemon.record(file)
        let found = PM2Leftovers.find(home: home, namespace: configuration.namespace, listed: listed, daemon: daemon)
        guard !found.isEmpty else { return }
        let stopped = await ProcessLedger.stop(found) { _ in .milliseconds(1600) }
        for leftover in stopped {
            logger.warning(
                "stopped an app process a dead PM2 daemon left outside any table",
                metadata: ["ferry.app": "\(leftover.entry.name)", "process.pid": "\(leftover.entry.pid)", "pm2.daemon": "\(daemon)"]
            )
            notices.add(
                "\(leftover.entry.name) (pid \(leftover.entry.pid)) was still running, started by a PM2 daemon that died before any table listed it: stopped it"
                    + (leftover.stopped ? "" : ", but it has not exited yet")
            )
        }
    }

    func start(_ app: AppSpec, ecosystem: String) async throws(PM2Error) {
        try Self.requireAbsolute(ecosystem)
        if let refusal = Self.refusal(app, home: invocation.environment["PM2_HOME"]) { throw refusal }
        try checkLogFiles(of: app, in: try await tableCheckedForClash(app.name))
        let file = try file(for: app, ecosystem: ecosystem)
        defer { removeSingleAppFile(file, ecosystem: ecosystem) }
        try await execute(.start(app: app.name, ecosystem: file), timeout: timeout(for: app))
    }

    func reload(_ app: AppSpec, ecosystem: String) async throws(PM2Error) {
        try Self.requireAbsolute(ecosystem)
        if let refusal = Self.refusal(app, home: invocation.environment["PM2_HOME"]) { throw refusal }
        let table = try await tableCheckedForClash(app.name)
        try checkLogFiles(of: app, in: table)
        // The instances running now are stopped one after another too (a smaller count stops the surplus).
        let running = table.owned(by: configuration.namespace).filter { $0.name == app.name }.count
        let file = try file(for: app, ecosystem: ecosystem)
        defer { removeSingleAppFile(file, ecosystem: ecosystem) }
        try await execute(
            .reload(app: app.name, ecosystem: file),
            timeout: timeout(for: app, instances: max(app.instances, running) + 1)
        )
    }

    /// How long pm2 may take over a call that stops and starts `instances` processes of an app: `base`, plus for each
    /// its `kill_timeout` (PM2 waits that long for an old process to exit), its `listen_timeout` (how long it waits for
    /// a new one to listen, or to be ready with `wait_ready`) and 5 s. PM2 handles two at a time, one at a time when
    /// there are at most two (`API._operate`), so this is an upper bound. A fork app with 2 instances and a 45 s drain
    /// takes about 90 s to reload: the fixed `pm2TimeoutSeconds` (60) killed pm2 mid-reload, the release failed, and its
    /// rollback's reload timed out the same way. Numbers beyond what a release may give count as those limits.
    static func timeout(instances: Int, killTimeoutMilliseconds: Int64, listenTimeoutMilliseconds: Int64, base: Duration) -> Duration {
        let step =
            PM2App.waitedTimeout(milliseconds: killTimeoutMilliseconds) + PM2App.waitedTimeout(milliseconds: listenTimeoutMilliseconds) + .seconds(5)
        return PM2App.callTimeout(base: base, perInstance: step, instances: instances)
    }

    /// The bound of a call over `app` (its instances, unless the caller counts more).
    private func timeout(for app: AppSpec, instances: Int? = nil) -> Duration {
        let timing = PM2AppTiming(app)
        return Self.timeout(
            instances: instances ?? app.instances,
            killTimeoutMilliseconds: timing.kill,
            listenTimeoutMilliseconds: timing.listen,
            base: configuration.commandTimeout
        )
    }

    /// The bound of a call that names the app only (delete, restart): its instances in `table`, with the timeouts PM2
    /// holds for it there (PM2's defaults when it holds none).
    private func timeout(forAppNamed name: String, in table: PM2ProcessTable) -> Duration {
        let timing = table.timings[.init(namespace: configuration.namespace, name: name)] ?? .pm2Defaults
        return Self.timeout(
            instances: table.owned(by: configuration.namespace).filter { $0.name == name }.count,
            killTimeoutMilliseconds: timing.kill,
            listenTimeoutMilliseconds: timing.listen,
            base: configuration.commandTimeout
        )
    }

    /// The file pm2 reads `app` from: the service's ecosystem file when `--only` can select the app by name, else a
    /// file holding only that app (`<dir>/apps/<file-safe name>.json`, mode 0600: it holds the app's env), written
    /// from the same spec in the same form, for the one call (`removeSingleAppFile`).
    func file(for app: AppSpec, ecosystem: String) throws(PM2Error) -> String {
        guard !PM2Command.Operation.canSelect(app.name) else { return ecosystem }
        let directory = String(ecosystem[..<(ecosystem.lastIndex(of: "/") ?? ecosystem.endIndex)]) + "/" + AgentLayout.singleAppFilesDirName
        let path = "\(directory)/\(PM2App.fileSafeName(app.name)).json"
        if mkdir(directory, 0o700) != 0, errno != EEXIST {
            throw .ecosystemNotWritten(path: path, reason: "mkdir \(directory): \(String(cString: strerror(errno)))")
        }
        do {
            try AtomicFile.write(EcosystemWriter.render(apps: [app], namespace: configuration.namespace), to: path, mode: 0o600)
        } catch {
            throw .ecosystemNotWritten(path: path, reason: "\(error)")
        }
        return path
    }

    /// Removes the file `file(for:ecosystem:)` wrote for one app once pm2 is done with it: it holds the app's whole env,
    /// instance secrets included, and nothing reads it again (the next start or reload writes it afresh). Kept, it
    /// outlived the app, the service and the secret's rotation. The service's own ecosystem file stays.
    private func removeSingleAppFile(_ file: String, ecosystem: String) {
        guard file != ecosystem else { return }
        unlink(file)
    }

    /// Deletes the app if Ferry's namespace has it; does nothing when it is already gone (PM2 would otherwise fall
    /// back to deleting a *namespace* of that name, `delete-namespace`).
    func delete(appNamed name: String) async throws(PM2Error) {
        let table = try await tableCheckedForClash(name)
        guard table.owned(by: configuration.namespace).contains(where: { $0.name == name }) else {
            logger.debug("pm2 delete skipped, app absent", metadata: ["pm2.app": "\(name)"])
            return
        }
        let ids = try idsNaming(name, in: table)
        try await execute(ids.map { .deleteIds(app: name, ids: $0) } ?? .delete(app: name), timeout: timeout(forAppNamed: name, in: table))
    }

    /// - Throws: `PM2Error.appNotFound` when Ferry's namespace has no such app.
    func restart(appNamed name: String) async throws(PM2Error) {
        let table = try await tableCheckedForClash(name)
        guard table.owned(by: configuration.namespace).contains(where: { $0.name == name }) else {
            throw .appNotFound(app: name, namespace: configuration.namespace)
        }
        let ids = try idsNaming(name, in: table)
        try await execute(ids.map { .restartIds(app: name, ids: $0) } ?? .restart(app: name), timeout: timeout(forAppNamed: name, in: table))
    }

    /// The pm_ids to name the app `name` by, `nil` when its name does (`PM2Command.Operation.canName`). PM2 takes an
    /// argument of digits for an app or a namespace of that name before an id: an id that one uses cannot be sent.
    private func idsNaming(_ name: String, in table: PM2ProcessTable) throws(PM2Error) -> [Int]? {
        guard !PM2Command.Operation.canName(name) else { return nil }
        let ids = table.owned(by: configuration.namespace).filter { $0.name == name }.map(\.pmId)
        let taken = Set(table.processes.flatMap { [$0.name, $0.namespace] })
        if let id = ids.first(where: { taken.contains(String($0)) }) {
            throw .unaddressable(app: name, reason: "PM2 reads it otherwise, and its pm_id \(id) is also the name of an app or a namespace")
        }
        return ids
    }

    func save() async throws(PM2Error) {
        try await execute(.save)
    }

    func takeNotices() -> [String] {
        notices.take()
    }

    /// Fills in the signal that ended instances `jlist` shows with exit code 0 or none: PM2 records only the code in
    /// its table (`code || 0`: 0 after a signal, as after a clean exit) and writes the signal to its daemon log,
    /// `$PM2_HOME/pm2.log`, whose last 64 KiB are read (`PM2DaemonLog`). An `autorestart: false` job the OOM killer
    /// ended otherwise passed the health gate as one that ran to completion.
    ///
    /// An exit read once is kept (`ExplainedExits`, by instance, restart count and status): a finished job is not read
    /// again at every pass and gate look, and a job the OOM killer ended stays so once its line has left the log's tail
    /// (it read as a clean exit again then, and its service as healthy).
    func explainingExits(_ processes: [ManagedProcess]) async -> [ManagedProcess] {
        let exited: Set<ProcessStatus> = [.errored, .stopped, .waitingRestart]
        func unexplained(_ process: ManagedProcess) -> Bool {
            (process.lastExitCode ?? 0) == 0 && process.lastExitSignal == nil && exited.contains(process.status)
        }
        guard processes.contains(where: unexplained), let home = invocation.environment["PM2_HOME"] else { return processes }
        let known = explainedExits
        // A new daemon numbers its apps from 0 and their restarts from 0 again: what the old one's log said is forgotten.
        known.follow(daemon: SocketFile(path: "\(home)/rpc.sock"))
        let unread = processes.contains { unexplained($0) && known.exit(of: $0) == nil }
        let log = unread ? SmallFile.tail("\(home)/pm2.log", bytes: 64 * 1024) : ""
        return processes.map { process in
            guard unexplained(process) else { return process }
            let exit: PM2DaemonLog.Exit
            if let kept = known.exit(of: process) {
                exit = kept
            } else if let read = PM2DaemonLog.lastExit(of: process.name, pmId: process.pmId, in: log) {
                known.record(read, of: process)
                exit = read
            } else {
                return process
            }
            var explained = process
            explained.lastExitCode = exit.code
            explained.lastExitSignal = exit.signal
            return explained
        }
    }

    // MARK: - Running pm2

    /// Refuses an app that would write, merged as PM2 writes a fork-mode app's logs by default, the log files of an app of
    /// another namespace (`my_api` and an operator's own `my-api`): the agent would rotate (with `logKeep: 0`, empty) that
    /// app's log, and quote its lines in a failure's diagnosis. Ferry's own services are checked at install
    /// (`Reconciler.appNameClash`).
    private func checkLogFiles(of app: AppSpec, in table: PM2ProcessTable) throws(PM2Error) {
        guard app.execMode == .fork || app.pm2Options["merge_logs"] == .bool(true), let home = invocation.environment["PM2_HOME"] else { return }
        if let clash = table.foreignLogFile(of: app.name, besides: configuration.namespace, logsDirectory: "\(home)/logs") {
            throw .foreignLogClash(app: app.name, other: clash.app, namespace: clash.namespace, file: clash.file)
        }
    }

    /// Reads the table and refuses names PM2 would apply beyond Ferry's namespace.
    private func tableCheckedForClash(_ name: String) async throws(PM2Error) -> PM2ProcessTable {
        let table = try await table()
        let foreign = table.foreignNamespaces(holding: name, besides: configuration.namespace)
        guard foreign.isEmpty else {
            throw .foreignNameClash(app: name, namespaces: foreign, ferryNamespace: configuration.namespace)
        }
        return table
    }

    @discardableResult
    private func execute(_ operation: PM2Command.Operation, timeout: Duration? = nil) async throws(PM2Error) -> PM2CommandRunner.Output {
        let command = invocation.command(operation, timeout: timeout)
        let started = ContinuousClock.now
        let output: PM2CommandRunner.Output
        // A call that hangs may be waiting for a daemon that will never be ready (see `PM2Daemons`).
        let watchdog = Task { [self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(5))
                guard !Task.isCancelled else { return }
                await stopStrayDaemons()
            }
        }
        defer { watchdog.cancel() }
        do {
            output = try await runner.run(command)
        } catch {
            logger.info("pm2 command did not complete", metadata: ["pm2.command": "\(command)", "pm2.error": "\(error)"])
            await stopStrayDaemons()
            throw error
        }
        if case .list = operation { await stopStrayDaemons() }
        logger.debug(
            "pm2 command finished",
            metadata: [
                "pm2.command": "\(command)",
                "pm2.status": "\(output.termination)",
                "pm2.duration": "\(ContinuousClock.now - started)",
            ]
        )
        guard output.termination.isSuccess else {
            if operation != .list { await stopStrayDaemons() }
            throw .commandFailed(
                command: command.description,
                status: output.termination.description,
                stderr: Self.readable(Array(output.stderr.utf8)),
                stdout: Self.readable(output.stdout)
            )
        }
        return output
    }

    /// Stops the God Daemons of the home that no pm2 call reaches, with their apps, and notes it for the report.
    private func stopStrayDaemons() async {
        guard configuration.repairsDaemons, let home = invocation.environment["PM2_HOME"] else { return }
        strayCount.record(monotonicNow())
        switch PM2Daemons.verdict(home: home) {
        case .fine:
            return
        case .strays(let strays, let keep):
            for stray in strays {
                let processes = await PM2Daemons.stop(stray)
                let note =
                    "a second PM2 daemon (pid \(stray)) ran for \(home) outside any table: stopped it"
                    + (processes > 0 ? " and the \(processes) process(es) it ran" : "") + "; pid \(keep) is the daemon"
                logger.warning("stopped a second PM2 daemon", metadata: ["pm2.daemon": "\(stray)", "pm2.kept": "\(keep)", "pm2.home": "\(home)"])
                notices.add(note)
            }
        case .split(let daemons):
            var processes = 0
            for daemon in daemons { processes += await PM2Daemons.stop(daemon) }
            let pids = daemons.map(String.init).joined(separator: ", ")
            logger.warning("stopped PM2 daemons that split its sockets", metadata: ["pm2.daemons": "\(pids)", "pm2.home": "\(home)"])
            notices.add(
                "PM2's sockets in \(home) answered from two daemons (pids \(pids)): stopped them and the \(processes) process(es) they ran; the next pm2 call starts one daemon"
            )
        }
    }

    /// One socket file as `lstat` sees it: a daemon that binds the path anew makes a new file (a new inode, or at
    /// least a new change time when the inode number is reused).
    struct SocketFile: Sendable, Equatable {
        var device: UInt64
        var inode: UInt64
        var changed: timespec

        init?(path: String) {
            var status = stat()
            guard lstat(path, &status) == 0 else { return nil }
            device = UInt64(status.st_dev)
            inode = UInt64(status.st_ino)
            changed = status.st_ctim
        }

        static func == (lhs: Self, rhs: Self) -> Bool {
            lhs.device == rhs.device && lhs.inode == rhs.inode && lhs.changed.tv_sec == rhs.changed.tv_sec
                && lhs.changed.tv_nsec == rhs.changed.tv_nsec
        }
    }

    /// The daemon's socket file at the last census.
    private final class CensusDaemon: Sendable {
        private let seen = Mutex<SocketFile?>(nil)

        func isNew(_ file: SocketFile) -> Bool { seen.withLock { $0 != file } }

        func record(_ file: SocketFile) { seen.withLock { $0 = file } }
    }

    /// The last reason the daemon's socket gave no table: logged at `info` when it changes, at `debug` while it
    /// repeats (a table is read every few seconds).
    private final class SocketFailure: Sendable {
        private let last = Mutex<String?>(nil)

        /// Records `reason` (`nil`: the socket answered); whether it differs from the one before.
        func isNew(_ reason: String?) -> Bool {
            last.withLock { last in
                defer { last = reason }
                return last != reason
            }
        }
    }

    /// When the God Daemons were last counted.
    final class StrayCount: Sendable {
        private let last = Mutex<ContinuousClock.Instant?>(nil)

        func record(_ now: ContinuousClock.Instant) { last.withLock { $0 = now } }

        /// Whether a count is due at `now`: none yet, or `interval` gone by since the last one.
        func isDue(now: ContinuousClock.Instant, interval: Duration) -> Bool {
            last.withLock { last in last.map { now - $0 >= interval } ?? true }
        }
    }

    /// Exits read from the daemon log, by instance (name, pm_id), restart count and status: the same key is the same
    /// exit, under the same daemon (`follow`). Bounded: past 1024 instances it starts over (read again, once each).
    final class ExplainedExits: Sendable {
        private struct Key: Hashable {
            var name: String
            var pmId: Int
            var restarts: Int
            var status: ProcessStatus
        }

        /// The exits, and the daemon's socket file when they were read: one lock, so an exit is never kept under a daemon
        /// that took over between the two.
        private let known = Mutex<(daemon: SocketFile?, exits: [Key: PM2DaemonLog.Exit])>((nil, [:]))

        /// Forgets every exit when another daemon answers (`pm2 kill`, a crash and a new daemon): it hands out the same
        /// pm_ids and restart counts from 0 again, and a job of the new daemon that ended cleanly read as the old
        /// one's OOM kill (its service unhealthy) for as long as the key matched.
        func follow(daemon file: SocketFile?) {
            guard let file else { return }
            known.withLock { known in
                if let daemon = known.daemon, daemon != file { known.exits.removeAll() }
                known.daemon = file
            }
        }

        private static func key(_ process: ManagedProcess) -> Key {
            Key(name: process.name, pmId: process.pmId, restarts: process.restarts, status: process.status)
        }

        func exit(of process: ManagedProcess) -> PM2DaemonLog.Exit? { known.withLock { $0.exits[Self.key(process)] } }

        func record(_ exit: PM2DaemonLog.Exit, of process: ManagedProcess) {
            known.withLock { known in
                if known.exits.count >= 1024 { known.exits.removeAll() }
                known.exits[Self.key(process)] = exit
            }
        }
    }

    /// Notes kept between passes.
    private final class Notices: Sendable {
        private let notes = Mutex<[String]>([])

        func add(_ note: String) { notes.withLock { $0.append(note) } }

        func take() -> [String] {
            notes.withLock { notes in
                defer { notes = [] }
                return notes
            }
        }
    }

    /// Refuses an app whose env (the release's, the app's and the instance env file's, merged) names a field of PM2's
    /// process entry that takes the app out of Ferry's reach or changes what runs (`PM2App.envKeysMovingTheApp`):
    /// checked at publish too (all of them), but an instance env file or a release signed before that check reaches
    /// here unchecked.
    /// - Parameter home: the `PM2_HOME` of the daemon that runs the app: an env that names that same home (an instance
    ///   env file written before the variable was refused) moves nothing.
    static func envRefusal(_ app: AppSpec, home: String? = nil) -> PM2Error? {
        let keys = app.env.filter { key, value in PM2App.envKeysMovingTheApp.contains(key) && !(key == "PM2_HOME" && value == home) }.keys.sorted()
        if !keys.isEmpty { return .envReplacesProcessFields(app: app.name, keys: keys) }
        // PM2 sets these on the entry itself: a release signed before publish refused them must not move the app either.
        for option in PM2App.injectedVariableOptions {
            if case .string(let variable)? = app.pm2Options[option], PM2App.envKeysMovingTheApp.contains(variable) {
                return .injectedVariableNamesProcessField(app: app.name, option: option, variable: variable)
            }
        }
        return nil
    }

    /// Why PM2 must not be given `app`: its env moves it (`envRefusal`), or its script's path holds a space, which PM2
    /// runs through `bash -c` (`Common.verifyConfs`: `script: bash, args: ['-c', path]`), split at the space. The app
    /// never ran, and Ferry, reading `bash` back as its script, replaced it at every pass. A program looked up on PATH
    /// (`npm start`) keeps PM2's behaviour: that is what `bash -c` is for.
    static func refusal(_ app: AppSpec, home: String?) -> PM2Error? {
        if let refusal = envRefusal(app, home: home) { return refusal }
        if app.script.hasPrefix("/"), app.script.contains(" ") { return .scriptPathWithSpace(app: app.name, script: app.script) }
        return nil
    }

    func refusal(toRun app: AppSpec) -> (any Error)? { Self.refusal(app, home: invocation.environment["PM2_HOME"]) }

    private static func requireAbsolute(_ ecosystem: String) throws(PM2Error) {
        guard ecosystem.hasPrefix("/") else { throw .ecosystemNotAbsolute(ecosystem) }
    }

    /// pm2's output for an error message: ANSI colour codes removed (in case `NO_COLOR` is ignored), whitespace
    /// trimmed, and only the last 2000 bytes (the `[PM2][ERROR]` line comes last).
    static func readable(_ bytes: [UInt8], limit: Int = 2000) -> String {
        var plain: [UInt8] = []
        plain.reserveCapacity(bytes.count)
        var index = 0
        while index < bytes.count {
            // CSI sequence: ESC [ parameters final-byte (0x40...0x7E).
            if bytes[index] == 0x1B, index + 1 < bytes.count, bytes[index + 1] == UInt8(ascii: "[") {
                index += 2
                while index < bytes.count, !(0x40...0x7E).contains(bytes[index]) { index += 1 }
                index += 1
                continue
            }
            plain.append(bytes[index])
            index += 1
        }
        let text = String(decoding: plain.suffix(limit), as: UTF8.self)
        let isSpace: (Character) -> Bool = { $0.isWhitespace }
        return String(text.drop(while: isSpace).reversed().drop(while: isSpace).reversed())
    }
}
