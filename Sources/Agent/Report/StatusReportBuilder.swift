import Shared

/// Builds the status report (DESIGN §2) from the agent's state and the process table. Never includes env values: the
/// free text (messages, failure reasons, failure diagnoses with their log tails) goes through the instance secrets'
/// mask.
enum StatusReportBuilder {
    /// Most bytes of log tails one report carries over all its services (a report must stay far below the
    /// controller's `--max-status-bytes`, 1 MiB by default). Services past the budget report their diagnosis
    /// without its log tails. 256 KiB.
    static let logBudgetBytes = 256 * 1024

    static func report(
        services: [String],
        state: AgentState,
        table: [ManagedProcess],
        appNames: [String: Set<String>],
        health: [String: HealthState],
        notes: [String: String] = [:],
        targetSerials: [String: Int64],
        hostname: String,
        processManager: String,
        mask: SecretMask
    ) -> StatusReport {
        var logBudget = logBudgetBytes
        let statuses = services.map { service -> ServiceStatus in
            let serviceState = state[service]
            let names = appNames[service] ?? []
            let processes = table.filter { names.contains($0.name) }.sorted { $0.pmId < $1.pmId }.prefix(ServiceStatus.maximumProcesses).map {
                process in
                // Clamped to the ranges the controller accepts: one odd reading (a pm2 table gone wrong) must not get
                // the whole report refused.
                ProcessReport(
                    name: process.name,
                    pmId: Int64(clamping: process.pmId).clamped(to: 0...Int64(Int32.max)),
                    pid: process.pid.flatMap { $0 > 0 ? Int64($0) : nil },
                    status: process.status.rawValue,
                    restarts: Int64(clamping: process.restarts).clamped(to: 0...Int64(Int32.max)),
                    uptimeSeconds: process.uptimeSeconds?.clamped(to: 0...Int64(Int32.max) * 100),
                    memoryBytes: process.memoryBytes.clamped(to: 0...(1 << 50)),
                    cpuPercent: process.cpuPercent.isFinite ? process.cpuPercent.clamped(to: 0...ProcessReport.maximumCPUPercent) : 0
                )
            }
            return ServiceStatus(
                service: service,
                serial: serviceState.applied?.serial,
                version: serviceState.applied?.version,
                targetSerial: targetSerials[service] ?? serviceState.highestAcceptedSerial,
                phase: serviceState.phase,
                // A note (a crash loop seen in the table) is current, not saved: it leaves the report when it ends.
                message: ReportText.freeText(mask.apply(notes[service].map { "\(serviceState.message); \($0)" } ?? serviceState.message)),
                health: health[service] ?? .unknown,
                failures: serviceState.failures.prefix(10).map { failure in
                    var diagnosis = failure.diagnosis.map { bounded($0.mapText(mask.apply)) }
                    if let bytes = diagnosis?.logBytes {
                        if bytes > logBudget { diagnosis?.logs = [] } else { logBudget -= bytes }
                    }
                    return ReleaseFailure(
                        // A refusal's serial is what an unverified envelope claimed: one out of the range the
                        // controller accepts (a state file from before the claim was checked) is reported as 0.
                        serial: (0...Release.maximumSerial).contains(failure.serial) ? failure.serial : 0,
                        reason: ReportText.freeText(mask.apply(failure.reason)),
                        kind: failure.kind.rawValue,
                        diagnosis: diagnosis
                    )
                },
                processes: processes
            )
        }
        return StatusReport(
            agentVersion: FerryVersion.current,
            hostname: ReportText.clipped(hostname, toBytes: 255),
            processManager: processManager,
            services: statuses
        )
    }

    /// `diagnosis` within the limits the controller enforces (what the agent stored was built within them; a state
    /// file from elsewhere may not have been): one field over a limit would get the whole report refused.
    static func bounded(_ diagnosis: FailureDiagnosis) -> FailureDiagnosis {
        var result = diagnosis
        if var health = result.health {
            health.url = ReportText.clipped(health.url, toBytes: Limits.urlLength)
            health.body = health.body.map { ReportText.clipped(ReportText.oneLine($0), toBytes: FailureDiagnosis.maximumBodyBytes) }
            health.error = health.error.map { ReportText.clipped(ReportText.oneLine($0), toBytes: FailureDiagnosis.maximumErrorBytes) }
            if let status = health.status, !(100...999).contains(status) { health.status = nil }
            result.health = health
        }
        result.deadlineSeconds = result.deadlineSeconds.map { $0.clamped(to: 0...86_400) }
        result.instances = result.instances.prefix(FailureDiagnosis.maximumInstances).map { instance in
            var instance = instance
            instance.app = ReportText.clipped(ReportText.oneLine(instance.app), toBytes: 64)
            instance.status = ReportText.clipped(ReportText.oneLine(instance.status), toBytes: 32)
            instance.signal = instance.signal.map { ReportText.clipped(ReportText.oneLine($0), toBytes: 32) }
            instance.pmId = instance.pmId.clamped(to: 0...Int64(Int32.max))
            instance.restarts = instance.restarts.clamped(to: 0...Int64(Int32.max))
            instance.exitCode = instance.exitCode.map { $0.clamped(to: Int64(Int32.min)...Int64(Int32.max)) }
            return instance
        }
        result.logs = result.logs.prefix(FailureDiagnosis.maximumLogs).map { tail in
            var tail = tail
            tail.app = ReportText.clipped(ReportText.oneLine(tail.app), toBytes: 64)
            tail.pmIds = tail.pmIds.prefix(FailureDiagnosis.maximumInstances).map { $0.clamped(to: 0...Int64(Int32.max)) }
            var lines = tail.lines.suffix(FailureDiagnosis.maximumLines).map {
                ReportText.clipped(ReportText.oneLine($0), toBytes: FailureDiagnosis.maximumBytes)
            }
            while lines.reduce(0, { $0 + $1.utf8.count }) > FailureDiagnosis.maximumBytes, !lines.isEmpty {
                lines.removeFirst()
                tail.truncated = true
            }
            tail.lines = lines
            return tail
        }
        return result
    }
}

extension Comparable {
    fileprivate func clamped(to range: ClosedRange<Self>) -> Self { min(max(self, range.lowerBound), range.upperBound) }
}
