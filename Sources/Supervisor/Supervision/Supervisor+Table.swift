import Shared

/// The table as clients see it (`list`) and as the next daemon finds it (`apps.json`).
extension Supervisor {
    /// The process table, one element per instance, ordered by `pm_id`.
    func processTable() -> [ManagedProcess] {
        let now = ContinuousClock.now
        var rows: [ManagedProcess] = []
        for app in apps.values {
            for instance in app.instances {
                let child = instance.lifecycle.run.flatMap { children[$0] }
                let memory = child.map { $0.memoryBytes > 0 ? $0.memoryBytes : ProcStat.residentBytes(pid: $0.pid) ?? 0 } ?? 0
                let key = InstanceKey(app: app.spec.name, pmId: instance.pmId)
                var exitCode: Int32?
                var exitSignal: String?
                switch instance.lifecycle.lastExit {
                case .exited(let code)?: exitCode = code
                case .signaled(let signal)?: exitSignal = ProcessTermination.signalName(signal)
                case .notStarted?, .unknown?, nil: break
                }
                rows.append(
                    ManagedProcess(
                        name: app.spec.name,
                        namespace: configuration.namespace,
                        pmId: instance.pmId,
                        pid: child?.pid,
                        status: instance.lifecycle.status,
                        restarts: instance.lifecycle.restarts,
                        uptimeSeconds: child.map { $0.startedAt.duration(to: now).components.seconds },
                        memoryBytes: memory,
                        cpuPercent: child?.cpuPercent ?? 0,
                        execMode: app.spec.execMode,
                        instances: app.spec.instances,
                        instanceIndex: instance.index,
                        scriptPath: app.spec.script,
                        cwd: app.spec.cwd,
                        interpreter: app.spec.interpreter ?? "none",
                        lastExitCode: exitCode,
                        lastExitSignal: exitSignal,
                        outLogPath: logPath(key, .output),
                        errLogPath: logPath(key, .error)
                    )
                )
            }
        }
        return rows.sorted { $0.pmId < $1.pmId }
    }

    /// Saves the table (apps being deleted left out) with each instance's live process, atomically. A save that fails
    /// is made again at every memory check until it works (`tableUnsaved`): otherwise the file would keep the table from
    /// before (a deleted app, a previous release's env), which the next daemon would resurrect.
    func persist() {
        var table = AppTableFile.Table()
        table.bootID = BootID.current
        let ordered = apps.values.sorted { ($0.instances.first?.pmId ?? 0) < ($1.instances.first?.pmId ?? 0) }
        for app in ordered where !app.isDeleting {
            let instances = app.instances.map { instance in
                let child = instance.lifecycle.run.flatMap { children[$0] }
                return AppTableFile.Instance(pmId: instance.pmId, pid: child?.pid, startTicks: child?.startTicks)
            }
            table.apps.append(AppTableFile.App(spec: app.spec, instances: instances))
        }
        do {
            try tableFile.save(table)
            if tableUnsaved { logger.info("supervisor.table.saved_again") }
            tableUnsaved = false
        } catch {
            if !tableUnsaved { logger.error("supervisor.table.save_failed", metadata: ["error": "\(error)"]) }
            tableUnsaved = true
        }
    }
}
