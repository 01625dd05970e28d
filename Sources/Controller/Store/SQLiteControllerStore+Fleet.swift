import Foundation
import SQLKit
import Shared

/// The fleet views over 10,000 agents: counts grouped in SQL, pages of agents in SQL, statuses of one page only.
extension SQLiteControllerStore {
    func fleetCounts(staleBefore: Date) async throws -> [FleetCountRow] {
        let rows = try await readDB.raw(
            """
            SELECT s.value AS service, json_extract(st.status, '$.version') AS version, json_extract(st.status, '$.serial') AS serial,
                   COALESCE(json_extract(st.status, '$.phase'), 'unreported') AS phase, json_extract(st.status, '$.health') AS health,
                   COALESCE(a.last_seen, a.enrolled_at) < \(bind: StoredTime.milliseconds(staleBefore)) AS stale, COUNT(*) AS n
            FROM agents AS a, json_each(a.services) AS s
            LEFT JOIN service_status AS st ON st.agent_id = a.id AND st.service = s.value
            GROUP BY 1, 2, 3, 4, 5, 6
            ORDER BY 1, 3 DESC, 2, 4, 5, 6
            """
        ).all()
        return try rows.map { row in
            FleetCountRow(
                service: try row.decode(column: "service", as: String.self),
                version: try row.decode(column: "version", as: String?.self),
                serial: try row.decode(column: "serial", as: Int64?.self),
                phase: try row.decode(column: "phase", as: String.self),
                health: try row.decode(column: "health", as: String?.self),
                stale: try row.decode(column: "stale", as: Int.self) != 0,
                count: try row.decode(column: "n", as: Int.self)
            )
        }
    }

    func agentPage(_ query: FleetQuery, staleBefore: Date) async throws -> AgentPage {
        let staleLimit = StoredTime.milliseconds(staleBefore)
        var conditions: [SQLQueryString] = ["1 = 1"]
        if let service = query.service {
            conditions.append("EXISTS (SELECT 1 FROM json_each(a.services) AS s WHERE s.value = \(bind: service))")
        }
        if query.phase == FleetQuery.unreported {
            if let service = query.service {
                conditions.append("NOT EXISTS (SELECT 1 FROM service_status AS st WHERE st.agent_id = a.id AND st.service = \(bind: service))")
            } else {
                // Some service of the agent has no status.
                conditions.append(
                    """
                    EXISTS (SELECT 1 FROM json_each(a.services) AS s WHERE NOT EXISTS
                        (SELECT 1 FROM service_status AS st WHERE st.agent_id = a.id AND st.service = s.value))
                    """
                )
            }
        }
        var statusConditions: [SQLQueryString] = []
        if let service = query.service, query.version != nil || (query.phase != nil && query.phase != FleetQuery.unreported) || query.health != nil {
            statusConditions.append("st.service = \(bind: service)")
        }
        if let version = query.version { statusConditions.append("json_extract(st.status, '$.version') = \(bind: version)") }
        if let phase = query.phase, phase != FleetQuery.unreported { statusConditions.append("json_extract(st.status, '$.phase') = \(bind: phase)") }
        if let health = query.health { statusConditions.append("json_extract(st.status, '$.health') = \(bind: health.rawValue)") }
        if !statusConditions.isEmpty {
            conditions.append(
                "EXISTS (SELECT 1 FROM service_status AS st WHERE st.agent_id = a.id AND \(statusConditions.joined(separator: " AND ")))"
            )
        }
        if let stale = query.stale {
            conditions.append(
                stale ? "COALESCE(a.last_seen, a.enrolled_at) < \(bind: staleLimit)" : "COALESCE(a.last_seen, a.enrolled_at) >= \(bind: staleLimit)"
            )
        }
        if let text = query.text {
            conditions.append("(instr(lower(a.name), lower(\(bind: text))) > 0 OR instr(lower(a.hostname), lower(\(bind: text))) > 0)")
        }
        let filter = conditions.joined(separator: " AND ")
        let total = try await readDB.raw("SELECT COUNT(*) AS n FROM agents AS a WHERE \(filter)").first()?.decode(column: "n", as: Int.self) ?? 0
        let rows = try await readDB.raw(
            """
            SELECT \(unsafeRaw: Self.agentColumns.split(separator: ",").map { "a." + $0.trimmingCharacters(in: .whitespaces) }.joined(separator: ", ")),
                   (SELECT MIN(CASE WHEN json_extract(st.status, '$.phase') IN ('failed', 'rolled-back') THEN 0
                                    WHEN json_extract(st.status, '$.health') = 'unhealthy' THEN 1
                                    WHEN json_extract(st.status, '$.phase') = 'deploying' THEN 3 ELSE 4 END)
                    FROM service_status AS st WHERE st.agent_id = a.id) AS trouble
            FROM agents AS a WHERE \(filter)
            ORDER BY CASE WHEN trouble <= 1 THEN trouble
                          WHEN COALESCE(a.last_seen, a.enrolled_at) < \(bind: staleLimit) THEN 2
                          ELSE COALESCE(trouble, 4) END, a.name
            LIMIT \(bind: query.limit) OFFSET \(bind: query.offset)
            """
        ).all()
        return AgentPage(total: total, agents: try rows.map(Self.agent(from:)))
    }

    func agentCounts() async throws -> [String: Int] {
        var counts: [String: Int] = [:]
        for row in try await readDB.raw("SELECT s.value AS service, COUNT(*) AS n FROM agents AS a, json_each(a.services) AS s GROUP BY 1").all() {
            counts[try row.decode(column: "service", as: String.self)] = try row.decode(column: "n", as: Int.self)
        }
        return counts
    }

    func serviceStatuses(agentIDs: [String]) async throws -> [ServiceStatusRecord] {
        guard !agentIDs.isEmpty else { return [] }
        var records: [ServiceStatusRecord] = []
        for start in stride(from: 0, to: agentIDs.count, by: 1_000) {
            let ids = SQLList(agentIDs[start..<min(agentIDs.count, start + 1_000)].map { SQLBind($0) })
            records += try await readDB.raw(
                "SELECT agent_id, status, updated_at FROM service_status WHERE agent_id IN \(SQLGroupExpression(ids)) ORDER BY agent_id, service"
            ).all().map(Self.serviceStatusRecord(from:))
        }
        return records
    }
}
