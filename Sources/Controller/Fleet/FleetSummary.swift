import Shared

/// Where the fleet stands, per service, in counts: how many agents run which version in which phase, how many failed,
/// are unhealthy, stale or have not reported. What `GET /v1/fleet` and the dashboard show first, so 10,000 agents fit
/// on one screen; the agents themselves are listed a page at a time (`FleetQuery`).
struct FleetSummary: Sendable, Equatable {
    /// Agents of one service on one version (serial) of it.
    struct Version: Sendable, Equatable {
        /// `nil` for agents that have not reported the service.
        var version: String?
        var serial: Int64?
        /// Agents by phase (`running`, `deploying`, `failed`, `rolled-back`, `waiting`, or `unreported`).
        var phases: [String: Int]
        var agents: Int
        /// Failed or rolled back.
        var failing: Int
    }

    /// One service across the fleet.
    struct Service: Sendable, Equatable {
        var name: String
        var agents = 0
        /// Failed or rolled back (phase).
        var failing = 0
        /// Reporting `unhealthy`.
        var unhealthy = 0
        var stale = 0
        var unreported = 0
        /// Versions with failing agents first, then newest serial first.
        var versions: [Version] = []
    }

    /// By service name.
    var services: [Service]

    /// The phases counted as failing.
    static let failingPhases: Set<String> = [DeployPhase.failed.rawValue, DeployPhase.rolledBack.rawValue]

    /// Sums the store's grouped counts.
    init(_ rows: [FleetCountRow]) {
        var services: [String: Service] = [:]
        // Serial and version as they are: a text key ("- " for no version, and for an empty one) merged the two.
        struct Key: Hashable {
            var serial: Int64?
            var version: String?
        }
        var versions: [String: [Key: Version]] = [:]
        for row in rows {
            var service = services[row.service] ?? Service(name: row.service)
            service.agents += row.count
            if Self.failingPhases.contains(row.phase) { service.failing += row.count }
            if row.health == HealthState.unhealthy.rawValue { service.unhealthy += row.count }
            if row.stale { service.stale += row.count }
            if row.phase == FleetQuery.unreported { service.unreported += row.count }
            services[row.service] = service
            let key = Key(serial: row.serial, version: row.version)
            var version = versions[row.service]?[key] ?? Version(version: row.version, serial: row.serial, phases: [:], agents: 0, failing: 0)
            version.phases[row.phase, default: 0] += row.count
            version.agents += row.count
            if Self.failingPhases.contains(row.phase) { version.failing += row.count }
            versions[row.service, default: [:]][key] = version
        }
        self.services = services.values.sorted { $0.name < $1.name }.map { service in
            var service = service
            service.versions = (versions[service.name] ?? [:]).values.sorted { a, b in
                if (a.failing > 0) != (b.failing > 0) { return a.failing > 0 }
                return (a.serial ?? -1, a.version ?? "") > (b.serial ?? -1, b.version ?? "")
            }
            return service
        }
    }

    /// The `summary` of `GET /v1/fleet`.
    var json: JSONValue {
        .array(
            services.map { service in
                .object([
                    "service": .string(service.name), "agents": .integer(Int64(service.agents)), "failing": .integer(Int64(service.failing)),
                    "unhealthy": .integer(Int64(service.unhealthy)), "stale": .integer(Int64(service.stale)),
                    "unreported": .integer(Int64(service.unreported)),
                    "versions": .array(
                        service.versions.map { version in
                            .object([
                                "version": version.version.map { .string($0) } ?? .null,
                                "serial": version.serial.map { .integer($0) } ?? .null,
                                "agents": .integer(Int64(version.agents)),
                                "failing": .integer(Int64(version.failing)),
                                "phases": .object(version.phases.mapValues { .integer(Int64($0)) }),
                            ])
                        }
                    ),
                ])
            }
        )
    }
}
