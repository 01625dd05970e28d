import Shared

/// Builds the status report (DESIGN §2) from the agent's state and the process table. Never includes env values: the
/// free text (messages, failure reasons) goes through the instance secrets' mask.
enum StatusReportBuilder {
    static func report(
        services: [String],
        state: AgentState,
        table: [ManagedProcess],
        appNames: [String: Set<String>],
        health: [String: HealthState],
        targetSerials: [String: Int64],
        hostname: String,
        processManager: String,
        mask: SecretMask
    ) -> StatusReport {
        let statuses = services.map { service -> ServiceStatus in
            let serviceState = state[service]
            let names = appNames[service] ?? []
            let processes = table.filter { names.contains($0.name) }.sorted { $0.pmId < $1.pmId }.map { process in
                // Clamped to the ranges the controller accepts: one odd reading (a pm2 table gone wrong) must not get
                // the whole report refused.
                ProcessReport(
                    name: process.name,
                    pmId: Int64(clamping: process.pmId).clamped(to: 0...Int64(Int32.max)),
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
                message: clipped(mask.apply(serviceState.message), toBytes: 2000),
                health: health[service] ?? .unknown,
                failures: serviceState.failures.prefix(10).map {
                    ReleaseFailure(serial: $0.serial, reason: clipped(mask.apply($0.reason), toBytes: 2000), kind: $0.kind.rawValue)
                },
                processes: processes
            )
        }
        return StatusReport(
            agentVersion: FerryVersion.current,
            hostname: clipped(hostname, toBytes: 255),
            processManager: processManager,
            services: statuses
        )
    }

    /// At most `limit` UTF-8 bytes of `text`, cut on a character boundary: the controller's limits count bytes, and
    /// one over-long field would get the whole report refused.
    private static func clipped(_ text: String, toBytes limit: Int) -> String {
        guard text.utf8.count > limit else { return text }
        var result = ""
        var bytes = 0
        for character in text {
            bytes += character.utf8.count
            if bytes > limit { break }
            result.append(character)
        }
        return result
    }
}

extension Comparable {
    fileprivate func clamped(to range: ClosedRange<Self>) -> Self { min(max(self, range.lowerBound), range.upperBound) }
}
