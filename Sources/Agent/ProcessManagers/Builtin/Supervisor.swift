import Glibc
import Logging
import Shared

/// The builtin supervisor's app table and the lifecycle of every process in it. It lives in the daemon
/// (`ferry-agent supervisor`); `SupervisorServer` feeds it requests.
///
/// Semantics follow PM2 (see shared/pm2-reference "Behaviours observed" 11 and 12):
/// - `start` spawns `instances` processes, each `online` once spawned, each in its own process group, with exactly the
///   app's env plus `PATH`/`HOME` defaults and `NODE_APP_INSTANCE`. `start` of an app that exists restarts it with the
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
///   Use instances with ports of their own (for example `PORT` + `NODE_APP_INSTANCE`) or a port-sharing server.
/// - Every sample interval the CPU percent and resident memory of each process are read from `/proc`; an instance
///   above `max_memory_restart` is restarted (restart count + 1).
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
        /// How often CPU and memory are sampled and `max_memory_restart` is checked. Default 1 s.
        var sampleInterval: Duration = .seconds(1)
        /// Longest a cluster-mode reload waits for a new process before stopping the old one. Default 5 s.
        var reloadSettleLimit: Duration = .seconds(5)
        /// How long a process may take to go away after SIGKILL before the stop gives up waiting. Default 10 s.
        var killGrace: Duration = .seconds(10)

        init(home: String) {
            self.home = home
        }

        var logsDirectory: String { "\(home)/logs" }
        var tablePath: String { "\(home)/apps.json" }
    }

    private let configuration: Configuration
    private let logger: Logger
    private let pump: OutputPump
    private let tableFile: AppTableFile

    private var apps: [String: SupervisedApp] = [:]
    private var children: [UInt64: SupervisedChild] = [:]
    private var exitWaiters: [UInt64: [UInt64: CheckedContinuation<Bool, Never>]] = [:]
    private var restartTimers: [InstanceKey: Task<Void, Never>] = [:]
    private var memoryRestartsPending: Set<UInt64> = []
    private var sampler: Task<Void, Never>?
    private var stopAllTask: Task<Void, Never>?
    private var isShuttingDown = false
    private var operationRunning = false
    private var operationQueue: [CheckedContinuation<Void, Never>] = []
    private var nextRunID: UInt64 = 1
    private var nextGeneration: UInt64 = 1
    private var nextWaiterID: UInt64 = 1

    private struct InstanceKey: Hashable, Sendable {
        var app: String
        var pmId: Int
    }

    init(configuration: Configuration, pump: OutputPump, logger: Logger) {
        self.configuration = configuration
        self.pump = pump
        self.logger = logger
        self.tableFile = AppTableFile(path: configuration.tablePath)
    }

    // MARK: - Requests

    /// Carries out one request (everything except `shutdown`, which the daemon handles) and returns the answer.
    func handle(_ request: SupervisorRequest) async -> SupervisorResponse {
        do throws(SupervisorFailure) {
            switch request {
            case .ping: return .success(pid: getpid())
            case .list: return .success(processes: processTable())
            case .start(let spec): try await start(spec)
            case .reload(let spec): try await reload(spec)
            case .delete(let name): try await delete(appNamed: name)
            case .restart(let name): try await restart(appNamed: name)
            case .shutdown: await stopAll()
            }
            return .success(processes: processTable())
        } catch {
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

    /// The process table, one element per instance, ordered by `pm_id`.
    func processTable() -> [ManagedProcess] {
        let now = ContinuousClock.now
        var rows: [ManagedProcess] = []
        for app in apps.values {
            for instance in app.instances {
                let child = instance.runID.flatMap { children[$0] }
                let memory = child.map { $0.memoryBytes > 0 ? $0.memoryBytes : ProcStat.residentBytes(pid: $0.pid) ?? 0 } ?? 0
                rows.append(
                    ManagedProcess(
                        name: app.spec.name,
                        namespace: configuration.namespace,
                        pmId: instance.pmId,
                        pid: child?.pid,
                        status: instance.status,
                        restarts: instance.restarts,
                        uptimeSeconds: child.map { $0.startedAt.duration(to: now).components.seconds },
                        memoryBytes: memory,
                        cpuPercent: child?.cpuPercent ?? 0,
                        execMode: app.spec.execMode,
                        instances: app.spec.instances,
                        instanceIndex: instance.index,
                        scriptPath: app.spec.script,
                        cwd: app.spec.cwd,
                        interpreter: app.spec.interpreter ?? "none"
                    )
                )
            }
        }
        return rows.sorted { $0.pmId < $1.pmId }
    }

    private func start(_ spec: AppSpec) async throws(SupervisorFailure) {
        try spec.validateForSupervisor()
        try checkLaunchable(spec)
        try await exclusively { () async throws(SupervisorFailure) in
            if apps[spec.name] != nil {
                apps[spec.name]?.spec = spec
                await resize(spec.name, to: spec.instances)
                for pmId in pmIds(of: spec.name) {
                    await relaunch(spec.name, pmId)
                }
            } else {
                var allocated = allPmIds()
                let instances = (0..<spec.instances).map { index in
                    let pmId = Self.nextId(after: allocated)
                    allocated.insert(pmId)
                    return SupervisedInstance(pmId: pmId, index: index, backoff: configuration.restartBackoff.initial)
                }
                apps[spec.name] = SupervisedApp(spec: spec, instances: instances)
                logger.info("supervisor.app.started", metadata: ["ferry.app": "\(spec.name)", "app.instances": "\(spec.instances)"])
                for instance in instances {
                    launch(spec.name, instance.pmId)
                }
            }
            persist()
        }
    }

    private func reload(_ spec: AppSpec) async throws(SupervisorFailure) {
        try spec.validateForSupervisor()
        try checkLaunchable(spec)
        try await exclusively { () async throws(SupervisorFailure) in
            guard apps[spec.name] != nil else { throw Self.unknownApp(spec.name) }
            apps[spec.name]?.spec = spec
            await resize(spec.name, to: spec.instances)
            logger.info("supervisor.app.reloading", metadata: ["ferry.app": "\(spec.name)", "app.exec_mode": "\(spec.execMode.rawValue)"])
            for pmId in pmIds(of: spec.name) {
                switch spec.execMode {
                case .cluster: await replaceRolling(spec.name, pmId)
                case .fork: await relaunch(spec.name, pmId)
                }
            }
            persist()
        }
    }

    private func delete(appNamed name: String) async throws(SupervisorFailure) {
        try await exclusively { () async throws(SupervisorFailure) in
            guard apps[name] != nil else { throw Self.unknownApp(name) }
            apps[name]?.isDeleting = true
            await stopInstances(name, pmIds(of: name))
            apps[name] = nil
            logger.info("supervisor.app.deleted", metadata: ["ferry.app": "\(name)"])
            persist()
        }
    }

    private func restart(appNamed name: String) async throws(SupervisorFailure) {
        try await exclusively { () async throws(SupervisorFailure) in
            guard let spec = apps[name]?.spec else { throw Self.unknownApp(name) }
            try checkLaunchable(spec)
            for pmId in pmIds(of: name) {
                await relaunch(name, pmId)
            }
            persist()
        }
    }

    /// Stops every app (SIGINT, then SIGKILL after its kill_timeout) and refuses further requests. The table on disk
    /// keeps the apps, so the next daemon starts them again. Safe to call more than once.
    func stopAll() async {
        if let stopAllTask { return await stopAllTask.value }
        let task = Task { await self.performStopAll() }
        stopAllTask = task
        await task.value
    }

    private func performStopAll() async {
        // Wait for the operation in progress so it cannot launch anything after the stop pass.
        await acquireOperation()
        defer { releaseOperation() }
        isShuttingDown = true
        sampler?.cancel()
        for timer in restartTimers.values { timer.cancel() }
        restartTimers.removeAll()
        logger.info("supervisor.stopping_all", metadata: ["supervisor.apps": "\(apps.count)"])
        await withTaskGroup(of: Void.self) { group in
            for name in apps.keys {
                let ids = pmIds(of: name)
                group.addTask { await self.stopInstances(name, ids) }
            }
        }
        // Retiring processes of an interrupted reload, if any.
        for runID in children.keys {
            await terminate(runID)
        }
        persist()
    }

    // MARK: - Resurrection

    /// Starts the apps of the saved table (after a daemon restart or crash). Processes a crashed daemon left running
    /// are recognised by pid and `/proc` start time and stopped first, so nothing runs twice. Restart counts start
    /// at 0, as after `pm2 resurrect`.
    func resurrect() async {
        await acquireOperation()
        defer { releaseOperation() }
        guard !isShuttingDown else { return }
        let saved: AppTableFile.Table
        do {
            saved = try tableFile.load()
        } catch {
            logger.error("supervisor.table.unreadable", metadata: ["error": "\(error)"])
            let aside = "\(configuration.tablePath).unreadable-\(time(nil))"
            rename(configuration.tablePath, aside)
            return
        }
        await withTaskGroup(of: Void.self) { group in
            for app in saved.apps {
                for instance in app.instances {
                    guard let pid = instance.pid, let ticks = instance.startTicks else { continue }
                    let timeout = Duration.milliseconds(app.spec.killTimeoutMilliseconds)
                    group.addTask { await self.stopOrphan(pid: pid, startTicks: ticks, killTimeout: timeout) }
                }
            }
        }
        var used = Set<Int>()
        for app in saved.apps {
            do throws(SupervisorFailure) {
                try app.spec.validateForSupervisor()
            } catch {
                logger.error("supervisor.table.app_skipped", metadata: ["ferry.app": "\(app.spec.name)", "error": "\(error.message)"])
                continue
            }
            guard apps[app.spec.name] == nil else { continue }
            let savedIds = app.instances.map(\.pmId)
            let reusable = savedIds.count == app.spec.instances && Set(savedIds).count == savedIds.count && used.isDisjoint(with: savedIds)
            var instances: [SupervisedInstance] = []
            for index in 0..<app.spec.instances {
                let pmId = reusable ? savedIds[index] : Self.nextId(after: used.union(allPmIds()))
                used.insert(pmId)
                instances.append(SupervisedInstance(pmId: pmId, index: index, backoff: configuration.restartBackoff.initial))
            }
            apps[app.spec.name] = SupervisedApp(spec: app.spec, instances: instances)
            for instance in instances {
                launch(app.spec.name, instance.pmId)
            }
            logger.info("supervisor.app.resurrected", metadata: ["ferry.app": "\(app.spec.name)", "app.instances": "\(instances.count)"])
        }
        persist()
    }

    /// Stops a process a previous daemon started, if it still runs (same pid and start time) and leads its group.
    private func stopOrphan(pid: Int32, startTicks: UInt64, killTimeout: Duration) async {
        func isSame() -> Bool {
            guard let stat = ProcStat.read(pid: pid) else { return false }
            return stat.startTicks == startTicks && stat.processGroup == pid && stat.state != "Z"
        }
        guard isSame() else { return }
        logger.info("supervisor.orphan.stopping", metadata: ["process.pid": "\(pid)"])
        kill(-pid, SIGINT)
        let deadline = ContinuousClock.now + killTimeout
        // Not our child, so no exit notification: poll /proc until it is gone or the deadline passes.
        while isSame(), ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(50))
        }
        if isSame() || ProcStat.read(pid: pid)?.startTicks == startTicks {
            kill(-pid, SIGKILL)
        }
        let killDeadline = ContinuousClock.now + configuration.killGrace
        while isSame(), ContinuousClock.now < killDeadline {
            try? await Task.sleep(for: .milliseconds(50))
        }
    }

    // MARK: - Sampling

    /// Starts sampling CPU and memory every `sampleInterval`. Stops at `stopAll`.
    func startSampling() {
        guard sampler == nil, !isShuttingDown else { return }
        let interval = configuration.sampleInterval
        sampler = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                guard !Task.isCancelled else { return }
                self.sample()
            }
        }
    }

    private func sample() {
        let now = ContinuousClock.now
        for (runID, var child) in children {
            guard let stat = ProcStat.read(pid: child.pid) else { continue }
            if let last = child.lastSample {
                let elapsed =
                    Double(last.at.duration(to: now).components.seconds)
                    + Double(last.at.duration(to: now).components.attoseconds) / 1e18
                if elapsed > 0, stat.cpuTicks >= last.ticks {
                    child.cpuPercent = (Double(stat.cpuTicks - last.ticks) / Double(ProcStat.ticksPerSecond) / elapsed * 1000).rounded() / 10
                }
            }
            child.lastSample = (stat.cpuTicks, now)
            child.memoryBytes = ProcStat.residentBytes(pid: child.pid) ?? child.memoryBytes
            children[runID] = child
            guard let app = apps[child.app], let limit = app.spec.maxMemoryBytes, child.memoryBytes > limit,
                !child.stopRequested, !memoryRestartsPending.contains(runID)
            else { continue }
            memoryRestartsPending.insert(runID)
            logger.info(
                "supervisor.instance.memory_limit",
                metadata: [
                    "ferry.app": "\(child.app)", "process.pm_id": "\(child.pmId)",
                    "process.rss": "\(child.memoryBytes)", "app.max_memory": "\(limit)",
                ]
            )
            Task { await self.restartForMemory(child.app, child.pmId, runID: runID) }
        }
    }

    private func restartForMemory(_ name: String, _ pmId: Int, runID: UInt64) async {
        defer { memoryRestartsPending.remove(runID) }
        try? await exclusively { () async throws(SupervisorFailure) in
            guard instance(name, pmId)?.runID == runID else { return }
            pump.note(
                "[ferry-supervisor] memory above max_memory_restart: restarting",
                logPath: logPath(name, pmId, .error),
                rotation: configuration.logRotation
            )
            await relaunch(name, pmId)
        }
    }

    // MARK: - Instance lifecycle

    /// Stops the instance if it runs (counting a restart), then starts it with the unstable count and backoff reset.
    private func relaunch(_ name: String, _ pmId: Int) async {
        guard let slot = instance(name, pmId) else { return }
        let wasRunning = slot.runID != nil && slot.status != .stopping
        if slot.runID != nil {
            await stopInstance(name, pmId)
        }
        update(name, pmId) { instance in
            if wasRunning { instance.restarts += 1 }
            instance.unstableRestarts = 0
            instance.backoff = configuration.restartBackoff.initial
        }
        launch(name, pmId)
    }

    /// Cluster-mode reload of one instance: new process first, old one stopped once the new one has settled.
    private func replaceRolling(_ name: String, _ pmId: Int) async {
        guard let slot = instance(name, pmId), let oldRun = slot.runID, let spec = apps[name]?.spec else {
            return await relaunch(name, pmId)
        }
        children[oldRun]?.stopRequested = true
        update(name, pmId) { instance in
            instance.runID = nil
            instance.restarts += 1
            instance.unstableRestarts = 0
            instance.backoff = configuration.restartBackoff.initial
        }
        launch(name, pmId)
        if let newRun = instance(name, pmId)?.runID {
            let settle = min(Duration.milliseconds(spec.minUptimeMilliseconds), configuration.reloadSettleLimit)
            _ = await waitForExit(of: newRun, timeout: settle)
        }
        await terminate(oldRun)
    }

    /// Stops the listed instances of an app at the same time and leaves them `stopped`.
    private func stopInstances(_ name: String, _ ids: [Int]) async {
        await withTaskGroup(of: Void.self) { group in
            for pmId in ids {
                group.addTask { await self.stopInstance(name, pmId) }
            }
        }
    }

    /// Stops the instance's process (if any) and leaves the slot `stopped`; any armed restart is cancelled.
    private func stopInstance(_ name: String, _ pmId: Int) async {
        guard let slot = instance(name, pmId) else { return }
        takeOver(name, pmId)
        guard let runID = slot.runID, children[runID] != nil else {
            update(name, pmId) { $0.status = .stopped }
            return
        }
        children[runID]?.stopRequested = true
        update(name, pmId) { $0.status = .stopping }
        await terminate(runID)
        update(name, pmId) { instance in
            if instance.runID == runID { instance.runID = nil }
            if instance.runID == nil { instance.status = .stopped }
        }
    }

    /// SIGINT to the child's process group, SIGKILL after its app's kill_timeout, and wait for the exit.
    private func terminate(_ runID: UInt64) async {
        guard let child = children[runID] else { return }
        children[runID]?.stopRequested = true
        let killTimeout = Duration.milliseconds(apps[child.app]?.spec.killTimeoutMilliseconds ?? 1600)
        kill(-child.pid, SIGINT)
        if await waitForExit(of: runID, timeout: killTimeout) { return }
        logger.info("supervisor.instance.killed", metadata: ["ferry.app": "\(child.app)", "process.pid": "\(child.pid)"])
        pump.note(
            "[ferry-supervisor] pid \(child.pid) still running \(killTimeout) after SIGINT (kill_timeout): sending SIGKILL",
            logPath: logPath(child.app, child.pmId, .error),
            rotation: configuration.logRotation
        )
        kill(-child.pid, SIGKILL)
        if await !waitForExit(of: runID, timeout: configuration.killGrace) {
            logger.error("supervisor.instance.unkillable", metadata: ["ferry.app": "\(child.app)", "process.pid": "\(child.pid)"])
        }
    }

    /// Spawns the instance's process. A failure to spawn counts as an immediate crash (restart, then `errored`).
    private func launch(_ name: String, _ pmId: Int) {
        guard !isShuttingDown, let app = apps[name], let slot = instance(name, pmId), !app.isDeleting else { return }
        takeOver(name, pmId)
        let spec = app.spec
        var pipes: [Int32] = []
        defer {
            for fd in pipes { close(fd) }
        }
        do throws(SupervisorError) {
            let (executable, arguments) = try spec.command(instance: slot.index)
            let output = try Self.makePipe()
            pipes += output
            let error = try Self.makePipe()
            pipes += error
            let pid = try ProcessSpawner.spawn(
                ProcessSpawner.Request(
                    executable: executable,
                    arguments: arguments,
                    environment: spec.environment(instance: slot.index),
                    workingDirectory: spec.cwd,
                    standardInput: .null,
                    standardOutput: .descriptor(output[1]),
                    standardError: .descriptor(error[1]),
                    grouping: .newProcessGroup
                )
            )
            pipes = [output[1], error[1]]  // the read ends now belong to the pump (below)
            let runID = nextRunID
            nextRunID += 1
            children[runID] = SupervisedChild(
                runID: runID,
                pid: pid,
                app: name,
                pmId: pmId,
                startedAt: .now,
                startTicks: ProcStat.read(pid: pid)?.startTicks
            )
            update(name, pmId) { instance in
                instance.runID = runID
                instance.status = .online
            }
            for (fd, stream) in [(output[0], LogStream.output), (error[0], LogStream.error)] {
                do {
                    try pump.add(pipe: fd, logPath: logPath(name, pmId, stream), rotation: configuration.logRotation)
                } catch {
                    logger.error("supervisor.log.unavailable", metadata: ["ferry.app": "\(name)", "error": "\(error)"])
                }
            }
            do {
                try watchExit(of: pid, runID: runID)
            } catch {
                // Without a watcher its exit would go unnoticed: better to kill it now and report a crash.
                kill(-pid, SIGKILL)
                var status: Int32 = 0
                waitpid(pid, &status, 0)
                children[runID] = nil
                throw error
            }
            logger.debug("supervisor.instance.spawned", metadata: ["ferry.app": "\(name)", "process.pm_id": "\(pmId)", "process.pid": "\(pid)"])
            persist()
        } catch {
            logger.warning("supervisor.instance.spawn_failed", metadata: ["ferry.app": "\(name)", "process.pm_id": "\(pmId)", "error": "\(error)"])
            pump.note("[ferry-supervisor] cannot start: \(error)", logPath: logPath(name, pmId, .error), rotation: configuration.logRotation)
            update(name, pmId) { $0.runID = nil }
            handleExit(name, pmId, ranFor: .zero, exit: .notStarted, stopRequested: false)
        }
    }

    /// Waits (on its own thread) for the child to exit without reaping it, then reports the exit to the actor. The
    /// zombie keeps the pid and process group id reserved until `childExited` has swept the group.
    private nonisolated func watchExit(of pid: Int32, runID: UInt64) throws(SupervisorError) {
        try PosixThread.detach(name: "exit watcher") {
            var info = siginfo_t()
            var exit = ChildExit.unknown
            while true {
                if waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT) == 0 {
                    let status = info._sifields._sigchld.si_status
                    exit = info.si_code == Int32(CLD_EXITED) ? .exited(code: status) : .signaled(signal: status)
                    break
                }
                if errno != EINTR { break }
            }
            let observed = exit
            Task { await self.childExited(runID: runID, exit: observed) }
        }
    }

    private func childExited(runID: UInt64, exit: ChildExit) {
        guard let child = children.removeValue(forKey: runID) else { return }
        // Whatever the process left in its group goes with it; then reap the zombie.
        kill(-child.pid, SIGKILL)
        var status: Int32 = 0
        while waitpid(child.pid, &status, 0) < 0 && errno == EINTR {}
        for waiter in (exitWaiters.removeValue(forKey: runID) ?? [:]).values {
            waiter.resume(returning: true)
        }
        let ranFor = child.startedAt.duration(to: .now)
        logger.debug(
            "supervisor.instance.exited",
            metadata: [
                "ferry.app": "\(child.app)", "process.pid": "\(child.pid)",
                "process.exit": "\(exit)", "process.stop_requested": "\(child.stopRequested)",
            ]
        )
        guard instance(child.app, child.pmId)?.runID == runID else { return }
        update(child.app, child.pmId) { $0.runID = nil }
        handleExit(child.app, child.pmId, ranFor: ranFor, exit: exit, stopRequested: child.stopRequested)
    }

    /// Decides what follows the end of an instance's current process: nothing (stopped), `errored`, or a restart.
    private func handleExit(_ name: String, _ pmId: Int, ranFor: Duration, exit: ChildExit, stopRequested: Bool) {
        guard let app = apps[name], let slot = instance(name, pmId) else { return }
        let spec = app.spec
        if stopRequested || isShuttingDown || app.isDeleting {
            update(name, pmId) {
                $0.status = .stopped
                $0.lastExit = exit
            }
            return
        }
        guard spec.autorestart else {
            update(name, pmId) {
                $0.status = .stopped
                $0.lastExit = exit
            }
            logger.info("supervisor.instance.stopped", metadata: ["ferry.app": "\(name)", "process.pm_id": "\(pmId)", "process.exit": "\(exit)"])
            persist()
            return
        }
        var next = slot
        next.lastExit = exit
        if ranFor < .milliseconds(spec.minUptimeMilliseconds) {
            next.unstableRestarts += 1
        } else {
            next.unstableRestarts = 0
            next.backoff = configuration.restartBackoff.initial
        }
        if next.unstableRestarts >= spec.maxRestarts {
            next.status = .errored
            next.unstableRestarts = 0
            replace(name, pmId, with: next)
            logger.warning(
                "supervisor.instance.errored",
                metadata: [
                    "ferry.app": "\(name)", "process.pm_id": "\(pmId)",
                    "process.restarts": "\(next.restarts)", "process.exit": "\(exit)",
                ]
            )
            pump.note(
                "[ferry-supervisor] too many unstable restarts (\(spec.maxRestarts)): errored",
                logPath: logPath(name, pmId, .error),
                rotation: configuration.logRotation
            )
            persist()
            return
        }
        let delay: Duration
        if spec.restartDelayMilliseconds > 0 {
            delay = .milliseconds(spec.restartDelayMilliseconds)
        } else {
            delay = next.backoff
            next.backoff = configuration.restartBackoff.next(after: next.backoff)
        }
        next.status = .waitingRestart
        replace(name, pmId, with: next)
        scheduleRestart(name, pmId, generation: next.generation, after: delay)
        persist()
    }

    private func scheduleRestart(_ name: String, _ pmId: Int, generation: UInt64, after delay: Duration) {
        let key = InstanceKey(app: name, pmId: pmId)
        restartTimers[key]?.cancel()
        restartTimers[key] = Task {
            do {
                try await Task.sleep(for: delay)
            } catch {
                return
            }
            self.restartTimerFired(key, generation: generation)
        }
    }

    private func restartTimerFired(_ key: InstanceKey, generation: UInt64) {
        guard let slot = instance(key.app, key.pmId), slot.generation == generation, slot.status == .waitingRestart else { return }
        restartTimers[key] = nil
        update(key.app, key.pmId) { $0.restarts += 1 }
        launch(key.app, key.pmId)
    }

    /// Marks the slot as taken over by a new action: restart timers armed before now are void.
    private func takeOver(_ name: String, _ pmId: Int) {
        let generation = nextGeneration
        nextGeneration += 1
        update(name, pmId) { $0.generation = generation }
        restartTimers.removeValue(forKey: InstanceKey(app: name, pmId: pmId))?.cancel()
    }

    /// Grows or shrinks the app's slots to `count`: new slots get fresh `pm_id`s, surplus slots are stopped and dropped.
    private func resize(_ name: String, to count: Int) async {
        guard let current = apps[name]?.instances.count, current != count else { return }
        if count > current {
            var used = allPmIds()
            for index in current..<count {
                let pmId = Self.nextId(after: used)
                used.insert(pmId)
                apps[name]?.instances.append(SupervisedInstance(pmId: pmId, index: index, backoff: configuration.restartBackoff.initial))
            }
        } else {
            let surplus = apps[name]?.instances[count...].map(\.pmId) ?? []
            await stopInstances(name, surplus)
            apps[name]?.instances.removeAll { surplus.contains($0.pmId) }
        }
    }

    /// Waits until the child exits (true) or the timeout passes (false).
    private func waitForExit(of runID: UInt64, timeout: Duration) async -> Bool {
        guard children[runID] != nil else { return true }
        let waiterID = nextWaiterID
        nextWaiterID += 1
        let timer = Task {
            try? await Task.sleep(for: timeout)
            self.expireWaiter(runID: runID, waiterID: waiterID)
        }
        let exited = await withCheckedContinuation { continuation in
            exitWaiters[runID, default: [:]][waiterID] = continuation
        }
        timer.cancel()
        return exited
    }

    private func expireWaiter(runID: UInt64, waiterID: UInt64) {
        exitWaiters[runID]?.removeValue(forKey: waiterID)?.resume(returning: false)
        if exitWaiters[runID]?.isEmpty == true { exitWaiters[runID] = nil }
    }

    // MARK: - Operations lock

    /// Runs `body` after every earlier operation finished: requests that change the table never interleave (reads
    /// and crash handling still run in between). Refused once the daemon is shutting down.
    private func exclusively(_ body: () async throws(SupervisorFailure) -> Void) async throws(SupervisorFailure) {
        await acquireOperation()
        defer { releaseOperation() }
        guard !isShuttingDown else { throw SupervisorFailure(.shuttingDown, "the supervisor is stopping every app and exiting") }
        try await body()
    }

    private func acquireOperation() async {
        if operationRunning {
            await withCheckedContinuation { operationQueue.append($0) }
        } else {
            operationRunning = true
        }
    }

    private func releaseOperation() {
        if operationQueue.isEmpty {
            operationRunning = false
        } else {
            operationQueue.removeFirst().resume()
        }
    }

    // MARK: - Helpers

    /// Refuses specs whose script is missing (like PM2's "Script not found") or whose interpreter is not on PATH.
    private func checkLaunchable(_ spec: AppSpec) throws(SupervisorFailure) {
        var info = stat()
        if spec.script.hasPrefix("/") {
            guard stat(spec.script, &info) == 0 else {
                throw SupervisorFailure(.scriptNotFound, "script not found: \(spec.script) (\(SupervisorError.text(errno)))")
            }
        } else {
            let searchPath = spec.environment(instance: 0)["PATH"] ?? AppSpec.defaultSearchPath
            guard (try? AppSpec.resolve(spec.script, searchPath: searchPath, relativeTo: spec.cwd)) != nil else {
                throw SupervisorFailure(.scriptNotFound, "script not found: no program \(spec.script) on PATH \(searchPath)")
            }
        }
        do {
            _ = try spec.command(instance: 0)
        } catch {
            throw SupervisorFailure(.interpreterNotFound, "\(error)")
        }
    }

    private func persist() {
        var table = AppTableFile.Table()
        let ordered = apps.values.sorted { ($0.instances.first?.pmId ?? 0) < ($1.instances.first?.pmId ?? 0) }
        for app in ordered where !app.isDeleting {
            let instances = app.instances.map { instance in
                let child = instance.runID.flatMap { children[$0] }
                return AppTableFile.Instance(pmId: instance.pmId, pid: child?.pid, startTicks: child?.startTicks)
            }
            table.apps.append(AppTableFile.App(spec: app.spec, instances: instances))
        }
        do {
            try tableFile.save(table)
        } catch {
            logger.error("supervisor.table.save_failed", metadata: ["error": "\(error)"])
        }
    }

    private enum LogStream: String {
        case output = "out"
        case error = "err"
    }

    private func logPath(_ name: String, _ pmId: Int, _ stream: LogStream) -> String {
        let index = instance(name, pmId)?.index ?? 0
        return "\(configuration.logsDirectory)/\(PM2App.fileSafeName(name))-\(index)-\(stream.rawValue).log"
    }

    private func instance(_ name: String, _ pmId: Int) -> SupervisedInstance? {
        apps[name]?.instances.first { $0.pmId == pmId }
    }

    private func update(_ name: String, _ pmId: Int, _ change: (inout SupervisedInstance) -> Void) {
        guard let position = apps[name]?.instances.firstIndex(where: { $0.pmId == pmId }) else { return }
        apps[name]?.instances[position].modify(change)
    }

    private func replace(_ name: String, _ pmId: Int, with instance: SupervisedInstance) {
        update(name, pmId) { $0 = instance }
    }

    private func pmIds(of name: String) -> [Int] {
        apps[name]?.instances.map(\.pmId) ?? []
    }

    private func allPmIds() -> Set<Int> {
        Set(apps.values.flatMap { $0.instances.map(\.pmId) })
    }

    /// The next id after the highest in use, or 0 for an empty table (PM2 reuses ids after `delete all`).
    private static func nextId(after used: Set<Int>) -> Int {
        (used.max() ?? -1) + 1
    }

    private static func unknownApp(_ name: String) -> SupervisorFailure {
        SupervisorFailure(.unknownApp, "no app named \(name.debugDescription.prefix(120)) is supervised")
    }

    private static func makePipe() throws(SupervisorError) -> [Int32] {
        var ends: [Int32] = [-1, -1]
        guard pipe(&ends) == 0 else { throw .system(operation: "pipe", errno: errno) }
        for fd in ends { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        return ends
    }
}

extension SupervisedInstance {
    fileprivate mutating func modify(_ change: (inout SupervisedInstance) -> Void) {
        change(&self)
    }
}
