import Shared

/// CPU and memory of every process, read from `/proc` when the table is listed and every `memoryCheckInterval`; an
/// instance above `max_memory_restart` is restarted.
///
/// Nothing is read on a clock of its own more often than that: an idle daemon sleeps. (It used to read every process
/// once a second, which cost the host more CPU than the agent itself.)
extension Supervisor {
    /// CPU use is worked out over at least this long: a table listed twice in a row keeps the last figure instead of
    /// one measured over a few milliseconds.
    static let minimumCPUWindow: Duration = .seconds(1)

    /// Starts the memory check every `memoryCheckInterval` (which also saves again a table whose last save failed and
    /// rotates the daemon's own log).
    /// Stops at `stopAll`.
    func startSampling() {
        guard sampler == nil, !isShuttingDown else { return }
        let interval = configuration.memoryCheckInterval
        sampler = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                guard !Task.isCancelled else { return }
                self.sample()
                if self.tableWriter.lastWriteFailed { self.persist() }
                self.rotateOwnLogIfNeeded()
                self.releaseCodePagesIfDue()
            }
        }
    }

    /// Rotates the daemon's own log (`DaemonLog`) past the apps' size limit.
    func rotateOwnLogIfNeeded() {
        let path = configuration.ownLogPath
        switch DaemonLog.rotateIfNeeded(path: path, rotation: configuration.logRotation, owned: &ownLog) {
        case .rotated?:
            logger.info("supervisor.log.rotated", metadata: ["file.path": "\(path)", "log.kept": "\(configuration.logRotation.keptFiles)"])
        case .reopened?:
            logger.notice("supervisor.log.reopened", metadata: ["file.path": "\(path)", "reason": "the file was removed"])
        case .reopenedAfterRename?:
            logger.notice("supervisor.log.reopened", metadata: ["file.path": "\(path)", "reason": "the file was renamed"])
        case nil:
            break
        }
    }

    /// Lets go of the code pages start-up or the last change of the table ran (`LoadedCode`), at a memory check and at
    /// most once per `LoadedCode.Pacing` interval: an idle daemon's RSS is then what answering `list` runs.
    func releaseCodePagesIfDue() {
        guard configuration.releasesCodePages, codePages.releaseIsDue(at: .now) else { return }
        // Not inside the log call: its metadata is an autoclosure, which runs only when debug lines are logged.
        let outcome = LoadedCode.release()
        logger.debug("supervisor.code_pages.released", metadata: outcome.logFields.mapValues { .string($0) })
    }

    /// Reads every process's CPU and memory now, and restarts an instance above its `max_memory_restart`.
    func sample() {
        let now = ContinuousClock.now
        for (runID, var child) in children {
            guard let stat = ProcStat.read(pid: child.pid) else { continue }
            if let last = child.lastSample {
                let elapsed = last.at.duration(to: now)
                if elapsed >= Self.minimumCPUWindow {
                    child.cpuPercent = Self.cpuPercent(from: last.ticks, to: stat.cpuTicks, over: elapsed) ?? child.cpuPercent
                    child.lastSample = (stat.cpuTicks, now)
                }
            } else {
                child.lastSample = (stat.cpuTicks, now)
            }
            child.memoryBytes = ProcStat.residentBytes(pid: child.pid) ?? child.memoryBytes
            children[runID] = child
            guard let app = apps[child.app], let limit = app.spec.maxMemoryBytes, child.memoryBytes > limit,
                !child.stopRequested, !child.retiring, !memoryRestartsPending.contains(runID)
            else { continue }
            memoryRestartsPending.insert(runID)
            logger.info(
                "supervisor.instance.memory_limit",
                metadata: [
                    "ferry.app": "\(child.app)", "process.pm_id": "\(child.pmId)",
                    "process.rss": "\(child.memoryBytes)", "app.max_memory": "\(limit)",
                ]
            )
            Task { await self.restartForMemory(InstanceKey(app: child.app, pmId: child.pmId), runID: runID) }
        }
    }

    /// CPU use between two samples in percent of one core, rounded to a tenth; `nil` when it cannot be told (no time
    /// passed, or the counter went backwards).
    static func cpuPercent(from startTicks: UInt64, to endTicks: UInt64, over elapsed: Duration) -> Double? {
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        guard seconds > 0, endTicks >= startTicks else { return nil }
        return (Double(endTicks - startTicks) / Double(ProcStat.ticksPerSecond) / seconds * 1000).rounded() / 10
    }

    private func restartForMemory(_ key: InstanceKey, runID: RunID) async {
        defer { memoryRestartsPending.remove(runID) }
        try? await exclusively { () async throws(SupervisorFailure) in
            // Only the process that went over the limit: it may have been replaced while this waited.
            guard instance(key)?.lifecycle.run == runID else { return }
            pump.note(
                "[ferry-supervisor] memory above max_memory_restart: restarting",
                logPath: logPath(key, .error),
                rotation: configuration.logRotation
            )
            await perform(transition(key) { try $0.restart() }, for: key)
        }
    }
}
