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
