import Glibc
import Shared

/// What each request does to the table. Every operation runs under the operations lock and drives the instances
/// through their state machines (`Supervisor+Processes`).
extension Supervisor {
    func start(_ spec: AppSpec) async throws(SupervisorFailure) {
        try spec.validateForSupervisor()
        try checkLaunchable(spec)
        try await exclusively { () async throws(SupervisorFailure) in
            if apps[spec.name] != nil {
                apps[spec.name]?.spec = spec
                await resize(spec.name, to: spec.instances)
                await forEachInstance(of: spec.name) { try $0.restart() }
            } else {
                var allocated = allPmIds()
                let instances = (0..<spec.instances).map { index in
                    let pmId = Self.nextId(after: allocated)
                    allocated.insert(pmId)
                    return SupervisedInstance(pmId: pmId, index: index, restartBackoff: configuration.restartBackoff)
                }
                apps[spec.name] = SupervisedApp(spec: spec, instances: instances)
                logger.info("supervisor.app.started", metadata: ["ferry.app": "\(spec.name)", "app.instances": "\(spec.instances)"])
                await forEachInstance(of: spec.name) { try $0.launch() }
            }
            persist()
        }
    }

    func reload(_ spec: AppSpec) async throws(SupervisorFailure) {
        try spec.validateForSupervisor()
        try checkLaunchable(spec)
        try await exclusively { () async throws(SupervisorFailure) in
            guard apps[spec.name] != nil else { throw Self.unknownApp(spec.name) }
            apps[spec.name]?.spec = spec
            await resize(spec.name, to: spec.instances)
            logger.info("supervisor.app.reloading", metadata: ["ferry.app": "\(spec.name)", "app.exec_mode": "\(spec.execMode.rawValue)"])
            switch spec.execMode {
            case .cluster: await forEachInstance(of: spec.name) { try $0.replace() }
            case .fork: await forEachInstance(of: spec.name) { try $0.restart() }
            }
            persist()
        }
    }

    func delete(appNamed name: String) async throws(SupervisorFailure) {
        try await exclusively { () async throws(SupervisorFailure) in
            guard apps[name] != nil else { throw Self.unknownApp(name) }
            apps[name]?.isDeleting = true
            await stopInstances(name, pmIds(of: name))
            apps[name] = nil
            logger.info("supervisor.app.deleted", metadata: ["ferry.app": "\(name)"])
            persist()
        }
    }

    func restart(appNamed name: String) async throws(SupervisorFailure) {
        try await exclusively { () async throws(SupervisorFailure) in
            guard let spec = apps[name]?.spec else { throw Self.unknownApp(name) }
            try checkLaunchable(spec)
            await forEachInstance(of: name) { try $0.restart() }
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
        // Waits for the operation in progress, so it cannot launch anything after the stop pass.
        await operations.withLock { await savingTableAtEnd(stopEverything) }
    }

    private func stopEverything() async {
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
        // Retiring processes of an interrupted reload, and processes a SIGKILL did not end (uninterruptible sleep on
        // a hung mount): all at once, as the apps above, within the one kill_timeout the client waits for. One after
        // another, twenty stuck instances took minutes.
        await withTaskGroup(of: Void.self) { group in
            for runID in children.keys { group.addTask { await self.terminate(runID) } }
        }
        persist()
    }

    /// Feeds `event` to each instance of the app in turn and performs what follows, one instance at a time (a rolling
    /// reload replaces one before it touches the next).
    func forEachInstance(
        of name: String,
        _ event: (inout StateMachine) throws -> StateMachine.Action
    ) async {
        for pmId in pmIds(of: name) {
            let key = InstanceKey(app: name, pmId: pmId)
            await perform(transition(key, event), for: key)
        }
    }

    /// Stops the listed instances of an app at the same time and leaves them `stopped`.
    func stopInstances(_ name: String, _ ids: [Int]) async {
        await withTaskGroup(of: Void.self) { group in
            for pmId in ids {
                group.addTask {
                    let key = InstanceKey(app: name, pmId: pmId)
                    await self.perform(self.transition(key) { try $0.stop() }, for: key)
                }
            }
        }
    }

    /// Grows or shrinks the app's slots to `count`: new slots get fresh `pm_id`s (and start `stopped`), surplus slots
    /// are stopped and dropped.
    private func resize(_ name: String, to count: Int) async {
        guard let current = apps[name]?.instances.count, current != count else { return }
        if count > current {
            var used = allPmIds()
            for index in current..<count {
                let pmId = Self.nextId(after: used)
                used.insert(pmId)
                apps[name]?.instances.append(SupervisedInstance(pmId: pmId, index: index, restartBackoff: configuration.restartBackoff))
            }
        } else {
            let surplus = apps[name]?.instances[count...].map(\.pmId) ?? []
            await stopInstances(name, surplus)
            apps[name]?.instances.removeAll { surplus.contains($0.pmId) }
        }
    }

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
}
