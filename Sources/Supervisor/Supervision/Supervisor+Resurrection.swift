import Glibc
import Shared

/// After a daemon restart or crash: the saved table is started again, and what the previous daemon left running is
/// stopped first so nothing runs twice.
extension Supervisor {
    /// Starts the apps of the saved table (after a daemon restart or crash). Processes a crashed daemon left running
    /// are recognised by pid and `/proc` start time and stopped first, so nothing runs twice. Restart counts start
    /// at 0, as after `pm2 resurrect`.
    func resurrect() async {
        await operations.withLock {
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
                    instances.append(SupervisedInstance(pmId: pmId, index: index, restartBackoff: configuration.restartBackoff))
                }
                apps[app.spec.name] = SupervisedApp(spec: app.spec, instances: instances)
                await forEachInstance(of: app.spec.name) { try $0.launch() }
                logger.info("supervisor.app.resurrected", metadata: ["ferry.app": "\(app.spec.name)", "app.instances": "\(instances.count)"])
            }
            persist()
        }
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
}
