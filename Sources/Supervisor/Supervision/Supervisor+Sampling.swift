import Shared

/// CPU and memory of every process, read from `/proc` every sample interval; an instance above `max_memory_restart`
/// is restarted.
extension Supervisor {
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
                child.cpuPercent = Self.cpuPercent(from: last.ticks, to: stat.cpuTicks, over: last.at.duration(to: now)) ?? child.cpuPercent
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
