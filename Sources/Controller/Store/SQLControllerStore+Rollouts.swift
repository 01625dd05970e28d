import Foundation
import SQLKit
import Shared

// Rollouts, events, and the per-agent and per-service status reads the rollout logic needs.
extension SQLControllerStore {
    // MARK: Publish

    func insertRelease(
        _ release: ReleaseRecord,
        rollout opening: RolloutStateMachine.Opening,
        requiringStoredArtifact: Bool
    ) async throws -> PublishedRollout {
        let plan = opening.plan
        let envelopeText = String(decoding: release.envelope.encoded(), as: UTF8.self)
        let now = StoredTime.milliseconds(release.createdAt)
        return try await transaction { db in
            // Under the write lock a prune takes too (`removeArtifactRows`): either its delete came first and this
            // publish is refused, or this release is stored first and the prune keeps its artifact.
            if requiringStoredArtifact,
                try await db.raw("SELECT sha256 FROM artifacts WHERE sha256 = \(bind: release.artifactSHA256)").first() == nil
            {
                throw StoreError.unknownArtifact(sha256: release.artifactSHA256)
            }
            let latest =
                try await db.raw("SELECT MAX(serial) AS s FROM releases WHERE service = \(bind: release.service)")
                .first()?.decode(column: "s", as: Int64?.self) ?? nil
            if let latest, release.serial <= latest {
                throw StoreError.staleSerial(service: release.service, serial: release.serial, latest: latest)
            }
            // The members still enrolled for the service as the publish commits: an agent removed (or re-enrolled for
            // other services) since the caller read the list would otherwise be waited for for ever.
            let enrolled = try await enrolledAgentIDs(service: release.service, in: db)
            let agentOrder = plan.agentOrder.filter(enrolled.contains)
            let orderText = Self.agentOrderText(agentOrder)
            try await db.raw(
                """
                INSERT INTO releases (service, serial, version, artifact_sha256, artifact_size, envelope, published_by, created_at,
                                      signed_by, signatures_required)
                VALUES (\(bind: release.service), \(bind: release.serial), \(bind: release.version), \(bind: release.artifactSHA256),
                        \(bind: release.artifactSize), \(bind: envelopeText), \(bind: release.publishedBy), \(bind: now),
                        \(bind: Self.stringListText(release.signedBy)), \(bind: release.signaturesRequired))
                """
            ).run()
            let stable = try await Self.stableSerial(service: release.service, below: release.serial, in: db)
            // A release awaiting approval replaces only another one awaiting approval: it reaches no agent, so the
            // rollout under way goes on until it is approved (`recordApproval`). Superseded at its publish, that rollout
            // stopped mid-way, its fleet split for as long as the approval took (for ever, if none came), on the word of
            // one release key.
            let replaced: [RolloutState] =
                opening.state == .awaitingApproval ? [.awaitingApproval] : [.awaitingApproval, .rolling, .paused, .halted]
            // Agents' desired states: the caller of a publish wakes the service's agents (`releasePublished`).
            let (superseded, supersededEvents) = try await Self.supersede(
                replaced,
                service: release.service,
                below: release.serial,
                by: release.version,
                at: release.createdAt,
                in: db
            )
            let events = opening.events + supersededEvents
            let parameters = plan.parameters
            guard
                let row = try await db.raw(
                    """
                    INSERT INTO rollouts (service, serial, stable_serial, strategy, wave_stable_seconds, max_failures, state, current_wave,
                                          agent_order, created_at, updated_at, reason)
                    VALUES (\(bind: release.service), \(bind: release.serial), \(bind: stable), \(bind: parameters.strategy.description),
                            \(bind: parameters.waveStable.components.seconds), \(bind: parameters.maxFailures),
                            \(bind: opening.state.rawValue), 0, \(bind: orderText), \(bind: now), \(bind: now), '')
                    RETURNING id
                    """
                ).first()
            else {
                throw StoreError.corruptRow(table: "rollouts", reason: "insert returned no row")
            }
            let rollout = RolloutRecord(
                id: try row.decode(column: "id", as: Int64.self),
                service: release.service,
                serial: release.serial,
                version: release.version,
                stableSerial: stable,
                strategy: parameters.strategy,
                waveStable: parameters.waveStable,
                maxFailures: parameters.maxFailures,
                state: opening.state,
                currentWave: 0,
                agentOrder: agentOrder,
                createdAt: StoredTime.date(now),
                updatedAt: StoredTime.date(now),
                reason: ""
            )
            try await Self.insert(events, into: db)
            return PublishedRollout(rollout: rollout, superseded: superseded.first)
        }
    }

    /// What agents a rollout of `serial` has not reached receive: the service's last completed serial below it (a
    /// rollout of strategy `all` completes at once), or, before any completed, the newest release published before
    /// rollouts existed (every agent was given it). `nil` when there is neither.
    static func stableSerial(service: String, below serial: Int64, in db: any SQLDatabase) async throws -> Int64? {
        let completed =
            try await db.raw(
                """
                SELECT MAX(serial) AS s FROM rollouts
                WHERE service = \(bind: service) AND serial < \(bind: serial) AND state = \(bind: RolloutState.completed.rawValue)
                """
            ).first()?.decode(column: "s", as: Int64?.self) ?? nil
        if let completed { return completed }
        return try await db.raw(
            """
            SELECT MAX(r.serial) AS s FROM releases AS r
            WHERE r.service = \(bind: service) AND r.serial < \(bind: serial)
              AND NOT EXISTS (SELECT 1 FROM rollouts AS ro WHERE ro.service = r.service AND ro.serial = r.serial)
            """
        ).first()?.decode(column: "s", as: Int64?.self) ?? nil
    }

    /// Supersedes the rollouts of `service` below `serial` in one of `states` (under the caller's write lock), newest
    /// first. Returns those it superseded, as they were, with the events to insert.
    static func supersede(
        _ states: [RolloutState],
        service: String,
        below serial: Int64,
        by version: String,
        at instant: Date,
        in db: any SQLDatabase
    ) async throws -> (rollouts: [RolloutRecord], events: [RolloutEventDraft]) {
        let open = try await db.raw(
            """
            SELECT \(unsafeRaw: rolloutColumns) FROM \(unsafeRaw: rolloutSource)
            WHERE ro.service = \(bind: service) AND ro.serial < \(bind: serial)
              AND ro.state IN \(SQLGroupExpression(SQLList(states.map { SQLBind($0.rawValue) })))
            ORDER BY ro.serial DESC
            """
        ).all().map(rollout(from:))
        var superseded: [RolloutRecord] = []
        var events: [RolloutEventDraft] = []
        for previous in open {
            var machine = RolloutStateMachine(previous)
            guard case .persist(let transition) = try machine.superseded(bySerial: serial, version: version, at: instant) else { continue }
            // The write lock is held: nothing can have changed the row since it was read.
            guard try await write(transition, into: db) else {
                throw StoreError.corruptRow(table: "rollouts", reason: "rollout \(previous.id) changed while a publish held the write lock")
            }
            superseded.append(previous)
            events += transition.events
        }
        return (superseded, events)
    }

    // MARK: Rollouts

    static let rolloutColumns = """
        ro.id AS id, ro.service AS service, ro.serial AS serial, r.version AS version, ro.stable_serial AS stable_serial,
        ro.strategy AS strategy, ro.wave_stable_seconds AS wave_stable_seconds, ro.max_failures AS max_failures, ro.state AS state,
        ro.current_wave AS current_wave, ro.agent_order AS agent_order, ro.created_at AS created_at, ro.updated_at AS updated_at,
        ro.reason AS reason
        """

    private static let rolloutSource = "rollouts AS ro JOIN releases AS r ON r.service = ro.service AND r.serial = ro.serial"

    func currentRollouts(for services: [String]?) async throws -> [RolloutRecord] {
        let filter: SQLQueryString
        if let services {
            guard !services.isEmpty else { return [] }
            filter = "AND ro.service IN \(SQLGroupExpression(SQLList(services.map { SQLBind($0) })))"
        } else {
            filter = ""
        }
        let rows = try await readDB.raw(
            """
            SELECT \(unsafeRaw: Self.rolloutColumns) FROM \(unsafeRaw: Self.rolloutSource)
            WHERE (ro.serial = (SELECT MAX(serial) FROM rollouts WHERE service = ro.service)
                   OR ro.serial = (SELECT MAX(serial) FROM rollouts
                                   WHERE service = ro.service AND state IN (\(bind: RolloutState.rolling.rawValue),
                                         \(bind: RolloutState.paused.rawValue), \(bind: RolloutState.halted.rawValue))))
              \(filter)
            ORDER BY ro.service, ro.serial DESC
            """
        ).all()
        return try rows.map(Self.rollout(from:))
    }

    func rollouts(service: String, limit: Int) async throws -> [RolloutRecord] {
        let rows = try await readDB.raw(
            """
            SELECT \(unsafeRaw: Self.rolloutColumns) FROM \(unsafeRaw: Self.rolloutSource)
            WHERE ro.service = \(bind: service) ORDER BY ro.serial DESC LIMIT \(bind: limit)
            """
        ).all()
        return try rows.map(Self.rollout(from:))
    }

    func rollout(service: String, serial: Int64) async throws -> RolloutRecord? {
        try await readDB.raw(
            """
            SELECT \(unsafeRaw: Self.rolloutColumns) FROM \(unsafeRaw: Self.rolloutSource)
            WHERE ro.service = \(bind: service) AND ro.serial = \(bind: serial)
            """
        ).first().map(Self.rollout(from:))
    }

    func activeRollouts() async throws -> [RolloutRecord] {
        let rows = try await readDB.raw(
            """
            SELECT \(unsafeRaw: Self.rolloutColumns) FROM \(unsafeRaw: Self.rolloutSource)
            WHERE ro.state IN ('rolling', 'paused') ORDER BY ro.service, ro.serial
            """
        ).all()
        return try rows.map(Self.rollout(from:))
    }

    func updateRollout(_ transition: RolloutStateMachine.Transition) async throws -> Bool {
        try await transaction { db in
            guard try await Self.write(transition, into: db) else { return false }
            try await Self.insert(transition.events, into: db)
            return true
        }
    }

    /// Writes the rollout of `transition` (without its events) if the stored row is still at `transition.expected`: the
    /// state, wave and members it was decided from (compare-and-set).
    /// - Returns: whether the row was written.
    /// - Parameter members: when given, the members written are the transition's that are in it (an approval's, checked
    ///   against the agents enrolled as it commits).
    static func write(
        _ transition: RolloutStateMachine.Transition,
        keepingMembers members: Set<String>? = nil,
        into db: any SQLDatabase
    ) async throws -> Bool {
        let rollout = transition.rollout
        let expected = transition.expected
        let order = members.map { rollout.agentOrder.filter($0.contains) } ?? rollout.agentOrder
        // The members are compared as a list, not as text (a row written by hand may space its JSON otherwise), and
        // the text read is what the update requires still stands.
        guard
            let storedText = try await db.raw("SELECT agent_order FROM rollouts WHERE id = \(bind: rollout.id)").first()?
                .decode(column: "agent_order", as: String.self),
            (try? agentOrder(fromText: storedText)) == expected.agentOrder
        else { return false }
        let updated = try await db.raw(
            """
            UPDATE rollouts SET state = \(bind: rollout.state.rawValue), current_wave = \(bind: rollout.currentWave),
                reason = \(bind: rollout.reason), updated_at = \(bind: StoredTime.milliseconds(rollout.updatedAt)),
                agent_order = \(bind: agentOrderText(order))
            WHERE id = \(bind: rollout.id) AND state = \(bind: expected.state.rawValue) AND current_wave = \(bind: expected.currentWave)
              AND agent_order = \(bind: storedText)
            RETURNING id
            """
        ).first()
        // A rollout no longer evaluated keeps no wave timers (they were kept for ever, a row per agent per rollout).
        if updated != nil, !rollout.state.isActive {
            try await db.raw("DELETE FROM rollout_health WHERE rollout_id = \(bind: rollout.id)").run()
        }
        // Completed, its serial is the service's stable one, also for the newer rollouts that never started (awaiting
        // approval, or aborted or superseded before they did: one that started superseded this one). Their stable
        // serial was taken at their publish: one of them governs once this one is no longer open, and kept handing the
        // release before this one to every agent enrolled since (or that lost its state) until the next publish.
        if updated != nil, rollout.state == .completed, expected.state != .completed {
            try await db.raw(
                """
                UPDATE rollouts SET stable_serial = \(bind: rollout.serial)
                WHERE service = \(bind: rollout.service) AND serial > \(bind: rollout.serial)
                  AND (stable_serial IS NULL OR stable_serial < \(bind: rollout.serial))
                """
            ).run()
        }
        return updated != nil
    }

    /// How a rollout's members are stored: a JSON array of agent ids.
    static func agentOrderText(_ order: [String]) -> String {
        String(decoding: JSONValue.array(order.map(JSONValue.string)).encoded(), as: UTF8.self)
    }

    /// The agent ids of a stored `agent_order`.
    /// - Throws: `StoreError.corruptRow` when it is not a JSON array of strings.
    static func agentOrder(fromText text: String) throws -> [String] {
        guard case .array(let items)? = try? JSONValue.parse(Array(text.utf8)) else {
            throw StoreError.corruptRow(table: "rollouts", reason: "agent_order is not a JSON array")
        }
        return try items.map { item -> String in
            guard case .string(let id) = item else { throw StoreError.corruptRow(table: "rollouts", reason: "agent_order holds a non-string") }
            return id
        }
    }

    /// The ids of the agents enrolled for `service` now.
    func enrolledAgentIDs(service: String, in db: any SQLDatabase) async throws -> Set<String> {
        let rows = try await db.raw(
            """
            SELECT a.id AS id FROM agents AS a, \(unsafeRaw: dialect.jsonTextElements(of: "a.services", as: "s"))
            WHERE s.value = \(bind: service)
            """
        ).all()
        return Set(try rows.map { try $0.decode(column: "id", as: String.self) })
    }

    static func rollout(from row: any SQLRow) throws -> RolloutRecord {
        let strategyText = try row.decode(column: "strategy", as: String.self)
        let strategy: RolloutStrategy
        do {
            strategy = try RolloutStrategy.parse(strategyText)
        } catch {
            throw StoreError.corruptRow(table: "rollouts", reason: "\(error)")
        }
        let stateText = try row.decode(column: "state", as: String.self)
        guard let state = RolloutState(rawValue: stateText) else {
            throw StoreError.corruptRow(table: "rollouts", reason: "unknown state \(stateText)")
        }
        let order = try agentOrder(fromText: try row.decode(column: "agent_order", as: String.self))
        return RolloutRecord(
            id: try row.decode(column: "id", as: Int64.self),
            service: try row.decode(column: "service", as: String.self),
            serial: try row.decode(column: "serial", as: Int64.self),
            version: try row.decode(column: "version", as: String.self),
            stableSerial: try row.decode(column: "stable_serial", as: Int64?.self),
            strategy: strategy,
            waveStable: .seconds(try row.decode(column: "wave_stable_seconds", as: Int64.self)),
            maxFailures: try row.decode(column: "max_failures", as: Int.self),
            state: state,
            currentWave: try row.decode(column: "current_wave", as: Int.self),
            agentOrder: order,
            createdAt: StoredTime.date(try row.decode(column: "created_at", as: Int64.self)),
            updatedAt: StoredTime.date(try row.decode(column: "updated_at", as: Int64.self)),
            reason: try row.decode(column: "reason", as: String.self)
        )
    }

    // MARK: Wave timers

    /// Rows of one wave-timer insert (3 parameters each: SQLite takes 32,766, PostgreSQL 65,535).
    static let timerRowsPerStatement = 500

    func rolloutHealthTimers(rolloutID: Int64) async throws -> [String: Date] {
        let rows = try await readDB.raw("SELECT agent_id, healthy_since FROM rollout_health WHERE rollout_id = \(bind: rolloutID)").all()
        var timers: [String: Date] = [:]
        for row in rows {
            timers[try row.decode(column: "agent_id", as: String.self)] = StoredTime.date(try row.decode(column: "healthy_since", as: Int64.self))
        }
        return timers
    }

    func saveRolloutHealthTimers(rolloutID: Int64, _ timers: [String: Date], observedAt: Date?) async throws {
        // Only this rollout's rows, written by the one controller that drives rollouts: many rows a statement (one
        // statement a row was 10,000 round trips a round on PostgreSQL), and a row another driver wrote meanwhile (a
        // hand-over) is overwritten, not a duplicate-key failure. Only while the rollout is open, under the lock its
        // transitions take: a save that raced the rollout's end (a tick that read it rolling) wrote rows nothing would
        // ever delete.
        let rows = timers.sorted(by: { $0.key < $1.key })
        try await backend.transaction(exclusive: true) { db in
            try await db.raw("DELETE FROM rollout_health WHERE rollout_id = \(bind: rolloutID)").run()
            let open = try await db.raw(
                "SELECT id FROM rollouts WHERE id = \(bind: rolloutID) AND state IN (\(bind: RolloutState.rolling.rawValue), \(bind: RolloutState.paused.rawValue))"
            ).first()
            guard open != nil else { return }
            if let observedAt {
                try await db.raw(
                    "UPDATE rollouts SET timers_observed_at = \(bind: StoredTime.milliseconds(observedAt)) WHERE id = \(bind: rolloutID)"
                ).run()
            }
            for start in stride(from: 0, to: rows.count, by: Self.timerRowsPerStatement) {
                let values = rows[start..<min(rows.count, start + Self.timerRowsPerStatement)].map { agentID, since -> SQLQueryString in
                    "(\(bind: rolloutID), \(bind: agentID), \(bind: StoredTime.milliseconds(since)))"
                }
                try await db.raw(
                    """
                    INSERT INTO rollout_health (rollout_id, agent_id, healthy_since) VALUES \(values.joined(separator: ", "))
                    ON CONFLICT (rollout_id, agent_id) DO UPDATE SET healthy_since = excluded.healthy_since
                    """
                ).run()
            }
        }
    }

    func confirmRolloutHealthTimers(rolloutID: Int64, observedAt: Date) async throws {
        // Not under the store's write lock: one column of one open rollout, written by the one driver.
        try await backend.transaction(exclusive: false) { db in
            try await db.raw(
                """
                UPDATE rollouts SET timers_observed_at = \(bind: StoredTime.milliseconds(observedAt))
                WHERE id = \(bind: rolloutID) AND state IN (\(bind: RolloutState.rolling.rawValue), \(bind: RolloutState.paused.rawValue))
                """
            ).run()
        }
    }

    func rolloutHealthTimersObservedAt(rolloutID: Int64) async throws -> Date? {
        let row = try await readDB.raw("SELECT timers_observed_at FROM rollouts WHERE id = \(bind: rolloutID)").first()
        return try row?.decode(column: "timers_observed_at", as: Int64?.self).map(StoredTime.date)
    }

    // MARK: Events

    static func insert(_ events: [RolloutEventDraft], into db: any SQLDatabase) async throws {
        guard !events.isEmpty else { return }
        for event in events {
            try await db.raw(
                """
                INSERT INTO events (at, service, serial, kind, message, agent_id)
                VALUES (\(bind: StoredTime.milliseconds(event.at)), \(bind: event.service), \(bind: event.serial), \(bind: event.kind.rawValue),
                        \(bind: String(event.message.prefix(4000))), \(bind: event.agentID))
                """
            ).run()
        }
        // Of the controllers' events and of the agents' apart, everything older than the newest `limit` goes (only in
        // the part that grew; no row when it holds fewer: `id < NULL`).
        for reported in [false, true] where events.contains(where: { ($0.agentID != nil) == reported }) {
            let part: SQLQueryString = reported ? "agent_id IS NOT NULL" : "agent_id IS NULL"
            try await db.raw(
                """
                DELETE FROM events WHERE \(part) AND id < (
                    SELECT id FROM events WHERE \(part) ORDER BY id DESC LIMIT 1 OFFSET \(bind: EventRetention.limit - 1)
                )
                """
            ).run()
        }
        // An agent's own failures beyond its newest `perAgent` go too (no row when it has fewer: `id < NULL`).
        let kinds = SQLGroupExpression(SQLList(EventRetention.reportedByAgents.map { SQLBind($0.rawValue) }))
        var reporters: [String] = []
        for event in events where EventRetention.reportedByAgents.contains(event.kind) {
            if let agent = event.agentID, !reporters.contains(agent) { reporters.append(agent) }
        }
        for agent in reporters {
            try await db.raw(
                """
                DELETE FROM events WHERE agent_id = \(bind: agent) AND kind IN \(kinds) AND id < (
                    SELECT id FROM events WHERE agent_id = \(bind: agent) AND kind IN \(kinds) ORDER BY id DESC LIMIT 1 OFFSET \(bind: EventRetention.perAgent - 1)
                )
                """
            ).run()
        }
    }

    func events(service: String?, limit: Int) async throws -> [RolloutEvent] {
        let filter: SQLQueryString = service.map { "WHERE service = \(bind: $0)" } ?? ""
        let rows = try await readDB.raw(
            "SELECT id, at, service, serial, kind, message, agent_id FROM events \(filter) ORDER BY id DESC LIMIT \(bind: limit)"
        ).all()
        return try rows.map(Self.event(from:))
    }

    func events(service: String?, after id: Int64, limit: Int) async throws -> [RolloutEvent] {
        let filter: SQLQueryString = service.map { "AND service = \(bind: $0)" } ?? ""
        let rows = try await readDB.raw(
            "SELECT id, at, service, serial, kind, message, agent_id FROM events WHERE id > \(bind: id) \(filter) ORDER BY id LIMIT \(bind: limit)"
        ).all()
        return try rows.map(Self.event(from:))
    }

    func latestEventID() async throws -> Int64 {
        try await readDB.raw("SELECT COALESCE(MAX(id), 0) AS id FROM events").first()?.decode(column: "id", as: Int64.self) ?? 0
    }

    private static func event(from row: any SQLRow) throws -> RolloutEvent {
        let kindText = try row.decode(column: "kind", as: String.self)
        guard let kind = RolloutEventKind(rawValue: kindText) else {
            throw StoreError.corruptRow(table: "events", reason: "unknown kind \(kindText)")
        }
        return RolloutEvent(
            id: try row.decode(column: "id", as: Int64.self),
            at: StoredTime.date(try row.decode(column: "at", as: Int64.self)),
            service: try row.decode(column: "service", as: String.self),
            serial: try row.decode(column: "serial", as: Int64?.self),
            kind: kind,
            message: try row.decode(column: "message", as: String.self),
            agentID: try row.decode(column: "agent_id", as: String?.self)
        )
    }

    // MARK: Status and release reads

    func serviceStatuses(agentID: String) async throws -> [ServiceStatusRecord] {
        try await readDB.raw(
            "SELECT agent_id, status, updated_at FROM service_status WHERE agent_id = \(bind: agentID) ORDER BY service"
        ).all().map(Self.serviceStatusRecord(from:))
    }

    static func serviceStatusRecord(from row: any SQLRow) throws -> ServiceStatusRecord {
        ServiceStatusRecord(
            agentID: try row.decode(column: "agent_id", as: String.self),
            status: try serviceStatus(fromJSON: try row.decode(column: "status", as: String.self)),
            updatedAt: StoredTime.date(try row.decode(column: "updated_at", as: Int64.self))
        )
    }

    func releases(_ keys: [ReleaseKey]) async throws -> [ReleaseRecord] {
        guard !keys.isEmpty else { return [] }
        var records: [ReleaseRecord] = []
        // Grouped by service: one query per service, each `serial IN (...)`.
        for (service, group) in Dictionary(grouping: keys, by: \.service).sorted(by: { $0.key < $1.key }) {
            let serials = SQLList(Set(group.map(\.serial)).sorted().map { SQLBind($0) })
            let rows = try await readDB.raw(
                """
                SELECT \(unsafeRaw: Self.releaseColumns) FROM releases
                WHERE service = \(bind: service) AND serial IN \(SQLGroupExpression(serials)) ORDER BY serial
                """
            ).all()
            records += try rows.map(Self.release(from:))
        }
        return records
    }
}
