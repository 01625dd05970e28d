import Foundation
import NIOCore
import SQLKit

/// Artifact bytes in the database, in chunks, so every controller sharing it can serve every artifact.
///
/// Used with PostgreSQL (`ArtifactStore.Configuration.shared`); the SQL is the store's shared SQL and runs on SQLite
/// too. An artifact's row and all its chunks are written in one transaction: a row that exists is complete.
protocol ArtifactBlobStore: Sendable {
    /// The size of a stored artifact, or `nil` when the database has none with that digest.
    func artifactBlobSize(_ sha256: String) async throws -> Int64?

    /// Marks a stored artifact as stored again at `date` (an upload of bytes the database already holds), so that a
    /// prune running meanwhile, which deletes only rows stored before its cutoff, keeps it.
    /// - Returns: whether the database holds it.
    func refreshArtifactBlob(_ sha256: String, at date: Date) async throws -> Bool

    /// Stores an artifact's bytes, `chunkBytes` at a time, read by `chunk(index)` (each returns at most `chunkBytes`;
    /// the chunks together make `size` bytes). Nothing happens when the artifact is already stored.
    /// - Returns: whether it was stored by this call.
    func storeArtifactBlob(
        _ sha256: String,
        size: Int64,
        chunkBytes: Int,
        at date: Date,
        chunk: (Int) async throws -> ByteBuffer
    ) async throws -> Bool

    /// Chunk `index` of a stored artifact, or `nil` past its end.
    func artifactBlobChunk(_ sha256: String, index: Int) async throws -> ByteBuffer?
}

extension SQLControllerStore: ArtifactBlobStore {
    func artifactBlobSize(_ sha256: String) async throws -> Int64? {
        try await readDB.raw("SELECT size FROM artifacts WHERE sha256 = \(bind: sha256)").first()?.decode(column: "size", as: Int64.self)
    }

    func refreshArtifactBlob(_ sha256: String, at date: Date) async throws -> Bool {
        // One statement: a prune's delete of the row (under its lock) either comes first, and this finds no row (the
        // upload then stores it again), or reads the new time and keeps it.
        let refreshed = try await backend.transaction(exclusive: false) { db in
            try await db.raw(
                """
                UPDATE artifacts SET created_at = \(bind: StoredTime.milliseconds(date))
                WHERE sha256 = \(bind: sha256) AND created_at < \(bind: StoredTime.milliseconds(date)) RETURNING sha256
                """
            ).first()
        }
        if refreshed != nil { return true }
        return try await artifactBlobSize(sha256) != nil
    }

    func storeArtifactBlob(
        _ sha256: String,
        size: Int64,
        chunkBytes: Int,
        at date: Date,
        chunk: (Int) async throws -> ByteBuffer
    ) async throws -> Bool {
        guard chunkBytes > 0, size > 0 else { throw StoreError.corruptRow(table: "artifacts", reason: "an artifact needs bytes and a chunk size") }
        let (full, rest) = size.quotientAndRemainder(dividingBy: Int64(chunkBytes))
        let count = Int(full) + (rest > 0 ? 1 : 0)
        // Not exclusive: only this digest's rows. A second controller storing the same digest waits on the row's key
        // until the first commits, then inserts nothing.
        return try await backend.transaction(exclusive: false) { db in
            let inserted = try await db.raw(
                """
                INSERT INTO artifacts (sha256, size, chunk_bytes, created_at)
                VALUES (\(bind: sha256), \(bind: size), \(bind: chunkBytes), \(bind: StoredTime.milliseconds(date)))
                ON CONFLICT (sha256) DO NOTHING RETURNING sha256
                """
            ).first()
            guard inserted != nil else { return false }
            var written: Int64 = 0
            for index in 0..<count {
                let bytes = try await chunk(index)
                guard bytes.readableBytes > 0, bytes.readableBytes <= chunkBytes else {
                    throw StoreError.corruptRow(table: "artifact_chunks", reason: "chunk \(index) of \(sha256) has \(bytes.readableBytes) bytes")
                }
                written += Int64(bytes.readableBytes)
                try await db.raw(
                    "INSERT INTO artifact_chunks (sha256, seq, data) VALUES (\(bind: sha256), \(bind: index), \(bind: bytes))"
                ).run()
            }
            guard written == size else {
                throw StoreError.corruptRow(table: "artifact_chunks", reason: "\(sha256): \(written) bytes written, \(size) expected")
            }
            return true
        }
    }

    func artifactBlobChunk(_ sha256: String, index: Int) async throws -> ByteBuffer? {
        try await readDB.raw("SELECT data FROM artifact_chunks WHERE sha256 = \(bind: sha256) AND seq = \(bind: index)").first()?
            .decode(column: "data", as: ByteBuffer.self)
    }
}

/// An artifact row of the database (`ControllerStore.artifactRows`).
struct StoredArtifactRow: Sendable, Equatable {
    var size: Int64
    /// When the row was written (the first upload of those bytes to any controller).
    var createdAt: Date
}

extension SQLControllerStore {
    func retainedArtifacts(keepReleases: Int) async throws -> Set<String> {
        try await Self.retainedArtifacts(keepReleases: keepReleases, in: readDB)
    }

    func artifactRows() async throws -> [String: StoredArtifactRow] {
        var rows: [String: StoredArtifactRow] = [:]
        for row in try await readDB.raw("SELECT sha256, size, created_at FROM artifacts").all() {
            rows[try row.decode(column: "sha256", as: String.self)] = StoredArtifactRow(
                size: try row.decode(column: "size", as: Int64.self),
                createdAt: StoredTime.date(try row.decode(column: "created_at", as: Int64.self))
            )
        }
        return rows
    }

    func removeArtifactRows(
        _ candidates: Set<String>,
        storedBefore cutoff: Date,
        keepReleases: Int
    ) async throws -> (retained: Set<String>, removed: Set<String>) {
        // Exclusive: the write lock every publish takes (`insertRelease(requiringStoredArtifact:)`), on every controller.
        try await transaction { db in
            let retained = try await Self.retainedArtifacts(keepReleases: keepReleases, in: db)
            var removed: Set<String> = []
            for sha256 in candidates.subtracting(retained).sorted() {
                let deleted = try await db.raw(
                    """
                    DELETE FROM artifacts WHERE sha256 = \(bind: sha256) AND created_at < \(bind: StoredTime.milliseconds(cutoff))
                    RETURNING sha256
                    """
                ).first()
                guard deleted != nil else { continue }
                // SQLite enforces no foreign key here unless asked: the chunks go by name, not by cascade.
                try await db.raw("DELETE FROM artifact_chunks WHERE sha256 = \(bind: sha256)").run()
                removed.insert(sha256)
            }
            return (retained, removed)
        }
    }

    /// What `retainedArtifacts` keeps, read in `db` (a transaction's, to read it under the write lock). Of the latest
    /// rollout of a service, the stable serial counts unless it completed (what `RolloutRecord.intendedSerial` gives
    /// agents); of an open one (an older one governs while a later release awaits approval), both.
    private static func retainedArtifacts(keepReleases: Int, in db: any SQLDatabase) async throws -> Set<String> {
        let open = [RolloutState.awaitingApproval, .rolling, .paused, .halted].map { "'\($0.rawValue)'" }.joined(separator: ", ")
        let rows = try await db.raw(
            """
            SELECT artifact_sha256 AS sha256 FROM (
                SELECT artifact_sha256, ROW_NUMBER() OVER (PARTITION BY service ORDER BY serial DESC) AS position FROM releases
            ) AS newest WHERE position <= \(bind: keepReleases)
            UNION
            SELECT r.artifact_sha256 AS sha256 FROM releases r
            JOIN service_status s ON s.service = r.service AND s.serial = r.serial
            UNION
            SELECT r.artifact_sha256 AS sha256 FROM releases r
            JOIN rollouts o ON o.service = r.service AND (o.serial = r.serial OR o.stable_serial = r.serial)
            WHERE o.state IN (\(unsafeRaw: open))
                OR (o.serial = (SELECT MAX(latest.serial) FROM rollouts latest WHERE latest.service = o.service)
                    AND (o.serial = r.serial OR o.state <> \(bind: RolloutState.completed.rawValue)))
            """
        ).all()
        return Set(try rows.map { try $0.decode(column: "sha256", as: String.self) })
    }
}
