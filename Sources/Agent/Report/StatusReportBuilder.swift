import Shared

/// Builds the status report (DESIGN §2) from the agent's state and the process table. Never includes env values.
enum StatusReportBuilder {
    static func report(
        services: [String],
        state: AgentState,
        table: [ManagedProcess],
        appNames: [String: Set<String>],
        health: [String: HealthState],
        targetSerials: [String: Int64],
        hostname: String,
        processManager: String
    ) -> StatusReport {
        let statuses = services.map { service -> ServiceStatus in
            let serviceState = state[service]
            let names = appNames[service] ?? []
            let processes = table.filter { names.contains($0.name) }.sorted { $0.pmId < $1.pmId }.map { process in
                ProcessReport(
                    name: process.name,
                    pmId: Int64(process.pmId),
                    status: process.status.rawValue,
                    restarts: Int64(process.restarts),
                    uptimeSeconds: process.uptimeSeconds,
                    memoryBytes: process.memoryBytes,
                    cpuPercent: process.cpuPercent
                )
            }
            return ServiceStatus(
                service: service,
                serial: serviceState.applied?.serial,
                version: serviceState.applied?.version,
                targetSerial: targetSerials[service] ?? serviceState.highestAcceptedSerial,
                phase: serviceState.phase,
                message: clipped(serviceState.message, toBytes: 2000),
                health: health[service] ?? .unknown,
                failures: serviceState.failures.prefix(10).map {
                    ReleaseFailure(serial: $0.serial, reason: clipped($0.reason, toBytes: 2000), kind: $0.kind)
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
