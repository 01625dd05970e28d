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

    /// Saves the table (apps being deleted left out) with each instance's live process: handed to the writer, which
    /// writes the newest table off the actor (`AppTableWriter`). During a request only marks it changed: the request
    /// saves it once at its end (`savingTableAtEnd`). A save that fails is made again at every memory check until it
    /// works: otherwise the file would keep the table from before (a deleted app, a previous release's env), which the
    /// next daemon would resurrect.
    func persist() {
        guard savesDeferred == 0 else {
            tableChanged = true
            return
        }
        tableWriter.submit(savedTable())
    }

    /// Saves the table and returns once it is written (or its write failed).
    func saveTable() async {
        tableChanged = false
        await tableWriter.waitUntilWritten(tableWriter.submit(savedTable()))
    }

    /// Runs `body` (a request, resurrection, the final stop) with the table's saves held back, then saves it once
    /// when anything changed, before the request is answered: the answer still means the table on disk has it. A start
    /// of 16 instances wrote the table 17 times.
    func savingTableAtEnd<Failure: Error>(_ body: () async throws(Failure) -> Void) async throws(Failure) {
        savesDeferred += 1
        var failure: Failure?
        do {
            try await body()
        } catch {
            failure = error
        }
        savesDeferred -= 1
        if savesDeferred == 0, tableChanged { await saveTable() }
        if let failure { throw failure }
    }

    /// The table as `apps.json` keeps it.
    private func savedTable() -> AppTableFile.Table {
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
        return table
    }
}
