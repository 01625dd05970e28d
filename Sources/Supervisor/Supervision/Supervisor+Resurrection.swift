import Glibc
import Shared

/// After a daemon restart or crash: the saved table is started again, and what the previous daemon left running is
/// stopped first so nothing runs twice.
extension Supervisor {
    /// Starts the apps of the saved table (after a daemon restart or crash). Processes a crashed daemon left running
    /// are recognised by pid and `/proc` start time and stopped first, so nothing runs twice. Restart counts start
    /// at 0, as after `pm2 resurrect`.
    func resurrect() async {
        await operations.withLock { await savingTableAtEnd(resurrectSavedTable) }
    }

    private func resurrectSavedTable() async {
        guard !isShuttingDown else { return }
        let saved: AppTableFile.Table
        do {
            saved = try tableFile.load()
        } catch {
            logger.error("supervisor.table.unreadable", metadata: ["error": "\(error)"])
            let aside = "\(configuration.tablePath).unreadable-\(time(nil))"
            rename(configuration.tablePath, aside)
            // Nothing is resurrected, but what the previous daemon left running must still go: the agent starts
            // its apps again next, and two copies would fight over ports and work. Their kill timeouts were in the
            // table: they get PM2's default.
            await stopMarkedLeftovers(killTimeout: .milliseconds(Self.defaultKillTimeoutMilliseconds))
            return
        }
        // Processes recorded in an earlier boot are gone, whatever runs under their pid and start tick now.
        let sameBoot = BootID.isThisBoot(saved.bootID)
        await withTaskGroup(of: Void.self) { group in
            for app in saved.apps where sameBoot {
                for instance in app.instances {
                    guard let pid = instance.pid, let ticks = instance.startTicks else { continue }
                    // The saved table is read before its specs are checked (below): a kill timeout out of range is held to it.
                    let timeout = Duration.milliseconds(Self.savedKillTimeout(app.spec))
                    group.addTask { await self.stopOrphan(pid: pid, startTicks: ticks, killTimeout: timeout) }
                }
            }
        }
        // A process the table does not name: spawned by a daemon killed before it wrote the table again (during a
        // start or a reload), or started by one of its apps. Found by the home it was started for.
        let longest = saved.apps.map { Self.savedKillTimeout($0.spec) }.max() ?? Self.defaultKillTimeoutMilliseconds
        await stopMarkedLeftovers(killTimeout: .milliseconds(longest))
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
            // Ids a daemon would not have handed out (a table edited or damaged) are not reused: the app is renumbered.
            let reusable =
                savedIds.count == app.spec.instances && Set(savedIds).count == savedIds.count && used.isDisjoint(with: savedIds)
                && savedIds.allSatisfy(Self.pmIds.contains)
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

    /// PM2's default `kill_timeout`, for leftovers whose own is unknown.
    static let defaultKillTimeoutMilliseconds: Int64 = 1600

    /// A saved app's kill timeout, held to the range `validateForSupervisor` allows.
    static func savedKillTimeout(_ spec: AppSpec) -> Int64 {
        min(max(spec.killTimeoutMilliseconds, 0), AppSpec.maximumKillTimeoutMilliseconds)
    }

    /// The environment entry every app process starts with (`FERRY_SUPERVISOR_HOME=<home>`), as PM2 gives its apps
    /// `PM2_HOME`: it names the daemon home a process belongs to, whatever became of the daemon that started it.
    static let homeMarker = "FERRY_SUPERVISOR_HOME"

    /// The processes started for this home by a previous daemon that still run: every process but this one whose
    /// environment holds `FERRY_SUPERVISOR_HOME=<home>`.
    static func markedLeftovers(home: String) -> [(pid: Int32, stat: ProcStat)] {
        markedProcesses(entry: "\(homeMarker)=\(home)")
    }

    /// Every running process but this one whose environment holds `entry` (`NAME=value`), outside the process group
    /// `group` when one is given.
    static func markedProcesses(entry: String, outside group: Int32? = nil) -> [(pid: Int32, stat: ProcStat)] {
        let me = getpid()
        return ProcStat.allPids().compactMap { pid in
            guard pid != me, let stat = ProcStat.read(pid: pid), !stat.hasExited, stat.processGroup != group,
                ProcStat.environment(of: pid, contains: entry)
            else { return nil }
            return (pid, stat)
        }
    }

    /// Stops what `markedLeftovers` finds, with the longest `kill_timeout` of the saved apps.
    private func stopMarkedLeftovers(killTimeout: Duration) async {
        let found = Self.markedLeftovers(home: configuration.home)
        guard !found.isEmpty else { return }
        logger.warning("supervisor.leftovers.stopping", metadata: ["process.pids": "\(found.map(\.pid).sorted())"])
        await stop(found, killTimeout: killTimeout)
    }

    /// Stops a process a previous daemon started, if it still runs (same pid and start time) and leads its group.
    private func stopOrphan(pid: Int32, startTicks: UInt64, killTimeout: Duration) async {
        guard let stat = ProcStat.read(pid: pid), stat.startTicks == startTicks, stat.processGroup == pid, !stat.hasExited
        else { return }
        logger.info("supervisor.orphan.stopping", metadata: ["process.pid": "\(pid)"])
        await stop([(pid, stat)], killTimeout: killTimeout)
    }

    /// Stops processes this daemon did not start (`ForeignProcessStop`), each with `killTimeout`.
    private func stop(_ found: [(pid: Int32, stat: ProcStat)], killTimeout: Duration) async {
        let targets = found.map { ForeignProcessStop.Target(pid: $0.pid, startTicks: $0.stat.startTicks, killTimeout: killTimeout) }
        _ = await ForeignProcessStop.stop(targets, killGrace: configuration.killGrace)
    }
}
