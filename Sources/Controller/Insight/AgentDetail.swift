import Foundation
import Shared

/// One agent as `ferry-controller agents show`, `GET /v1/agents/{name}` and the dashboard's agent page show it: its
/// record, every service with its processes and failures (diagnoses and log tails included), and its last reports.
struct AgentDetail: Sendable {
    var record: AgentRecord
    var isStale: Bool
    /// The latest status of each service the agent reported, by service name.
    var statuses: [String: ServiceStatusRecord]
    /// The newest reports first, at most `historyCount`.
    var history: [StatusHistoryEntry]
    /// Two running agents reporting as this one: as this controller saw it (`AgentIdentityWatch`) and as the database
    /// holds it (written by every controller that followed it), together; `nil` when none stands.
    var identityConflict: AgentIdentityWatch.Standing? = nil

    /// How many of the agent's stored reports are shown.
    static let historyCount = 10

    /// The agent with id `key` when `key` has an id's shape, else the one named `key` (or, failing that, with id `key`),
    /// or `nil`. An id is looked up first: a name of that shape (refused at enrolment since, but stored before) must not
    /// shadow the agent whose id it copies.
    static func load(_ key: String, from core: ControllerCore) async throws -> AgentDetail? {
        let byID = EnrollRequest.hasAgentIDShape(key)
        var found = byID ? try await core.store.agent(id: key) : try await core.store.agent(named: key)
        if found == nil { found = byID ? try await core.store.agent(named: key) : try await core.store.agent(id: key) }
        guard let record = found else { return nil }
        var statuses: [String: ServiceStatusRecord] = [:]
        for status in try await core.store.serviceStatuses(agentID: record.id) { statuses[status.status.service] = status }
        let now = core.now()
        // The row already says when the stored conflict last switched back: its hostnames are read only if it stands.
        var stored: AgentIdentityWatch.Standing? = nil
        if let last = record.identityConflictAt, core.identities.stands(lastSwitchAt: last, at: now) {
            stored = try await core.store.identityConflict(agentID: record.id)
        }
        return AgentDetail(
            record: record,
            isStale: core.isStale(record, at: now),
            statuses: statuses,
            history: try await core.store.statusHistory(agentID: record.id, limit: historyCount),
            identityConflict: AgentIdentityWatch.Standing.combined(core.watchedConflict(record, at: now), stored)
        )
    }

    /// The agent's services in its enrolment order, then any other service it reported.
    var serviceNames: [String] {
        record.services + statuses.keys.filter { !record.services.contains($0) }.sorted()
    }

    /// The `GET /v1/agents/{name}` document.
    var json: JSONValue {
        let services: [JSONValue] = serviceNames.map { service in
            guard let entry = statuses[service] else { return .object(["service": .string(service), "reported": .bool(false)]) }
            return entry.status.detailJSON(updatedAt: entry.updatedAt)
        }
        let reports: [JSONValue] = history.map { entry in
            .object([
                "receivedAt": .string(Timestamp.format(entry.receivedAt)),
                "agentVersion": .string(entry.report.agentVersion),
                "services": .array(
                    entry.report.services.map { status in
                        .object([
                            "service": .string(status.service), "serial": status.serial.map { .integer($0) } ?? .null,
                            "version": status.version.map { .string($0) } ?? .null, "phase": .string(status.phase.rawValue),
                            "health": .string(status.health.rawValue), "message": .string(status.message),
                        ])
                    }
                ),
            ])
        }
        return .object([
            "id": .string(record.id), "name": .string(record.name), "hostname": .string(record.hostname),
            "enrolledAt": .string(Timestamp.format(record.enrolledAt)),
            // The EC2 instance it proved it runs on when it enrolled (`serve --instance-identity-cert`), else null.
            "instanceId": record.instanceID.map { .string($0) } ?? .null,
            "lastSeen": record.lastSeen.map { .string(Timestamp.format($0)) } ?? .null,
            "stale": .bool(isStale),
            "identityConflict": identityConflict.map { conflict in
                .object([
                    "hostnames": .array(conflict.hostnames.map { .string($0) }),
                    "noticedAt": .string(Timestamp.format(conflict.noticedAt)),
                    "lastSwitchAt": .string(Timestamp.format(conflict.lastSwitchAt)),
                ])
            } ?? .null,
            "agentVersion": record.agentVersion.map { .string($0) } ?? .null,
            "processManager": record.processManager.map { .string($0) } ?? .null,
            "services": .array(services),
            "reports": .array(reports),
        ])
    }
}
