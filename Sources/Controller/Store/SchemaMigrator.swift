import Foundation
import Logging
import SQLKit

/// Brings a database to `SchemaMigrations.latestVersion`, on either dialect.
///
/// Runs on one connection. Each pending migration runs in its own transaction with the row recording it, and the
/// version is read again inside that transaction, so a migration another process applied meanwhile is skipped rather
/// than applied twice. (On PostgreSQL the caller also holds an advisory lock, so one controller migrates while the
/// others wait; on SQLite `BEGIN IMMEDIATE` serialises processes on the file.)
enum SchemaMigrator {
    /// Applies the pending migrations.
    /// - Parameter location: the database as errors name it (a file path, or a URL without its password).
    /// - Parameter upgrades: whether a database of an older schema is migrated (a new one always is). Off for the
    ///   commands beside `serve` (`token create`): run from an upgraded package while the older `serve` still runs on
    ///   the database, they migrated it under that server, which went on writing with the older schema's statements.
    /// - Throws: `StoreError.schemaTooNew` when a newer Ferry migrated the database; `StoreError.cannotOpen` for an
    ///   older schema with `upgrades` off; database errors as they come.
    static func migrate(_ db: any SQLDatabase, dialect: StoreDialect, location: String, logger: Logger, upgrades: Bool = true) async throws {
        try await db.raw("\(unsafeRaw: dialect.schemaStatement(SchemaMigrations.versionTable))").run()
        let known = SchemaMigrations.latestVersion
        let found = try await currentVersion(db)
        guard found <= known else { throw StoreError.schemaTooNew(path: location, found: found, known: known) }
        guard upgrades || found == 0 || found == known else {
            throw StoreError.cannotOpen(
                path: location,
                reason: "the database has schema version \(found) and this ferry-controller uses \(known): start this version's "
                    + "ferry-controller serve first (it migrates the database); this command does not migrate a database a running "
                    + "older controller may be using"
            )
        }
        // Every version below the highest applied one must be applied too: only versions above it are applied here,
        // and a missing one (a database a development build numbered out of order) left its tables out for good,
        // every query of them failing later with "no such table".
        let applied = try await appliedVersions(db)
        if let missing = SchemaMigrations.all.map(\.version).first(where: { $0 < found && !applied.contains($0) }) {
            throw StoreError.cannotOpen(
                path: location,
                reason: "schema version \(missing) was never applied although version \(found) was (a database migrated out of order); "
                    + "restore a backup or start from a new database"
            )
        }
        for migration in SchemaMigrations.all where migration.version > found {
            try await db.raw("\(unsafeRaw: dialect == .sqlite ? "BEGIN IMMEDIATE" : "BEGIN")").run()
            do {
                // Another process may have applied it between the read above and this transaction: skipped, and a
                // newer Ferry's migrations refused (they were checked for only before the loop).
                let current = try await currentVersion(db)
                guard current <= known else { throw StoreError.schemaTooNew(path: location, found: current, known: known) }
                guard current < migration.version else {
                    try await db.raw("ROLLBACK").run()
                    continue
                }
                for statement in migration.statements(for: dialect) { try await db.raw("\(unsafeRaw: statement)").run() }
                let now = StoredTime.milliseconds(Date())
                try await db.raw(
                    """
                    INSERT INTO ferry_schema (version, description, applied_at)
                    VALUES (\(bind: migration.version), \(bind: migration.description), \(bind: now))
                    """
                ).run()
                try await db.raw("COMMIT").run()
            } catch {
                try? await db.raw("ROLLBACK").run()
                throw error
            }
            logger.info(
                "Applied schema migration",
                metadata: ["store.schema.version": "\(migration.version)", "store.location": "\(location)"]
            )
        }
    }

    /// Every applied version.
    static func appliedVersions(_ db: any SQLDatabase) async throws -> Set<Int> {
        Set(try await db.raw("SELECT version FROM ferry_schema").all().map { try $0.decode(column: "version", as: Int.self) })
    }

    /// The highest applied version (0 for a new database).
    static func currentVersion(_ db: any SQLDatabase) async throws -> Int {
        try await db.raw("SELECT COALESCE(MAX(version), 0) AS v FROM ferry_schema").first()?.decode(column: "v", as: Int.self) ?? 0
    }
}
