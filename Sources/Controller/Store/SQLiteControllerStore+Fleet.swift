import Foundation
import SQLKit
import Shared

/// The fleet views over 10,000 agents: counts grouped in SQL, pages of agents in SQL, statuses of one page only.
///
/// They read each status's version, serial, phase and health from the columns written beside its JSON (schema
/// version 6), not from the JSON: parsing 10,000 statuses per view was most of a view's time, on PostgreSQL above all
/// (docs/benchmarks.md).
extension SQLiteControllerStore {
    func fleetCounts(staleBefore: Date) async throws -> [FleetCountRow] {
        // CROSS JOIN, not a comma: PostgreSQL binds the LEFT JOIN tighter than a comma, and its ON could not see `a`.
        // `stale` is a CASE: PostgreSQL's comparisons are booleans. NULLS FIRST/LAST keep SQLite's order on both.
        let rows = try await readDB.raw(
            """
            SELECT s.value AS service, st.version AS version, st.serial AS serial,
                   COALESCE(st.phase, 'unreported') AS phase, st.health AS health,
                   CASE WHEN COALESCE(a.last_seen, a.enrolled_at) < \(bind: StoredTime.milliseconds(staleBefore)) THEN 1 ELSE 0 END AS stale,
                   COUNT(*) AS n
            FROM agents AS a CROSS JOIN \(unsafeRaw: dialect.jsonTextElements(of: "a.services", as: "s"))
            LEFT JOIN service_status AS st ON st.agent_id = a.id AND st.service = s.value
            GROUP BY 1, 2, 3, 4, 5, 6
            ORDER BY 1, 3 DESC NULLS LAST, 2 NULLS FIRST, 4, 5 NULLS FIRST, 6
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

    func agentPage(_ query: FleetQuery, staleBefore: Date, conflictsSince: Date) async throws -> AgentPage {
        let staleLimit = StoredTime.milliseconds(staleBefore)
        var conditions: [SQLQueryString] = ["1 = 1"]
        if let service = query.service {
            conditions.append(
                "EXISTS (SELECT 1 FROM \(unsafeRaw: dialect.jsonTextElements(of: "a.services", as: "s")) WHERE s.value = \(bind: service))"
            )
        }
        if query.phase == FleetQuery.unreported {
            if let service = query.service {
                conditions.append("NOT EXISTS (SELECT 1 FROM service_status AS st WHERE st.agent_id = a.id AND st.service = \(bind: service))")
            } else {
                // Some service of the agent has no status.
                conditions.append(
                    """
                    EXISTS (SELECT 1 FROM \(unsafeRaw: dialect.jsonTextElements(of: "a.services", as: "s")) WHERE NOT EXISTS
                        (SELECT 1 FROM service_status AS st WHERE st.agent_id = a.id AND st.service = s.value))
                    """
                )
            }
        }
        // Conditions on a status's fields; the rows are the agent's statuses (of `service` when given).
        var statusConditions: [SQLQueryString] = []
        if let version = query.version { statusConditions.append(version.isEmpty ? "st.version IS NULL" : "st.version = \(bind: version)") }
        if query.phase != FleetQuery.unreported {
            switch query.serial {
            case .serial(let serial): statusConditions.append("st.serial = \(bind: serial)")
            case .none?: statusConditions.append("st.serial IS NULL")
            case nil: break
            }
        }
        if query.phase == FleetQuery.failing {
            statusConditions.append("st.phase IN (\(bind: DeployPhase.failed.rawValue), \(bind: DeployPhase.rolledBack.rawValue))")
        } else if let phase = query.phase, phase != FleetQuery.unreported {
            statusConditions.append("st.phase = \(bind: phase)")
        }
        if let health = query.health { statusConditions.append("st.health = \(bind: health.rawValue)") }
        if !statusConditions.isEmpty {
            if let service = query.service { statusConditions.append("st.service = \(bind: service)") }
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
            let needle = dialect.asciiLowercased("\(bind: text)")
            let name = dialect.contains(dialect.asciiLowercased("a.name"), needle)
            let hostname = dialect.contains(dialect.asciiLowercased("a.hostname"), needle)
            conditions.append("(\(name) OR \(hostname))")
        }
        let filter = conditions.joined(separator: " AND ")
        // Past a name (`after`, by name only): the page starts there whatever was enrolled or removed before it. The
        // count is of those agents too, so that a page's "of N" and whether a next page exists hold for it.
        let rowFilter: SQLQueryString = query.after.map { "\(filter) AND a.name > \(bind: $0)" } ?? filter
        let total = try await readDB.raw("SELECT COUNT(*) AS n FROM agents AS a WHERE \(rowFilter)").first()?.decode(column: "n", as: Int.self) ?? 0
        // `trouble` is ordered on from outside: PostgreSQL's ORDER BY may not use an output name inside an expression.
        let order: SQLQueryString =
            query.byName
            ? "page.name"
            : """
            CASE WHEN page.conflict_last_switch_at > \(bind: StoredTime.milliseconds(conflictsSince)) THEN 0 ELSE 1 END,
                     CASE WHEN page.trouble <= 1 THEN page.trouble
                          WHEN COALESCE(page.last_seen, page.enrolled_at) < \(bind: staleLimit) THEN 2
                          ELSE COALESCE(page.trouble, 4) END, page.name
            """
        let rows = try await readDB.raw(
            """
            SELECT * FROM (
                SELECT \(unsafeRaw: Self.agentColumns.split(separator: ",").map { "a." + $0.trimmingCharacters(in: .whitespaces) }.joined(separator: ", ")),
                       (SELECT MIN(CASE WHEN st.phase IN ('failed', 'rolled-back') THEN 0 WHEN st.health = 'unhealthy' THEN 1
                                        WHEN st.phase = 'deploying' THEN 3 ELSE 4 END)
                        FROM service_status AS st WHERE st.agent_id = a.id) AS trouble
                FROM agents AS a WHERE \(rowFilter)
            ) AS page
            ORDER BY \(order)
            LIMIT \(bind: query.limit) OFFSET \(bind: query.offset)
            """
        ).all()
        return AgentPage(total: total, agents: try rows.map(Self.agent(from:)))
    }

    func agentCounts() async throws -> [String: Int] {
        var counts: [String: Int] = [:]
        for row in try await readDB.raw(
            "SELECT s.value AS service, COUNT(*) AS n FROM agents AS a CROSS JOIN \(unsafeRaw: dialect.jsonTextElements(of: "a.services", as: "s")) GROUP BY 1"
        ).all() {
            counts[try row.decode(column: "service", as: String.self)] = try row.decode(column: "n", as: Int.self)
        }
        return counts
    }

    func agentTotals(staleBefore: Date) async throws -> AgentTotals {
        let staleLimit = StoredTime.milliseconds(staleBefore)
        let row = try await readDB.raw(
            """
            SELECT COUNT(*) AS enrolled,
                   COALESCE(SUM(CASE WHEN COALESCE(last_seen, enrolled_at) < \(bind: staleLimit) THEN 1 ELSE 0 END), 0) AS stale
            FROM agents
            """
        ).first()
        guard let row else { return AgentTotals(enrolled: 0, stale: 0) }
        return AgentTotals(enrolled: try row.decode(column: "enrolled", as: Int.self), stale: try row.decode(column: "stale", as: Int.self))
    }

    func agentNames(service: String?) async throws -> [AgentName] {
        let rows: [any SQLRow]
        if let service {
            rows = try await readDB.raw(
                """
                SELECT a.id, a.name FROM agents AS a
                WHERE EXISTS (SELECT 1 FROM \(unsafeRaw: dialect.jsonTextElements(of: "a.services", as: "s")) WHERE s.value = \(bind: service))
                """
            ).all()
        } else {
            rows = try await readDB.raw("SELECT id, name FROM agents").all()
        }
        return try rows.map { row in
            AgentName(id: try row.decode(column: "id", as: String.self), name: try row.decode(column: "name", as: String.self))
        }
    }

    func rolloutStatuses(service: String) async throws -> [String: ServiceStatusRecord] {
        try await rolloutStatuses(service: service, where: "st.service = \(bind: service)")
    }

    func rolloutViewStatuses(service: String) async throws -> [String: ServiceStatus] {
        // The two reads split the rows exactly: the second's condition is the first's negation, NULLs included.
        let rows = try await readDB.raw(
            """
            SELECT agent_id, version, serial, phase, health FROM service_status
            WHERE service = \(bind: service) AND failure_count = 0 AND phase NOT IN ('failed', 'rolled-back')
            """
        ).all()
        var statuses: [String: ServiceStatus] = [:]
        statuses.reserveCapacity(rows.count)
        for row in rows {
            let agentID = try row.decode(column: "agent_id", as: String.self)
            guard let phase = DeployPhase(rawValue: try row.decode(column: "phase", as: String.self)),
                let health = try row.decode(column: "health", as: String?.self).flatMap(HealthState.init(rawValue:))
            else {
                throw StoreError.corruptRow(table: "service_status", reason: "the status of \(agentID) for \(service) lacks a valid phase or health")
            }
            statuses[agentID] = ServiceStatus(
                service: service,
                serial: try row.decode(column: "serial", as: Int64?.self),
                version: try row.decode(column: "version", as: String?.self),
                targetSerial: nil,
                phase: phase,
                message: "",
                health: health,
                failures: [],
                processes: []
            )
        }
        let whole = try await rolloutStatuses(
            service: service,
            where: """
                st.service = \(bind: service) AND (st.failure_count IS NULL OR st.failure_count <> 0 OR st.phase IS NULL \
                OR st.phase IN ('failed', 'rolled-back'))
                """
        )
        for (agentID, record) in whole { statuses[agentID] = record.status }
        return statuses
    }

    /// `rolloutStatuses(service:)` of the rows `filter` selects (a condition on `service_status` named `st`).
    private func rolloutStatuses(service: String, where filter: SQLQueryString) async throws -> [String: ServiceStatusRecord] {
        let text = { (field: String) in self.dialect.jsonText("status", field) }
        let integer = { (field: String) in self.dialect.jsonInteger("status", field) }
        let rows = try await readDB.raw(
            """
            SELECT agent_id, updated_at, \(unsafeRaw: integer("serial")) AS serial, \(unsafeRaw: integer("targetSerial")) AS target_serial,
                   \(unsafeRaw: text("version")) AS version, \(unsafeRaw: text("phase")) AS phase, \(unsafeRaw: text("health")) AS health,
                   \(unsafeRaw: text("message")) AS message, \(unsafeRaw: dialect.failuresWithoutDiagnosis("status")) AS failures
            FROM \(dialect.statusRows(as: "st", where: filter))
            """
        ).all()
        var statuses: [String: ServiceStatusRecord] = [:]
        statuses.reserveCapacity(rows.count)
        for row in rows {
            let agentID = try row.decode(column: "agent_id", as: String.self)
            let phase = try row.decode(column: "phase", as: String?.self)
            let health = try row.decode(column: "health", as: String?.self)
            guard let phase = phase.flatMap(DeployPhase.init(rawValue:)), let health = health.flatMap(HealthState.init(rawValue:)),
                let message = try row.decode(column: "message", as: String?.self)
            else {
                throw StoreError.corruptRow(
                    table: "service_status",
                    reason: "the status of \(agentID) for \(service) lacks a valid phase, health or message"
                )
            }
            let status = ServiceStatus(
                service: service,
                serial: try row.decode(column: "serial", as: Int64?.self),
                version: try row.decode(column: "version", as: String?.self),
                targetSerial: try row.decode(column: "target_serial", as: Int64?.self),
                phase: phase,
                message: message,
                health: health,
                failures: try Self.failures(fromJSON: try row.decode(column: "failures", as: String?.self), agentID: agentID),
                processes: []
            )
            statuses[agentID] = ServiceStatusRecord(
                agentID: agentID,
                status: status,
                updatedAt: StoredTime.date(try row.decode(column: "updated_at", as: Int64.self))
            )
        }
        return statuses
    }

    /// A stored status's `failures` (JSON text, or `nil` when absent), as the status's own decoder reads them.
    private static func failures(fromJSON text: String?, agentID: String) throws -> [ReleaseFailure] {
        // Most statuses carry none.
        guard let text, text != "[]" else { return [] }
        do {
            return try Field.list(limit: ServiceStatus.maximumFailures, ReleaseFailure.init(json:path:))(
                JSONValue.parse(Array(text.utf8)),
                "failures"
            )
        } catch {
            throw StoreError.corruptRow(table: "service_status", reason: "the failures of \(agentID): \(error)")
        }
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
