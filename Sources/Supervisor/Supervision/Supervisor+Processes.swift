import Glibc
import Shared

/// The processes behind the slots: each instance's `StateMachine` decides, this extension carries out what it
/// returns (spawn, terminate, arm or cancel a restart timer, record) and reports back what happened (spawned, exited,
/// timer fired).
extension Supervisor {
    typealias StateMachine = SupervisedInstance.StateMachine

    // MARK: - Driving the state machines

    /// Feeds `event` to the instance's machine and returns the action to perform: `.none` when the instance is gone,
    /// or when the event is illegal in its state (the machine's `IllegalTransition`: a bug, logged; nothing changes).
    func transition(
        _ key: InstanceKey,
        _ event: (inout StateMachine) throws -> StateMachine.Action
    ) -> StateMachine.Action {
        guard var app = apps[key.app], let position = app.instances.firstIndex(where: { $0.pmId == key.pmId }) else { return .none }
        do {
            // The machine is the only writer of the slot's state; the app is copied out so `event` may read the table.
            let action = try event(&app.instances[position].lifecycle)
            apps[key.app] = app
            return action
        } catch {
            logger.error(
                "supervisor.instance.illegal_transition",
                metadata: ["ferry.app": "\(key.app)", "process.pm_id": "\(key.pmId)", "error": "\(error)"]
            )
            return .none
        }
    }

    /// Performs `action` for the instance, awaiting stops (and feeding their outcome back) until nothing is left.
    func perform(_ action: StateMachine.Action, for key: InstanceKey) async {
        switch action {
        case .terminate(let runID):
            await terminate(runID)
            let next = transition(key) { $0.terminateReturned(runID, closing: isClosing(key.app)) }
            await perform(next, for: key)
        case .spawnReplacing(let retiring):
            children[retiring]?.retiring = true
            spawn(key)
            if let newRun = instance(key)?.lifecycle.run, let minUptime = apps[key.app]?.spec.minUptimeMilliseconds {
                _ = await waitForExit(of: newRun, timeout: min(.milliseconds(minUptime), configuration.reloadSettleLimit))
            }
            await terminate(retiring)
        case .none, .spawn, .cancelRestartTimer, .scheduleRestart, .recordStopped, .recordErrored:
            performAtOnce(action, for: key)
        }
    }

    /// Performs an action that needs no waiting. The stop-like actions only come from requests, which use `perform`.
    private func performAtOnce(_ action: StateMachine.Action, for key: InstanceKey) {
        switch action {
        case .none:
            break
        case .spawn:
            spawn(key)
        case .cancelRestartTimer:
            restartTimers.removeValue(forKey: key)?.cancel()
        case .scheduleRestart(let delay, let timer):
            scheduleRestart(key, timer: timer, after: delay)
            persist()
        case .recordStopped(let exit):
            logger.info(
                "supervisor.instance.stopped",
                metadata: ["ferry.app": "\(key.app)", "process.pm_id": "\(key.pmId)", "process.exit": "\(exit)"]
            )
            persist()
        case .recordErrored(let exit):
            let maxRestarts = apps[key.app]?.spec.maxRestarts ?? 0
            logger.warning(
                "supervisor.instance.errored",
                metadata: [
                    "ferry.app": "\(key.app)", "process.pm_id": "\(key.pmId)",
                    "process.restarts": "\(instance(key)?.lifecycle.restarts ?? 0)", "process.exit": "\(exit)",
                ]
            )
            pump.note(
                "[ferry-supervisor] too many unstable restarts (\(maxRestarts)): errored",
                logPath: logPath(key, .error),
                rotation: configuration.logRotation
            )
            persist()
        case .terminate, .spawnReplacing:
            logger.error("supervisor.instance.unexpected_action", metadata: ["ferry.app": "\(key.app)", "action": "\(action)"])
        }
    }

    // MARK: - Spawning

    /// Spawns the instance's process and reports `spawned`; a failure to spawn is reported as `spawnFailed` (an
    /// immediate crash: restart, then `errored`).
    private func spawn(_ key: InstanceKey) {
        restartTimers.removeValue(forKey: key)?.cancel()
        guard let app = apps[key.app], let slot = instance(key) else { return }
        let spec = app.spec
        let policy = StateMachine.Policy(spec)
        guard !isClosing(key.app) else {
            performAtOnce(transition(key) { try $0.spawnFailed(policy: policy, closing: true) }, for: key)
            return
        }
        var pipes: [Int32] = []
        defer {
            for fd in pipes { close(fd) }
        }
        do throws(SupervisorError) {
            let (executable, arguments) = try spec.command(instance: slot.index)
            // Taken (`nextRunID` moves on) only once the process runs.
            let runID = RunID(value: nextRunID)
            let output = try Self.makePipe()
            pipes += output
            let error = try Self.makePipe()
            pipes += error
            let pid: pid_t
            do throws(SpawnError) {
                pid = try ProcessSpawner.spawn(
                    ProcessSpawner.Request(
                        executable: executable,
                        arguments: arguments,
                        environment: spec.environment(instance: slot.index).merging([
                            Self.homeMarker: configuration.home, Self.runMarker: Self.runMarkerValue(runID),
                        ]) { _, ours in ours },
                        workingDirectory: spec.cwd,
                        standardInput: .null,
                        standardOutput: .descriptor(output[1]),
                        standardError: .descriptor(error[1]),
                        grouping: .newProcessGroup
                    )
                )
            } catch {
                throw .spawn(error)
            }
            pipes = [output[1], error[1]]  // the read ends now belong to the pump (below)
            nextRunID += 1
            children[runID] = SupervisedChild(
                runID: runID,
                pid: pid,
                app: key.app,
                pmId: key.pmId,
                startedAt: .now,
                startTicks: ProcStat.read(pid: pid)?.startTicks
            )
            for (fd, stream) in [(output[0], LogStream.output), (error[0], LogStream.error)] {
                do {
                    try pump.add(pipe: fd, logPath: logPath(key, stream), rotation: configuration.logRotation)
                } catch {
                    logger.error("supervisor.log.unavailable", metadata: ["ferry.app": "\(key.app)", "error": "\(error)"])
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
            performAtOnce(transition(key) { try $0.spawned(runID) }, for: key)
            logger.debug(
                "supervisor.instance.spawned",
                metadata: ["ferry.app": "\(key.app)", "process.pm_id": "\(key.pmId)", "process.pid": "\(pid)"]
            )
            persist()
        } catch {
            logger.warning(
                "supervisor.instance.spawn_failed",
                metadata: ["ferry.app": "\(key.app)", "process.pm_id": "\(key.pmId)", "error": "\(error)"]
            )
            pump.note("[ferry-supervisor] cannot start: \(error)", logPath: logPath(key, .error), rotation: configuration.logRotation)
            performAtOnce(transition(key) { try $0.spawnFailed(policy: policy, closing: isClosing(key.app)) }, for: key)
        }
    }

    private static func makePipe() throws(SupervisorError) -> [Int32] {
        do throws(SystemCallError) {
            let descriptors = try PipeDescriptors.open()
            return [descriptors.readEnd, descriptors.writeEnd]
        } catch {
            throw .system(operation: error.operation, errno: error.errno)
        }
    }

    // MARK: - Exits

    /// Waits (on its own thread) for the child to exit without reaping it, then reports the exit to the actor. The
    /// zombie keeps the pid and process group id reserved until `childExited` has swept the group.
    private nonisolated func watchExit(of pid: Int32, runID: RunID) throws(SupervisorError) {
        do throws(DedicatedThread.StartFailure) {
            try DedicatedThread.detach(name: "exit watcher") {
                var info = siginfo_t()
                var exit = ChildExit.unknown
                while true {
                    if waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT) == 0 {
                        exit = ChildExit(ProcessTermination(info))
                        break
                    }
                    if errno != EINTR { break }
                }
                let observed = exit
                Task { await self.childExited(runID: runID, exit: observed) }
            }
        } catch {
            throw .threadUnavailable(error)
        }
    }

    private func childExited(runID: RunID, exit: ChildExit) {
        guard let child = children[runID] else { return }
        // A stop's SIGINT went to the whole group: a leader that ends at once (a shell script that runs node without
        // `exec`, a cluster master with no SIGINT handler) leaves the rest of the group draining, within the same
        // kill_timeout — the stop SIGKILLs them when it runs out. They used to be SIGKILLed the moment the leader ended,
        // cut off mid-request. The leader stays unreaped (and in `children`) meanwhile, so the stop's wait for its exit
        // means the group is gone, and the stop's SIGKILL reaches the group.
        if child.stopRequested, !child.killSent, !child.draining {
            children[runID]?.draining = true
            Task { await drainGroup(of: runID, exit: exit) }
            return
        }
        children.removeValue(forKey: runID)
        // Whatever the process left in its group goes with it, and, when it ended on its own, what it started outside
        // the group (a stop stops those itself, with their kill_timeout); then reap the zombie (our own child, by pid).
        kill(-child.pid, SIGKILL)
        if !child.stopRequested { Self.killMarkedProcesses(entry: Self.runEntry(child.runID), outside: child.pid) }
        var status: Int32 = 0
        while waitpid(child.pid, &status, 0) < 0 && errno == EINTR {}
        for waiter in (exitWaiters.removeValue(forKey: runID) ?? [:]).values {
            waiter.resume(returning: true)
        }
        logger.debug(
            "supervisor.instance.exited",
            metadata: [
                "ferry.app": "\(child.app)", "process.pid": "\(child.pid)",
                "process.exit": "\(exit)", "process.stop_requested": "\(child.stopRequested)",
            ]
        )
        let key = InstanceKey(app: child.app, pmId: child.pmId)
        guard let spec = apps[key.app]?.spec else { return }
        let ranFor = child.startedAt.duration(to: .now)
        let policy = StateMachine.Policy(spec)
        let closing = isClosing(key.app)
        performAtOnce(transition(key) { $0.exited(runID, exit: exit, ranFor: ranFor, policy: policy, closing: closing) }, for: key)
    }

    /// Waits until nothing but the ended leader is left in the group of `runID` — after the stop's SIGKILL, no longer
    /// than `killGrace` (a process in uninterruptible sleep) — then ends it as any exit. Each look at the group reads
    /// every process's `/proc/<pid>/stat`, on a thread of its own: on the actor, a shutdown draining many instances
    /// held up every request.
    private func drainGroup(of runID: RunID, exit: ChildExit) async {
        var killSeenAt: ContinuousClock.Instant?
        var logged = false
        while let child = children[runID] {
            if child.killSent {
                let since = killSeenAt ?? .now
                killSeenAt = since
                if ContinuousClock.now - since >= configuration.killGrace { break }
            }
            let group = child.pid
            let others = await DedicatedThread.run(cancellation: CancellationFlag()) { Self.groupMembers(group) }
            guard !others.isEmpty else { break }
            if !logged {
                logged = true
                logger.info(
                    "supervisor.instance.draining",
                    metadata: ["ferry.app": "\(child.app)", "process.pid": "\(group)", "process.group_members": "\(others.sorted())"]
                )
            }
            try? await Task.sleep(for: .milliseconds(100))
        }
        childExited(runID: runID, exit: exit)
    }

    /// The processes other than `group` itself (its leader) that still run in the process group `group`.
    static func groupMembers(_ group: Int32) -> [Int32] {
        ProcStat.allPids().filter { pid in
            pid != group && (ProcStat.read(pid: pid).map { $0.processGroup == group && !$0.hasExited } ?? false)
        }
    }

    // MARK: - Stopping

    /// SIGINT to the child's process group, SIGKILL after its app's kill_timeout, and wait for the exit; what the child
    /// started outside its group (found by `runMarker`) is stopped alongside it with the same kill_timeout, as PM2's
    /// `treekill` on a stop (`ForeignProcessStop`: these are not our children).
    ///
    /// Finding those reads every process's environment (`markedProcesses`): that runs on a thread of its own, beside
    /// the SIGINT rather than before it. On the actor it held up every other app's restarts and every request for a
    /// scan per instance stopped, and a process whose memory map was locked (a hung mount) could hold it for good.
    func terminate(_ runID: RunID) async {
        guard let child = children[runID] else { return }
        // Sent SIGKILL by an earlier stop and still not ended: SIGKILL again and its grace, not a second SIGINT and
        // kill_timeout (a shutdown's second pass took two of them, past what the stopping client waits for).
        if child.killSent {
            kill(-child.pid, SIGKILL)
            _ = await waitForExit(of: runID, timeout: configuration.killGrace)
            return
        }
        children[runID]?.stopRequested = true
        let killTimeout = Duration.milliseconds(apps[child.app]?.spec.killTimeoutMilliseconds ?? 1600)
        let entry = Self.runEntry(child.runID)
        let group = child.pid
        let killGrace = configuration.killGrace
        let detachedStop = Task {
            // (Run here when no thread can be had.)
            let found = await DedicatedThread.run(cancellation: CancellationFlag()) { Self.markedProcesses(entry: entry, outside: group) }
            let targets = found.map { ForeignProcessStop.Target(pid: $0.pid, startTicks: $0.stat.startTicks, killTimeout: killTimeout) }
            return await ForeignProcessStop.stop(targets, killGrace: killGrace)
        }
        await stopChild(child, killTimeout: killTimeout)
        _ = await detachedStop.value
    }

    /// SIGKILL to every process marked `entry` outside the group `group` (what an instance that ended on its own
    /// started in a session of its own), found on a thread of its own: see `terminate`. Each only if it is still the
    /// process the scan found: the scan reads every process's environment, which can take seconds, and a process found
    /// early may have exited and its pid gone to an unrelated one by the time the scan ends.
    static func killMarkedProcesses(entry: String, outside group: Int32) {
        let work: @Sendable () -> Void = {
            for (pid, stat) in markedProcesses(entry: entry, outside: group) {
                ForeignProcessStop.signal(pid, startTicks: stat.startTicks, SIGKILL)
            }
        }
        do throws(DedicatedThread.StartFailure) {
            try DedicatedThread.detach(name: "marked processes", work)
        } catch {
            // No thread to be had (a thread limit): the scan runs here rather than not at all.
            work()
        }
    }

    private func stopChild(_ child: SupervisedChild, killTimeout: Duration) async {
        let runID = child.runID
        let key = InstanceKey(app: child.app, pmId: child.pmId)
        kill(-child.pid, SIGINT)
        if await waitForExit(of: runID, timeout: killTimeout) { return }
        // The wait can time out with the exit already handled (`childExited` ran before this resumed): the child is
        // reaped, and its pid and group may belong to another process by now.
        guard children[runID] != nil else { return }
        logger.info("supervisor.instance.killed", metadata: ["ferry.app": "\(child.app)", "process.pid": "\(child.pid)"])
        pump.note(
            "[ferry-supervisor] pid \(child.pid) still running \(killTimeout) after SIGINT (kill_timeout): sending SIGKILL",
            logPath: logPath(key, .error),
            rotation: configuration.logRotation
        )
        kill(-child.pid, SIGKILL)
        children[runID]?.killSent = true
        if await !waitForExit(of: runID, timeout: configuration.killGrace) {
            logger.error("supervisor.instance.unkillable", metadata: ["ferry.app": "\(child.app)", "process.pid": "\(child.pid)"])
        }
    }

    /// The environment entry naming one run (`FERRY_SUPERVISOR_RUN=<daemon pid>:<run>`): what the process starts
    /// inherits it, also in a session or process group of its own (`child_process.spawn(..., {detached: true})`, a
    /// script's `setsid worker &`), which signals to the run's group miss.
    static let runMarker = "FERRY_SUPERVISOR_RUN"

    static func runMarkerValue(_ runID: RunID) -> String { "\(getpid()):\(runID.value)" }

    /// The environment entry `runMarker` of the run `runID`.
    static func runEntry(_ runID: RunID) -> String { "\(runMarker)=\(runMarkerValue(runID))" }

    /// Waits until the child exits (true) or the timeout passes (false).
    func waitForExit(of runID: RunID, timeout: Duration) async -> Bool {
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

    private func expireWaiter(runID: RunID, waiterID: UInt64) {
        exitWaiters[runID]?.removeValue(forKey: waiterID)?.resume(returning: false)
        if exitWaiters[runID]?.isEmpty == true { exitWaiters[runID] = nil }
    }

    // MARK: - Restart timers

    private func scheduleRestart(_ key: InstanceKey, timer: UInt64, after delay: Duration) {
        restartTimers[key]?.cancel()
        restartTimers[key] = Task {
            do {
                try await Task.sleep(for: delay)
            } catch {
                return
            }
            self.restartTimerFired(key, timer: timer)
        }
    }

    private func restartTimerFired(_ key: InstanceKey, timer: UInt64) {
        let action = transition(key) { $0.restartTimerFired(timer, closing: isClosing(key.app)) }
        guard action != .none else { return }
        restartTimers[key] = nil
        performAtOnce(action, for: key)
    }
}
