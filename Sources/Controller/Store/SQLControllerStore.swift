import Foundation
import Logging
import SQLKit
import Shared
import Synchronization

/// Kept so code written against the SQLite-only store (`extension SQLiteControllerStore`) builds unchanged: it now
/// extends the one store over both databases. New code names `SQLControllerStore`.
typealias SQLiteControllerStore = SQLControllerStore

/// The controller's store, one implementation over SQLKit for SQLite (the embedded default, `<data-dir>/ferry.sqlite`)
/// and PostgreSQL (several controllers on one database).
///
/// Every method's SQL is written once, in what both databases speak; what differs (column types in migrations, JSON
/// expansion, how a write transaction starts and locks) is in `StoreDialect` and the backend. A method added here runs
/// on both, and the store's tests run every case against both.
final class SQLControllerStore: ControllerStore {
    /// The SQLite settings, under the name the SQLite-only store gave them (`SQLiteControllerStore.Configuration`).
    typealias Configuration = SQLiteStoreBackend.Configuration

    let backend: any SQLStoreBackend
    private let closed = Mutex(false)

    /// Which SQL the database speaks where the two differ.
    var dialect: StoreDialect { backend.dialect }
    /// The database file (SQLite) or the URL without its password (PostgreSQL).
    var path: String { backend.location }
    /// The read side (SQLite: a second connection, which in WAL mode sees committed data only and never waits for the
    /// writer; PostgreSQL: the pool). For `+Concern` extensions.
    var readDB: any SQLDatabase { backend.readDB }

    init(backend: any SQLStoreBackend) {
        self.backend = backend
    }

    /// Opens (creating when needed) a SQLite database and applies pending migrations.
    /// - Throws: `StoreError.cannotOpen`, `StoreError.schemaTooNew`.
    static func open(_ configuration: SQLiteStoreBackend.Configuration, logger: Logger) async throws -> SQLControllerStore {
        SQLControllerStore(backend: try await SQLiteStoreBackend.open(configuration, logger: logger))
    }

    /// Connects to a PostgreSQL database and applies pending migrations (one controller at a time).
    /// - Throws: `StoreError.cannotOpen`, `StoreError.schemaTooNew`.
    static func open(_ configuration: PostgresStoreConfiguration, logger: Logger) async throws -> SQLControllerStore {
        SQLControllerStore(backend: try await PostgresStoreBackend.open(configuration, logger: logger))
    }

    /// Runs `body` in one transaction that runs alone among every writer of the database (see `SQLStoreBackend`).
    func transaction<T: Sendable>(_ body: (any SQLDatabase) async throws -> T) async throws -> T {
        try await backend.transaction(exclusive: true, body)
    }

    // MARK: Tokens

    // Tokens live in SQLControllerStore+Tokens.swift.

    // MARK: Releases

    // `insertRelease(_:)` is the protocol extension over `insertRelease(_:rollout:)` (SQLControllerStore+Rollouts.swift):
    // one SQL path stores every release, with its rollout.

    func latestSerial(service: String) async throws -> Int64? {
        try await readDB.raw("SELECT MAX(serial) AS s FROM releases WHERE service = \(bind: service)")
            .first()?.decode(column: "s", as: Int64?.self) ?? nil
    }

    static let releaseColumns =
        "service, serial, version, artifact_sha256, artifact_size, envelope, published_by, created_at, signed_by, signatures_required"

    func latestReleases(for services: [String]) async throws -> [ReleaseRecord] {
        guard !services.isEmpty else { return [] }
        let names = SQLList(services.map { SQLBind($0) })
        let rows = try await readDB.raw(
            """
            SELECT \(unsafeRaw: Self.releaseColumns) FROM releases AS r
            WHERE r.service IN \(SQLGroupExpression(names))
              AND r.serial = (SELECT MAX(serial) FROM releases WHERE service = r.service)
            ORDER BY r.service
            """
        ).all()
        return try rows.map(Self.release(from:))
    }

    func releases(service: String, limit: Int) async throws -> [ReleaseRecord] {
        let rows = try await readDB.raw(
            """
            SELECT \(unsafeRaw: Self.releaseColumns) FROM releases
            WHERE service = \(bind: service) ORDER BY serial DESC LIMIT \(bind: limit)
            """
        ).all()
        return try rows.map(Self.release(from:))
    }

    func release(service: String, serial: Int64) async throws -> ReleaseRecord? {
        try await readDB.raw(
            "SELECT \(unsafeRaw: Self.releaseColumns) FROM releases WHERE service = \(bind: service) AND serial = \(bind: serial)"
        ).first().map(Self.release(from:))
    }

    static func release(from row: any SQLRow) throws -> ReleaseRecord {
        let envelopeText = try row.decode(column: "envelope", as: String.self)
        let envelope: Envelope
        do {
            envelope = try Envelope.decode(Array(envelopeText.utf8))
        } catch {
            throw StoreError.corruptRow(table: "releases", reason: "stored envelope: \(error)")
        }
        return ReleaseRecord(
            service: try row.decode(column: "service", as: String.self),
            serial: try row.decode(column: "serial", as: Int64.self),
            version: try row.decode(column: "version", as: String.self),
            artifactSHA256: try row.decode(column: "artifact_sha256", as: String.self),
            artifactSize: try row.decode(column: "artifact_size", as: Int64.self),
            envelope: envelope,
            publishedBy: try row.decode(column: "published_by", as: String.self),
            createdAt: StoredTime.date(try row.decode(column: "created_at", as: Int64.self)),
            signedBy: try Self.stringList(try row.decode(column: "signed_by", as: String.self), table: "releases", column: "signed_by"),
            signaturesRequired: try row.decode(column: "signatures_required", as: Int.self)
        )
    }

    /// A JSON array of strings stored in a text column.
    static func stringList(_ text: String, table: String, column: String) throws -> [String] {
        guard case .array(let items)? = try? JSONValue.parse(Array(text.utf8)) else {
            throw StoreError.corruptRow(table: table, reason: "\(column) is not a JSON array")
        }
        return try items.map { item in
            guard case .string(let value) = item else { throw StoreError.corruptRow(table: table, reason: "\(column) holds a non-string") }
            return value
        }
    }

    /// A list of strings as the JSON text stored in a column.
    static func stringListText(_ values: [String]) -> String {
        String(decoding: JSONValue.array(values.map { .string($0) }).encoded(), as: UTF8.self)
    }

    func serviceSummaries() async throws -> [ServiceSummary] {
        let rows = try await readDB.raw(
            """
            SELECT r.service AS service, r.serial AS serial, r.version AS version, c.n AS n
            FROM releases AS r
            JOIN (SELECT service, MAX(serial) AS top, COUNT(*) AS n FROM releases GROUP BY service) AS c
              ON c.service = r.service AND c.top = r.serial
            """
        ).all()
        var summaries: [String: ServiceSummary] = [:]
        for row in rows {
            let name = try row.decode(column: "service", as: String.self)
            summaries[name] = ServiceSummary(
                name: name,
                latestSerial: try row.decode(column: "serial", as: Int64.self),
                latestVersion: try row.decode(column: "version", as: String.self),
                releaseCount: try row.decode(column: "n", as: Int.self),
                agentCount: 0
            )
        }
        for (service, count) in try await agentCounts() {
            summaries[service, default: ServiceSummary(name: service, latestSerial: nil, latestVersion: nil, releaseCount: 0, agentCount: 0)]
                .agentCount = count
        }
        return summaries.values.sorted { $0.name < $1.name }
    }

    // MARK: Agents

    static let agentColumns =
        "id, name, hostname, services, enrolled_at, last_seen, agent_version, process_manager, trust_root_version, trust_root_problem, "
        + "conflict_last_switch_at, instance_id"

    func enrollAgent(
        proposedID: String,
        name: String,
        hostname: String,
        services: [String],
        tokenHash: String,
        mode: EnrollmentMode,
        instanceID: String?,
        at date: Date
    ) async throws -> (agent: AgentRecord, replaced: Bool, repeated: Bool) {
        // Each service once: a repeated `--service api` would count the agent once per repeat in every fleet summary.
        let servicesText = String(decoding: JSONValue.array(Set(services).sorted().map { .string($0) }).encoded(), as: UTF8.self)
        let now = StoredTime.milliseconds(date)
        return try await transaction { db in
            let current = try await db.raw("SELECT id, token_hash, services, instance_id FROM agents WHERE name = \(bind: name)").first()
            let existing = try current?.decode(column: "id", as: String.self)
            // A retry of an enrolment whose answer was lost: the agent of this name already holds the very token digest
            // the agent chose (`EnrollRequest.tokenSHA256`), for the same services (and instance, when one is proven).
            // Nothing is written and no use consumed. A digest the controller generated never matches a stored one.
            let storedInstance = try current?.decode(column: "instance_id", as: String?.self)
            if let current, let existing, Token.constantTimeEquals(try current.decode(column: "token_hash", as: String.self), tokenHash),
                try current.decode(column: "services", as: String.self) == servicesText, instanceID == nil || storedInstance == instanceID,
                let row = try await db.raw("SELECT \(unsafeRaw: Self.agentColumns) FROM agents WHERE id = \(bind: existing)").first()
            {
                return (try Self.agent(from: row), false, true)
            }
            // A digest another agent holds (an agent that chose its token enrolled under another name and lost the
            // answer, then ran again under this one): refused by name, before the unique index would fail the write.
            if let holder = try await db.raw("SELECT name FROM agents WHERE token_hash = \(bind: tokenHash)").first()?
                .decode(column: "name", as: String.self), holder != name
            {
                throw StoreError.tokenInUse
            }
            // The agent an attested instance was enrolled as, if any: an instance enrolls once (a replace of that
            // same agent aside), so a copied identity document and enrollment token enroll nothing more.
            let instanceHolder: String? =
                if let instanceID {
                    try await db.raw("SELECT name FROM agents WHERE instance_id = \(bind: instanceID)").first()?.decode(
                        column: "name",
                        as: String.self
                    )
                } else {
                    nil
                }
            // Every attested instance enrolled is remembered, also once its agent is gone.
            var formerName: String?
            if let instanceID {
                formerName = try await db.raw("SELECT agent_name FROM enrolled_instances WHERE instance_id = \(bind: instanceID)").first()?
                    .decode(column: "agent_name", as: String.self)
                try await db.raw(
                    """
                    INSERT INTO enrolled_instances (instance_id, agent_name, enrolled_at) VALUES (\(bind: instanceID), \(bind: name), \(bind: now))
                    ON CONFLICT (instance_id) DO NOTHING
                    """
                ).run()
            }
            switch mode {
            case .create(let tokenID):
                // The token first: a token that can no longer enroll learns nothing, not even whether a name is taken.
                if let tokenID { try await Self.consumeEnrollmentUse(tokenID, now: now, db: db) }
                if let instanceID, let instanceHolder { throw StoreError.instanceEnrolled(instanceID: instanceID, name: instanceHolder) }
                // An enrollment token enrolls an instance once: its agent removed (the instance terminated and its agent
                // swept for its silence), a copy of its identity document taken while it ran enrolls nothing. An
                // operator may enroll it again.
                if tokenID != nil, let instanceID, let formerName {
                    throw StoreError.instanceEnrolledBefore(instanceID: instanceID, name: formerName)
                }
                if let existing { throw StoreError.agentExists(name: name, id: existing) }
                guard
                    let row = try await db.raw(
                        """
                        INSERT INTO agents (id, name, hostname, services, token_hash, enrolled_at, instance_id)
                        VALUES (\(bind: proposedID), \(bind: name), \(bind: hostname), \(bind: servicesText), \(bind: tokenHash), \(bind: now),
                            \(bind: instanceID))
                        RETURNING \(unsafeRaw: Self.agentColumns)
                        """
                    ).first()
                else {
                    throw StoreError.corruptRow(table: "agents", reason: "enrollment returned no row")
                }
                return (try Self.agent(from: row), false, false)
            case .replace:
                // The same machine enrolling again (reimaged, state lost), on an operator's word: keep its id and
                // history, rotate the token so the old one stops working. A proven instance replaces the one the agent
                // was bound to; without a proof, the binding stays.
                if let instanceID, let instanceHolder, instanceHolder != name {
                    throw StoreError.instanceEnrolled(instanceID: instanceID, name: instanceHolder)
                }
                guard
                    let row = try await db.raw(
                        """
                        INSERT INTO agents (id, name, hostname, services, token_hash, enrolled_at, instance_id)
                        VALUES (\(bind: proposedID), \(bind: name), \(bind: hostname), \(bind: servicesText), \(bind: tokenHash), \(bind: now),
                            \(bind: instanceID))
                        ON CONFLICT (name) DO UPDATE SET
                            hostname = excluded.hostname, services = excluded.services, token_hash = excluded.token_hash,
                            instance_id = COALESCE(excluded.instance_id, agents.instance_id),
                            conflict_hostnames = NULL, conflict_noticed_at = NULL, conflict_last_switch_at = NULL
                        RETURNING \(unsafeRaw: Self.agentColumns)
                        """
                    ).first()
                else {
                    throw StoreError.corruptRow(table: "agents", reason: "enrollment returned no row")
                }
                // Services the agent no longer runs: out of their open rollouts (it would never report them again, and
                // its wave would wait for it for ever), and their last statuses with them.
                let kept = Set(services)
                let dropped = Set(
                    try current.flatMap {
                        try Self.stringList(try $0.decode(column: "services", as: String.self), table: "agents", column: "services")
                    } ?? []
                )
                .subtracting(kept)
                if let existing, !dropped.isEmpty {
                    try await Self.dropFromOpenRollouts([existing], services: dropped, in: db)
                    for service in dropped.sorted() {
                        try await db.raw("DELETE FROM service_status WHERE agent_id = \(bind: existing) AND service = \(bind: service)").run()
                    }
                }
                return (try Self.agent(from: row), existing != nil, false)
            }
        }
    }

    /// Counts one use of an enrollment token, inside the enrolment's transaction, or throws why it cannot be used.
    private static func consumeEnrollmentUse(_ tokenID: String, now: Int64, db: any SQLDatabase) async throws {
        let counted = try await db.raw(
            """
            UPDATE tokens SET use_count = use_count + 1, last_used_at = \(bind: now)
            WHERE id = \(bind: tokenID) AND role = 'enroll' AND revoked_at IS NULL
              AND (expires_at IS NULL OR expires_at > \(bind: now))
              AND (max_uses IS NULL OR use_count < max_uses)
            RETURNING id
            """
        ).first()
        guard counted == nil else { return }
        guard
            let row = try await db.raw(
                "SELECT revoked_at, expires_at, max_uses FROM tokens WHERE id = \(bind: tokenID)"
            ).first()
        else {
            throw StoreError.tokenUnusable(id: tokenID, reason: .unknown)
        }
        if let revoked = try row.decode(column: "revoked_at", as: Int64?.self) {
            throw StoreError.tokenUnusable(id: tokenID, reason: .revoked(at: StoredTime.date(revoked)))
        }
        if let expires = try row.decode(column: "expires_at", as: Int64?.self), expires <= now {
            throw StoreError.tokenUnusable(id: tokenID, reason: .expired(at: StoredTime.date(expires)))
        }
        let maxUses = try row.decode(column: "max_uses", as: Int?.self) ?? 0
        throw StoreError.tokenUnusable(id: tokenID, reason: .usedUp(maxUses: maxUses))
    }

    func removeAgent(name: String) async throws -> AgentRecord? {
        try await transaction { db in
            // service_status and status_history go with it (ON DELETE CASCADE); events keep the agent's id.
            let removed = try await db.raw("DELETE FROM agents WHERE name = \(bind: name) RETURNING \(unsafeRaw: Self.agentColumns)").first()
                .map(Self.agent(from:))
            if let removed { try await Self.dropFromOpenRollouts([removed.id], in: db) }
            return removed
        }
    }

    func silentAgents(since cutoff: Date, limit: Int) async throws -> [String] {
        try await readDB.raw(
            """
            SELECT id FROM agents WHERE COALESCE(last_seen, enrolled_at) < \(bind: StoredTime.milliseconds(cutoff))
            ORDER BY id LIMIT \(bind: limit)
            """
        ).all().map { try $0.decode(column: "id", as: String.self) }
    }

    func removeAgents(_ ids: [String], silentSince cutoff: Date) async throws -> [AgentRecord] {
        guard !ids.isEmpty else { return [] }
        // The silence is checked again by the DELETE itself: on PostgreSQL a report committed after a subquery's
        // snapshot would not be seen (only the outer WHERE is re-checked after a row lock wait).
        return try await transaction { db in
            var removed: [AgentRecord] = []
            for chunk in Self.chunks(ids, columns: 1) {
                removed += try await db.raw(
                    """
                    DELETE FROM agents WHERE id IN \(SQLGroupExpression(chunk.map { SQLBind($0) }))
                        AND COALESCE(last_seen, enrolled_at) < \(bind: StoredTime.milliseconds(cutoff))
                    RETURNING \(unsafeRaw: Self.agentColumns)
                    """
                ).all().map(Self.agent(from:))
            }
            try await Self.dropFromOpenRollouts(Set(removed.map(\.id)), in: db)
            return removed.sorted { $0.id < $1.id }
        }
    }

    func agentIDs() async throws -> Set<String> {
        Set(try await readDB.raw("SELECT id FROM agents").all().map { try $0.decode(column: "id", as: String.self) })
    }

    func latestStatusReport() async throws -> Date? {
        try await readDB.raw("SELECT MAX(last_seen) AS latest FROM agents").first()
            .flatMap { try $0.decode(column: "latest", as: Int64?.self) }.map(StoredTime.date)
    }

    /// Takes removed agents out of the rollouts they are members of (of `services` only, when given): a member that is
    /// gone never reports healthy, and its wave would wait for it for ever (an instance terminated mid-rollout, then
    /// removed). The rollouts are the rolling and paused ones, one awaiting approval (what it lists shows who it would
    /// reach; its approval takes the service's agents again), and each service's latest when it completed (`rollout wait` counts its agents, also when it completed
    /// at once with `all`). Not a halted one: it still serves its serial to the agents it reached, by their place in the
    /// order, and a member taken out before them would hand the halted serial to the next agent.
    ///
    /// The waves of a rolling or paused rollout are its strategy's over the members left, and those can be larger:
    /// five agents at 20/40/100 % are waves of 1, 2 and 5, four are 1 and 4, and the second wave, reached, would have
    /// become the whole fleet, skipping its health gate (also while paused). So the rollout stays at the last wave of
    /// the new sizes that reaches no more agents than it still reached; an agent it had reached beyond that keeps the
    /// serial it runs (the selector never offers less) and counts again at the next advance. Only when even the first
    /// wave is larger (the canary was removed) does the next agent become the first wave.
    private static func dropFromOpenRollouts(_ ids: Set<String>, services: Set<String>? = nil, in db: any SQLDatabase) async throws {
        guard !ids.isEmpty else { return }
        // Their wave timers go too (the table has no foreign key to agents): all of them for an agent removed. Only
        // open rollouts keep timers (`write` deletes them as a rollout ends), so the key's prefix finds them: a delete
        // by agent alone was a scan of every timer per agent removed, under the write lock status batches need (1,000
        // removals by a sweep over a 10,000-agent rollout's timers, 10⁷ rows).
        if services == nil {
            let sorted = ids.sorted()
            for start in stride(from: 0, to: sorted.count, by: 500) {
                let chunk = SQLGroupExpression(SQLList(sorted[start..<min(start + 500, sorted.count)].map { SQLBind($0) }))
                try await db.raw(
                    """
                    DELETE FROM rollout_health
                    WHERE rollout_id IN (SELECT id FROM rollouts WHERE state IN ('rolling', 'paused')) AND agent_id IN \(chunk)
                    """
                ).run()
            }
        }
        let rows = try await db.raw(
            """
            SELECT \(unsafeRaw: rolloutColumns) FROM rollouts AS ro JOIN releases AS r ON r.service = ro.service AND r.serial = ro.serial
            WHERE ro.state IN ('rolling', 'paused', 'awaiting-approval')
               OR (ro.state = 'completed' AND ro.id IN (SELECT MAX(id) FROM rollouts GROUP BY service))
            """
        ).all()
        for row in rows {
            // A row that cannot be read is left as it is (its evaluation reports it); the removal goes on.
            guard let rollout = try? rollout(from: row) else { continue }
            if let services, !services.contains(rollout.service) { continue }
            let kept = rollout.agentOrder.filter { !ids.contains($0) }
            guard kept.count != rollout.agentOrder.count else { continue }
            var wave = rollout.currentWave
            if rollout.state == .rolling || rollout.state == .paused {
                wave = Self.waveReaching(atMost: rollout.reachedAgents.filter { !ids.contains($0) }.count, of: rollout.strategy, agents: kept.count)
            }
            try await db.raw(
                "UPDATE rollouts SET agent_order = \(bind: agentOrderText(kept)), current_wave = \(bind: wave) WHERE id = \(bind: rollout.id)"
            ).run()
        }
    }

    /// The last wave of `strategy` over `agents` agents that reaches at most `reached` of them (0 when even the first
    /// reaches more).
    static func waveReaching(atMost reached: Int, of strategy: RolloutStrategy, agents: Int) -> Int {
        strategy.waveSizes(agentCount: agents).lastIndex { $0 <= reached } ?? 0
    }

    func isArtifact(_ sha256: String, releasedForServicesOf agentID: String) async throws -> Bool {
        try await readDB.raw(
            """
            SELECT 1 AS found FROM agents AS a, \(unsafeRaw: dialect.jsonTextElements(of: "a.services", as: "s"))
            JOIN releases AS r ON r.service = s.value
            WHERE a.id = \(bind: agentID) AND r.artifact_sha256 = \(bind: sha256)
            LIMIT 1
            """
        ).first() != nil
    }

    func agent(id: String) async throws -> AgentRecord? {
        try await readDB.raw("SELECT \(unsafeRaw: Self.agentColumns) FROM agents WHERE id = \(bind: id)").first().map(Self.agent(from:))
    }

    func agent(named name: String) async throws -> AgentRecord? {
        try await readDB.raw("SELECT \(unsafeRaw: Self.agentColumns) FROM agents WHERE name = \(bind: name)").first().map(Self.agent(from:))
    }

    func agents() async throws -> [AgentRecord] {
        try await readDB.raw("SELECT \(unsafeRaw: Self.agentColumns) FROM agents ORDER BY name").all().map(Self.agent(from:))
    }

    // MARK: Identity conflicts

    func recordIdentityConflict(agentID: String, _ conflict: AgentIdentityWatch.Standing, window: TimeInterval) async throws {
        let hostnames = String(decoding: JSONValue.array(conflict.hostnames.map { .string($0) }).encoded(), as: UTF8.self)
        let noticed = StoredTime.milliseconds(conflict.noticedAt)
        let last = StoredTime.milliseconds(conflict.lastSwitchAt)
        // A stored conflict whose last switch-back is this long before this one had lapsed: this one starts afresh.
        let lapsed = StoredTime.milliseconds(conflict.lastSwitchAt.addingTimeInterval(-window))
        // Every controller that follows the conflict writes it: the earliest notice of the conflict standing, and the
        // latest switch-back, whichever controller saw them. (NULL compares as unknown: the new values are taken.) One
        // agent's row, written on a status report's path: like status writes, it skips the writers' lock (row locks order
        // it on PostgreSQL).
        try await backend.transaction(exclusive: false) { db in
            try await db.raw(
                """
                UPDATE agents SET
                    conflict_noticed_at = CASE
                        WHEN conflict_last_switch_at > \(bind: lapsed) AND conflict_noticed_at < \(bind: noticed) THEN conflict_noticed_at
                        ELSE \(bind: noticed) END,
                    conflict_last_switch_at = CASE
                        WHEN conflict_last_switch_at > \(bind: last) THEN conflict_last_switch_at ELSE \(bind: last) END,
                    conflict_hostnames = \(bind: hostnames)
                WHERE id = \(bind: agentID)
                """
            ).run()
        }
    }

    func identityConflict(agentID: String) async throws -> AgentIdentityWatch.Standing? {
        guard
            let row = try await readDB.raw(
                """
                SELECT conflict_hostnames, conflict_noticed_at, conflict_last_switch_at FROM agents
                WHERE id = \(bind: agentID) AND conflict_hostnames IS NOT NULL
                """
            ).first(),
            let noticed = try row.decode(column: "conflict_noticed_at", as: Int64?.self),
            let last = try row.decode(column: "conflict_last_switch_at", as: Int64?.self)
        else { return nil }
        return AgentIdentityWatch.Standing(
            hostnames: try Self.strings(inAgentsColumn: "conflict_hostnames", of: row),
            noticedAt: StoredTime.date(noticed),
            lastSwitchAt: StoredTime.date(last)
        )
    }

    /// The strings of a JSON array stored in `column` of an `agents` row.
    private static func strings(inAgentsColumn column: String, of row: any SQLRow) throws -> [String] {
        let text = try row.decode(column: column, as: String.self)
        guard case .array(let items)? = try? JSONValue.parse(Array(text.utf8)) else {
            throw StoreError.corruptRow(table: "agents", reason: "\(column) is not a JSON array")
        }
        return items.compactMap { item -> String? in
            if case .string(let name) = item { return name }
            return nil
        }
    }

    static func agent(from row: any SQLRow) throws -> AgentRecord {
        let services = try strings(inAgentsColumn: "services", of: row)
        return AgentRecord(
            id: try row.decode(column: "id", as: String.self),
            name: try row.decode(column: "name", as: String.self),
            hostname: try row.decode(column: "hostname", as: String.self),
            services: services,
            enrolledAt: StoredTime.date(try row.decode(column: "enrolled_at", as: Int64.self)),
            lastSeen: try row.decode(column: "last_seen", as: Int64?.self).map(StoredTime.date),
            agentVersion: try row.decode(column: "agent_version", as: String?.self),
            processManager: try row.decode(column: "process_manager", as: String?.self),
            trustRootVersion: try row.decode(column: "trust_root_version", as: Int64?.self),
            trustRootProblem: try row.decode(column: "trust_root_problem", as: String?.self),
            identityConflictAt: try row.decode(column: "conflict_last_switch_at", as: Int64?.self).map(StoredTime.date),
            instanceID: try row.decode(column: "instance_id", as: String?.self)
        )
    }

    // MARK: Status

    func recordStatus(_ report: StatusReport, agentID: String, receivedAt date: Date, historyLimit: Int) async throws {
        let now = StoredTime.milliseconds(date)
        let reportText = String(decoding: report.json.encoded(), as: UTF8.self)
        // Only this agent's rows: no need to wait for other controllers' writers (row locks order the same agent's).
        try await backend.transaction(exclusive: false) { db in
            let updated = try await db.raw(
                """
                UPDATE agents SET last_seen = \(unsafeRaw: lastSeen(after: String(now))),
                    agent_version = CASE WHEN \(unsafeRaw: overtaken(String(now))) THEN agents.agent_version ELSE \(bind: report.agentVersion) END,
                    process_manager = CASE WHEN \(unsafeRaw: overtaken(String(now))) THEN agents.process_manager ELSE \(bind: report.processManager) END,
                    hostname_before = agents.hostname,
                    hostname = CASE WHEN \(unsafeRaw: overtaken(String(now))) THEN agents.hostname ELSE \(bind: report.hostname) END,
                    trust_root_version = CASE WHEN \(unsafeRaw: overtaken(String(now))) THEN agents.trust_root_version
                        ELSE \(bind: report.trustRoot?.version) END,
                    trust_root_problem = CASE WHEN \(unsafeRaw: overtaken(String(now))) THEN agents.trust_root_problem
                        ELSE \(bind: report.trustRoot?.problem) END
                WHERE id = \(bind: agentID) RETURNING id
                """
            ).first()
            guard updated != nil else { throw StoreError.unknownAgent(agentID) }
            for service in report.services {
                let statusText = String(decoding: service.json.encoded(), as: UTF8.self)
                try await db.raw(
                    """
                    INSERT INTO service_status (agent_id, service, status, updated_at, \(unsafeRaw: Self.statusFieldColumns))
                    VALUES (\(bind: agentID), \(bind: service.service), \(bind: statusText), \(bind: now), \(Self.statusFields(service)))
                    ON CONFLICT (agent_id, service) DO UPDATE SET \(unsafeRaw: self.statusUpsert)
                    """
                ).run()
            }
            try await db.raw(
                "INSERT INTO status_history (agent_id, received_at, report) VALUES (\(bind: agentID), \(bind: now), \(bind: reportText))"
            ).run()
            try await db.raw(
                """
                DELETE FROM status_history WHERE agent_id = \(bind: agentID) AND id NOT IN
                    (SELECT id FROM status_history WHERE agent_id = \(bind: agentID) ORDER BY id DESC LIMIT \(bind: historyLimit))
                """
            ).run()
        }
    }

    /// The columns that repeat fields of `service_status.status` for the fleet view (schema version 6) and the rollout
    /// views (version 7), in the order `statusFields` binds them.
    private static let statusFieldColumns = "version, serial, phase, health, failure_count"
    /// How many values `statusFields` binds (one per column).
    private static let statusFieldCount = statusFieldColumns.split(separator: ",").count
    /// What a status upsert replaces: the JSON, its time and the columns taken from it.
    ///
    /// On a shared database (PostgreSQL), not a status up to `reorderWindowMilliseconds` newer: with several
    /// controllers, a report queued on one (its batch waiting for the write lock) can commit after the agent's next
    /// report, sent to another controller once the first timed out. The times are all the database's clock
    /// (`ClusterClock`). A stored time further ahead is a clock that jumped (before the first clock sample, say), not a
    /// newer report: honoured, it would freeze the agent's status for as long as the jump. One controller (SQLite)
    /// stores its reports in the order they came, and its host clock may jump: no condition.
    private var statusUpsert: String {
        let replace = """
            status = excluded.status, updated_at = excluded.updated_at, version = excluded.version, serial = excluded.serial, \
            phase = excluded.phase, health = excluded.health, failure_count = excluded.failure_count
            """
        guard dialect == .postgres else { return replace }
        return replace + """
             WHERE service_status.updated_at <= excluded.updated_at \
            OR service_status.updated_at > excluded.updated_at + \(Self.reorderWindowMilliseconds)
            """
    }

    /// How much newer than a report a stored one may be and still be taken for a report that overtook it
    /// (`statusUpsert`): a report's request times out well within it.
    static let reorderWindowMilliseconds: Int64 = 120_000

    /// An agent's `last_seen` after a report received at `received` (an SQL expression of milliseconds): on a shared
    /// database, not moved back by a report that another one overtook (`statusUpsert`).
    private func lastSeen(after received: String) -> String {
        guard dialect == .postgres else { return received }
        return "CASE WHEN \(overtaken(received)) THEN agents.last_seen ELSE \(received) END"
    }

    /// Whether a report received at `received` (an SQL expression of milliseconds) was overtaken by the one the agent's
    /// row already holds (`statusUpsert`): then the row keeps the newer report's hostname, versions and trust root too,
    /// not only its `last_seen`. Never on one controller (SQLite).
    private func overtaken(_ received: String) -> String {
        guard dialect == .postgres else { return "FALSE" }
        return "(agents.last_seen > \(received) AND agents.last_seen <= \(received) + \(Self.reorderWindowMilliseconds))"
    }

    /// `status`'s fields as `statusFieldColumns` stores them: what the JSON text written beside them holds.
    private static func statusFields(_ status: ServiceStatus) -> SQLList {
        SQLList([
            SQLBind(status.version), SQLBind(status.serial), SQLBind(status.phase.rawValue), SQLBind(status.health.rawValue),
            SQLBind(status.failures.count),
        ])
    }

    /// Bind values per statement at most (SQLite allows 32,766; a batch never comes near, the chunks keep it so).
    private static let bindsPerStatement = 4_000

    func recordStatuses(_ writes: [StatusWrite], historyLimit: Int) async throws -> [StatusWriteResult] {
        guard !writes.isEmpty else { return [] }
        // The agents row and the latest status per service come from each agent's last report of the batch.
        var last: [String: Int] = [:]
        for (index, write) in writes.enumerated() { last[write.agentID] = index }
        let latest = last.values.sorted()
        let statuses = latest.flatMap { index in
            zip(writes[index].report.services, writes[index].serviceTexts).map { service, text in
                (index: index, service: service, text: text)
            }
        }
        var before = try await transaction { db -> [String: String?] in
            // Each stored agent's hostname before the batch (the row's `hostname`, as `hostname_before` now holds it).
            var known: [String: String?] = [:]
            for chunk in Self.chunks(latest, columns: 7) {
                let rows = chunk.map { index -> any SQLExpression in
                    let write = writes[index]
                    return SQLGroupExpression([
                        SQLBind(write.agentID), SQLBind(StoredTime.milliseconds(write.receivedAt)), SQLBind(write.report.agentVersion),
                        SQLBind(write.report.processManager), SQLBind(write.report.hostname), SQLBind(write.report.trustRoot?.version),
                        SQLBind(write.report.trustRoot?.problem),
                    ])
                }
                // The trust root as the agent reports it (version, and why it admits no new release), as the single
                // report path wrote it before reports were batched.
                let updated = try await db.raw(
                    """
                    UPDATE agents SET last_seen = \(unsafeRaw: lastSeen(after: "v.column2")),
                        agent_version = CASE WHEN \(unsafeRaw: overtaken("v.column2")) THEN agents.agent_version ELSE v.column3 END,
                        process_manager = CASE WHEN \(unsafeRaw: overtaken("v.column2")) THEN agents.process_manager ELSE v.column4 END,
                        hostname_before = agents.hostname,
                        hostname = CASE WHEN \(unsafeRaw: overtaken("v.column2")) THEN agents.hostname ELSE v.column5 END,
                        trust_root_version = CASE WHEN \(unsafeRaw: overtaken("v.column2")) THEN agents.trust_root_version
                            ELSE CAST(v.column6 AS BIGINT) END,
                        trust_root_problem = CASE WHEN \(unsafeRaw: overtaken("v.column2")) THEN agents.trust_root_problem
                            ELSE CAST(v.column7 AS TEXT) END
                    FROM (VALUES \(SQLList(rows))) AS v WHERE agents.id = v.column1
                    RETURNING agents.id AS id, agents.hostname_before AS hostname_before
                    """
                ).all()
                for row in updated {
                    // `.some` even when NULL (never, `hostname` is NOT NULL): the key says the agent was stored.
                    known[try row.decode(column: "id", as: String.self)] = .some(try row.decode(column: "hostname_before", as: String?.self))
                }
            }
            let storedStatuses = statuses.filter { known[writes[$0.index].agentID] != nil }
            for chunk in Self.chunks(storedStatuses, columns: 4 + Self.statusFieldCount) {
                let rows = chunk.map { status -> any SQLExpression in
                    let write = writes[status.index]
                    return SQLGroupExpression([
                        SQLBind(write.agentID), SQLBind(status.service.service), SQLBind(status.text),
                        SQLBind(StoredTime.milliseconds(write.receivedAt)), Self.statusFields(status.service),
                    ])
                }
                try await db.raw(
                    """
                    INSERT INTO service_status (agent_id, service, status, updated_at, \(unsafeRaw: Self.statusFieldColumns)) VALUES \(SQLList(rows))
                    ON CONFLICT (agent_id, service) DO UPDATE SET \(unsafeRaw: self.statusUpsert)
                    """
                ).run()
            }
            let history = writes.indices.filter { writes[$0].keepsHistory && known[writes[$0].agentID] != nil }
            for chunk in Self.chunks(history, columns: 3) {
                let rows = chunk.map { index -> any SQLExpression in
                    SQLGroupExpression([
                        SQLBind(writes[index].agentID), SQLBind(StoredTime.milliseconds(writes[index].receivedAt)), SQLBind(writes[index].reportText),
                    ])
                }
                try await db.raw("INSERT INTO status_history (agent_id, received_at, report) VALUES \(SQLList(rows))").run()
            }
            // An agent's two reports in one batch, each read against the statuses stored before it, bring the same
            // new failure twice: it is one event. (A healthy fleet's batch has none: nothing is gathered.)
            if writes.contains(where: { !$0.events.isEmpty }) {
                var seenEvents: Set<String> = []
                let events = writes.filter { known[$0.agentID] != nil }.flatMap(\.events).filter { event in
                    seenEvents.insert("\(event.agentID ?? "") \(event.service) \(event.serial.map(String.init) ?? "") \(event.kind.rawValue)")
                        .inserted
                }
                try await Self.insert(events, into: db)
            }
            // Only the agents that got a row: the others' history did not grow. Per agent, the newest row past the
            // limit is found by a walk back along the (agent_id, id) index, and what is at or below it goes: the rows
            // an agent's full history holds are not all read and ranked (a window function over them took 26-29 ms
            // for 700 agents of 51 rows each, this 4-8 ms; docs/benchmarks.md).
            for chunk in Self.chunks(Array(Set(history.map { writes[$0].agentID })), columns: 1) {
                let agents = SQLList(chunk.map { SQLGroupExpression([SQLBind($0)]) })
                try await db.raw(
                    """
                    WITH batch (agent_id) AS (VALUES \(agents)),
                    cut AS (
                        SELECT b.agent_id AS agent_id, (
                            SELECT h.id FROM status_history AS h WHERE h.agent_id = b.agent_id
                            ORDER BY h.id DESC LIMIT 1 OFFSET \(bind: historyLimit)
                        ) AS cut_id FROM batch AS b
                    )
                    DELETE FROM status_history WHERE id IN (
                        SELECT h.id FROM status_history AS h JOIN cut AS c ON h.agent_id = c.agent_id WHERE h.id <= c.cut_id
                    )
                    """
                ).run()
            }
            return known
        }
        // An agent's later report in the batch follows its earlier one: the hostname before it is the earlier one's.
        return writes.map { write in
            guard let stored = before[write.agentID] else { return StatusWriteResult(stored: false, hostnameBefore: nil) }
            before[write.agentID] = .some(write.report.hostname)
            return StatusWriteResult(stored: true, hostnameBefore: stored)
        }
    }

    /// `items` in slices small enough for `columns` bind values each.
    private static func chunks<Item>(_ items: [Item], columns: Int) -> [ArraySlice<Item>] {
        let size = max(1, bindsPerStatement / max(1, columns))
        return stride(from: 0, to: items.count, by: size).map { items[$0..<min(items.count, $0 + size)] }
    }

    func serviceStatuses() async throws -> [ServiceStatusRecord] {
        let rows = try await readDB.raw("SELECT agent_id, status, updated_at FROM service_status ORDER BY agent_id, service").all()
        return try rows.map { row in
            let text = try row.decode(column: "status", as: String.self)
            return ServiceStatusRecord(
                agentID: try row.decode(column: "agent_id", as: String.self),
                status: try Self.serviceStatus(fromJSON: text),
                updatedAt: StoredTime.date(try row.decode(column: "updated_at", as: Int64.self))
            )
        }
    }

    func runningSerials(for services: [String]) async throws -> [String: [String: Int64]] {
        guard !services.isEmpty else { return [:] }
        let names = SQLList(services.map { SQLBind($0) })
        let serial = dialect.jsonInteger("st.status", "serial")
        let rows = try await readDB.raw(
            """
            SELECT agent_id, service, \(unsafeRaw: serial) AS serial
            FROM \(dialect.statusRows(as: "st", where: "st.service IN \(SQLGroupExpression(names))")) WHERE \(unsafeRaw: serial) IS NOT NULL
            """
        ).all()
        var running: [String: [String: Int64]] = [:]
        for row in rows {
            let agentID = try row.decode(column: "agent_id", as: String.self)
            running[agentID, default: [:]][try row.decode(column: "service", as: String.self)] = try row.decode(column: "serial", as: Int64.self)
        }
        return running
    }

    /// Parses one stored `ServiceStatus`. Shared exposes the strict parser through `StatusReport` only, so the
    /// element is read back inside a minimal report: the same rules as when it was received.
    static func serviceStatus(fromJSON text: String) throws -> ServiceStatus {
        do {
            let element = try JSONValue.parse(Array(text.utf8))
            let wrapper = JSONValue.object([
                "agentVersion": .string(""), "hostname": .string(""), "processManager": .string(""), "services": .array([element]),
            ])
            guard let status = try StatusReport(json: wrapper).services.first else {
                throw StoreError.corruptRow(table: "service_status", reason: "empty status")
            }
            return status
        } catch let error as StoreError {
            throw error
        } catch {
            throw StoreError.corruptRow(table: "service_status", reason: "\(error)")
        }
    }

    func statusHistory(agentID: String, limit: Int) async throws -> [StatusHistoryEntry] {
        let rows = try await readDB.raw(
            "SELECT received_at, report FROM status_history WHERE agent_id = \(bind: agentID) ORDER BY id DESC LIMIT \(bind: limit)"
        ).all()
        return try rows.map { row in
            let text = try row.decode(column: "report", as: String.self)
            let report: StatusReport
            do {
                report = try StatusReport(json: JSONValue.parse(Array(text.utf8)))
            } catch {
                throw StoreError.corruptRow(table: "status_history", reason: "\(error)")
            }
            return StatusHistoryEntry(receivedAt: StoredTime.date(try row.decode(column: "received_at", as: Int64.self)), report: report)
        }
    }

    /// Closes the database; later calls do nothing.
    ///
    /// Also from a cancelled task (a service group cancelled because another service failed, a test past its time
    /// limit): the closing runs in a task of its own, which that cancellation does not reach. Run in the cancelled
    /// task, the backend's lock threw `CancellationError` before any connection was closed, and this store was marked
    /// closed all the same, so no later call closed them either; a connection released open trips SQLiteNIO's
    /// assertion (a debug `serve` on a port in use stopped on it instead of exiting with the bind error).
    func close() async throws {
        let first = closed.withLock { closed in
            defer { closed = true }
            return !closed
        }
        guard first else { return }
        let backend = backend
        try await Task { try await backend.close() }.value
    }
}
