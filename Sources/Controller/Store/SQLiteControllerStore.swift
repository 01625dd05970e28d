import Foundation
import Logging
import SQLKit
import SQLiteKit
import Shared

/// The embedded default store: one SQLite file (`<data-dir>/ferry.sqlite`) in WAL mode.
///
/// Two connections: a writer, used under an `AsyncLock` so each transaction runs alone, and a reader, which in WAL
/// mode sees only committed data and never waits for the writer. Several processes may open the same file (the
/// `token create` command does so while the server runs); SQLite's own locking serialises them.
final class SQLiteControllerStore: ControllerStore {
    /// Where the database lives and how it behaves.
    struct Configuration: Sendable {
        /// The database file. Created (with its directory) when missing.
        var path: String
        /// `PRAGMA synchronous`. Default `FULL`: a published release survives a power cut once acknowledged.
        var synchronous: String = "FULL"

        init(path: String) { self.path = path }
    }

    private let writer: SQLiteConnection
    private let reader: SQLiteConnection
    private let writeLock = AsyncLock()
    /// The database file.
    let path: String

    private var writeDB: any SQLDatabase { writer.sql(queryLogLevel: nil) }
    /// The read connection (WAL: committed data only, never waits for the writer). For `+Concern` extensions.
    var readDB: any SQLDatabase { reader.sql(queryLogLevel: nil) }

    private init(writer: SQLiteConnection, reader: SQLiteConnection, path: String) {
        self.writer = writer
        self.reader = reader
        self.path = path
    }

    /// Opens (creating when needed) the database and applies pending migrations.
    /// - Throws: `StoreError.cannotOpen`, `StoreError.schemaTooNew`.
    static func open(_ configuration: Configuration, logger: Logger) async throws -> SQLiteControllerStore {
        let path = configuration.path
        let directory = (path as NSString).deletingLastPathComponent
        do {
            // The directory 0700 and the files 0600 whatever the umask: SQLite creates -wal and -shm with the main
            // file's mode, so creating that one first is enough for new files; older ones are tightened here.
            if !directory.isEmpty { try DataDirectory.prepare(directory) }
            try DataDirectory.prepareFile(path)
            for suffix in ["-wal", "-shm"] { try DataDirectory.restrict(path + suffix) }
        } catch {
            throw StoreError.cannotOpen(path: path, reason: "\(error)")
        }
        let writer: SQLiteConnection
        do {
            writer = try await SQLiteConnection.open(storage: .file(path: path), logger: logger)
        } catch {
            throw StoreError.cannotOpen(path: path, reason: "\(error)")
        }
        do {
            let db = writer.sql(queryLogLevel: nil)
            // WAL first: it is a property of the file, and the reader below relies on it.
            try await db.raw("PRAGMA journal_mode = WAL").run()
            try await db.raw("PRAGMA synchronous = \(unsafeRaw: configuration.synchronous)").run()
            try await db.raw("PRAGMA foreign_keys = ON").run()
            try await migrate(db, path: path, logger: logger)
            let reader = try await SQLiteConnection.open(storage: .file(path: path), logger: logger)
            try await reader.sql(queryLogLevel: nil).raw("PRAGMA foreign_keys = ON").run()
            return SQLiteControllerStore(writer: writer, reader: reader, path: path)
        } catch {
            try? await writer.close()
            if let error = error as? StoreError { throw error }
            throw StoreError.cannotOpen(path: path, reason: "\(error)")
        }
    }

    private static func migrate(_ db: any SQLDatabase, path: String, logger: Logger) async throws {
        try await db.raw("\(unsafeRaw: SchemaMigrations.versionTable)").run()
        let current = try await db.raw("SELECT COALESCE(MAX(version), 0) AS v FROM ferry_schema").first()?.decode(column: "v", as: Int.self) ?? 0
        guard current <= SchemaMigrations.latestVersion else {
            throw StoreError.schemaTooNew(path: path, found: current, known: SchemaMigrations.latestVersion)
        }
        for migration in SchemaMigrations.all where migration.version > current {
            try await db.raw("BEGIN IMMEDIATE").run()
            do {
                for statement in migration.statements { try await db.raw("\(unsafeRaw: statement)").run() }
                let now = StoredTime.milliseconds(Date())
                try await db.raw(
                    "INSERT INTO ferry_schema (version, description, applied_at) VALUES (\(bind: migration.version), \(bind: migration.description), \(bind: now))"
                ).run()
                try await db.raw("COMMIT").run()
            } catch {
                try? await db.raw("ROLLBACK").run()
                throw error
            }
            logger.info("Applied schema migration", metadata: ["store.schema.version": "\(migration.version)", "store.path": "\(path)"])
        }
    }

    /// Runs `body` on the writer connection inside one transaction, alone.
    func transaction<T: Sendable>(_ body: (any SQLDatabase) async throws -> T) async throws -> T {
        let db = writeDB
        return try await writeLock.withLock {
            try await db.raw("BEGIN IMMEDIATE").run()
            do {
                let result = try await body(db)
                try await db.raw("COMMIT").run()
                return result
            } catch {
                try? await db.raw("ROLLBACK").run()
                throw error
            }
        }
    }

    // MARK: Tokens

    // Tokens live in SQLiteControllerStore+Tokens.swift.

    // MARK: Releases

    // `insertRelease(_:)` is the protocol extension over `insertRelease(_:rollout:)` (SQLiteControllerStore+
    // Rollouts.swift): one SQL path stores every release, with its rollout.

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
        "id, name, hostname, services, enrolled_at, last_seen, agent_version, process_manager, trust_root_version, trust_root_problem"

    func enrollAgent(
        proposedID: String,
        name: String,
        hostname: String,
        services: [String],
        tokenHash: String,
        mode: EnrollmentMode,
        at date: Date
    ) async throws -> (agent: AgentRecord, replaced: Bool) {
        let servicesText = String(decoding: JSONValue.array(services.sorted().map { .string($0) }).encoded(), as: UTF8.self)
        let now = StoredTime.milliseconds(date)
        return try await transaction { db in
            let existing = try await db.raw("SELECT id FROM agents WHERE name = \(bind: name)").first()?.decode(column: "id", as: String.self)
            switch mode {
            case .create(let tokenID):
                // The token first: a token that can no longer enroll learns nothing, not even whether a name is taken.
                if let tokenID { try await Self.consumeEnrollmentUse(tokenID, now: now, db: db) }
                if let existing { throw StoreError.agentExists(name: name, id: existing) }
                guard
                    let row = try await db.raw(
                        """
                        INSERT INTO agents (id, name, hostname, services, token_hash, enrolled_at)
                        VALUES (\(bind: proposedID), \(bind: name), \(bind: hostname), \(bind: servicesText), \(bind: tokenHash), \(bind: now))
                        RETURNING \(unsafeRaw: Self.agentColumns)
                        """
                    ).first()
                else {
                    throw StoreError.corruptRow(table: "agents", reason: "enrollment returned no row")
                }
                return (try Self.agent(from: row), false)
            case .replace:
                // The same machine enrolling again (reimaged, state lost), on an operator's word: keep its id and
                // history, rotate the token so the old one stops working.
                guard
                    let row = try await db.raw(
                        """
                        INSERT INTO agents (id, name, hostname, services, token_hash, enrolled_at)
                        VALUES (\(bind: proposedID), \(bind: name), \(bind: hostname), \(bind: servicesText), \(bind: tokenHash), \(bind: now))
                        ON CONFLICT (name) DO UPDATE SET
                            hostname = excluded.hostname, services = excluded.services, token_hash = excluded.token_hash
                        RETURNING \(unsafeRaw: Self.agentColumns)
                        """
                    ).first()
                else {
                    throw StoreError.corruptRow(table: "agents", reason: "enrollment returned no row")
                }
                return (try Self.agent(from: row), existing != nil)
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
            try await db.raw("DELETE FROM agents WHERE name = \(bind: name) RETURNING \(unsafeRaw: Self.agentColumns)").first()
                .map(Self.agent(from:))
        }
    }

    func isArtifact(_ sha256: String, releasedForServicesOf agentID: String) async throws -> Bool {
        try await readDB.raw(
            """
            SELECT 1 AS found FROM agents AS a, json_each(a.services) AS s
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

    static func agent(from row: any SQLRow) throws -> AgentRecord {
        let servicesText = try row.decode(column: "services", as: String.self)
        guard case .array(let items)? = try? JSONValue.parse(Array(servicesText.utf8)) else {
            throw StoreError.corruptRow(table: "agents", reason: "services is not a JSON array")
        }
        let services = items.compactMap { item -> String? in
            if case .string(let name) = item { return name }
            return nil
        }
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
            trustRootProblem: try row.decode(column: "trust_root_problem", as: String?.self)
        )
    }

    // MARK: Status

    func recordStatus(_ report: StatusReport, agentID: String, receivedAt date: Date, historyLimit: Int) async throws {
        let now = StoredTime.milliseconds(date)
        let reportText = String(decoding: report.json.encoded(), as: UTF8.self)
        try await transaction { db in
            let updated = try await db.raw(
                """
                UPDATE agents SET last_seen = \(bind: now), agent_version = \(bind: report.agentVersion),
                    process_manager = \(bind: report.processManager), hostname = \(bind: report.hostname),
                    trust_root_version = \(bind: report.trustRoot?.version), trust_root_problem = \(bind: report.trustRoot?.problem)
                WHERE id = \(bind: agentID) RETURNING id
                """
            ).first()
            guard updated != nil else { throw StoreError.unknownAgent(agentID) }
            for service in report.services {
                let statusText = String(decoding: service.json.encoded(), as: UTF8.self)
                try await db.raw(
                    """
                    INSERT INTO service_status (agent_id, service, status, updated_at)
                    VALUES (\(bind: agentID), \(bind: service.service), \(bind: statusText), \(bind: now))
                    ON CONFLICT (agent_id, service) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at
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

    /// Bind values per statement at most (SQLite allows 32,766; a batch never comes near, the chunks keep it so).
    private static let bindsPerStatement = 4_000

    func recordStatuses(_ writes: [StatusWrite], historyLimit: Int) async throws -> [Bool] {
        guard !writes.isEmpty else { return [] }
        // Encoded before the transaction: the writer holds the database only for the statements.
        let reports = writes.map { String(decoding: $0.report.json.encoded(), as: UTF8.self) }
        // The agents row and the latest status per service come from each agent's last report of the batch.
        var last: [String: Int] = [:]
        for (index, write) in writes.enumerated() { last[write.agentID] = index }
        let latest = last.values.sorted()
        let statuses = latest.flatMap { index in
            writes[index].report.services.map { service in
                (index: index, service: service.service, text: String(decoding: service.json.encoded(), as: UTF8.self))
            }
        }
        return try await transaction { db in
            var known: Set<String> = []
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
                    UPDATE agents SET last_seen = v.column2, agent_version = v.column3, process_manager = v.column4, hostname = v.column5,
                        trust_root_version = v.column6, trust_root_problem = v.column7
                    FROM (VALUES \(SQLList(rows))) AS v WHERE agents.id = v.column1 RETURNING agents.id AS id
                    """
                ).all()
                for row in updated { known.insert(try row.decode(column: "id", as: String.self)) }
            }
            let storedStatuses = statuses.filter { known.contains(writes[$0.index].agentID) }
            for chunk in Self.chunks(storedStatuses, columns: 4) {
                let rows = chunk.map { status -> any SQLExpression in
                    let write = writes[status.index]
                    return SQLGroupExpression([
                        SQLBind(write.agentID), SQLBind(status.service), SQLBind(status.text), SQLBind(StoredTime.milliseconds(write.receivedAt)),
                    ])
                }
                try await db.raw(
                    """
                    INSERT INTO service_status (agent_id, service, status, updated_at) VALUES \(SQLList(rows))
                    ON CONFLICT (agent_id, service) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at
                    """
                ).run()
            }
            let history = writes.indices.filter { known.contains(writes[$0].agentID) }
            for chunk in Self.chunks(history, columns: 3) {
                let rows = chunk.map { index -> any SQLExpression in
                    SQLGroupExpression([
                        SQLBind(writes[index].agentID), SQLBind(StoredTime.milliseconds(writes[index].receivedAt)), SQLBind(reports[index]),
                    ])
                }
                try await db.raw("INSERT INTO status_history (agent_id, received_at, report) VALUES \(SQLList(rows))").run()
            }
            for chunk in Self.chunks(Array(known), columns: 1) {
                try await db.raw(
                    """
                    DELETE FROM status_history WHERE id IN (
                        SELECT id FROM (
                            SELECT id, ROW_NUMBER() OVER (PARTITION BY agent_id ORDER BY id DESC) AS n FROM status_history
                            WHERE agent_id IN \(SQLGroupExpression(chunk.map { SQLBind($0) }))
                        ) WHERE n > \(bind: historyLimit)
                    )
                    """
                ).run()
            }
            return writes.map { known.contains($0.agentID) }
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
        let rows = try await readDB.raw(
            """
            SELECT agent_id, service, json_extract(status, '$.serial') AS serial FROM service_status
            WHERE service IN \(SQLGroupExpression(names)) AND json_extract(status, '$.serial') IS NOT NULL
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

    func close() async throws {
        try await writeLock.withLock {
            try await reader.close()
            try await writer.close()
        }
    }
}
