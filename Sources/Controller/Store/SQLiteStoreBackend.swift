import Foundation
import Logging
import NIOCore
import SQLKit
import SQLiteKit
import Shared

/// The embedded default: one SQLite file (`<data-dir>/ferry.sqlite`) in WAL mode.
///
/// A writer, used under an `AsyncLock` so each transaction runs alone, and `readerCount` readers (`SQLiteReaders`),
/// each running one query at a time, which in WAL mode see only committed data and never wait for the writer. Several processes may open the same file (the
/// `token create` command does so while the server runs); SQLite's own locking serialises them.
final class SQLiteStoreBackend: SQLStoreBackend {
    /// Where the database lives and how it behaves.
    struct Configuration: Sendable {
        /// The database file. Created (with its directory) when missing.
        var path: String
        /// `PRAGMA synchronous`. Default `FULL`: a published release survives a power cut once acknowledged.
        var synchronous: String = "FULL"
        /// How often the WAL is checkpointed (off the writer, see `SQLiteCheckpointer`).
        var checkpointInterval: Duration = .seconds(1)
        /// WAL frames (pages of 4 KiB) past which the log is restarted on the writer, and the file cut back to that size
        /// (see `SQLiteCheckpointer`): 16,384 frames, 64 MiB. `Int.max`: never.
        var walRestartFrames = 16_384
        /// Whether a database of an older schema is migrated. Default `true` (`serve`); the token commands turn it off
        /// (`SchemaMigrator.migrate`).
        var upgradesSchema = true

        init(path: String) { self.path = path }
    }

    private let writer: SQLiteConnection
    private let readers: SQLiteReaders
    /// Checkpoints the WAL off the writer (see `SQLiteCheckpointer`).
    private let checkpointer: SQLiteCheckpointer
    /// As many as the thread pool SQLiteNIO steps queries on has threads (one per core, at least two).
    private static let readerCount = max(2, System.coreCount)
    private let writeLock: AsyncLock
    /// The database file.
    let path: String

    var dialect: StoreDialect { .sqlite }
    var location: String { path }
    var readDB: any SQLDatabase { readers }

    private init(writer: SQLiteConnection, writeLock: AsyncLock, readers: SQLiteReaders, checkpointer: SQLiteCheckpointer, path: String) {
        self.writer = writer
        self.writeLock = writeLock
        self.readers = readers
        self.checkpointer = checkpointer
        self.path = path
    }

    deinit {
        // A backend dropped without `close()` (a failed start) does not leave its checkpoint loop running.
        checkpointer.cancel()
    }

    /// Opens (creating when needed) the database and applies pending migrations.
    /// - Throws: `StoreError.cannotOpen`, `StoreError.schemaTooNew`.
    static func open(_ configuration: Configuration, logger: Logger) async throws -> SQLiteStoreBackend {
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
            // Checkpoints run on their own connection (below), never inside a commit.
            try await db.raw("PRAGMA wal_autocheckpoint = 0").run()
            // After the log restarts (below), the first commit cuts the file back to this size: restarted, not emptied,
            // so commits keep overwriting pages the file already has instead of growing it again.
            try await db.raw("PRAGMA journal_size_limit = \(unsafeRaw: String(Self.walSizeLimit(frames: configuration.walRestartFrames)))").run()
            try await SchemaMigrator.migrate(db, dialect: .sqlite, location: path, logger: logger, upgrades: configuration.upgradesSchema)
            var connections: [SQLiteConnection] = []
            do {
                for _ in 0..<readerCount {
                    let reader = try await SQLiteConnection.open(storage: .file(path: path), logger: logger)
                    connections.append(reader)
                    try await reader.sql(queryLogLevel: nil).raw("PRAGMA foreign_keys = ON").run()
                }
            } catch {
                for reader in connections { try? await reader.closeEvenWhenCancelled() }
                throw error
            }
            let checkpointer: SQLiteCheckpointer
            let writeLock = AsyncLock()
            do {
                checkpointer = try await SQLiteCheckpointer.start(
                    path: path,
                    interval: configuration.checkpointInterval,
                    restartFrames: configuration.walRestartFrames,
                    restart: { [writer] in
                        // On the writer, between two transactions: no commit waits behind a checkpoint's lock, and
                        // none can add frames while the log is restarted.
                        try await writeLock.withLock { () async throws -> Void in
                            _ = try await writer.sql(queryLogLevel: nil).raw("PRAGMA wal_checkpoint(RESTART)").all()
                        }
                    },
                    logger: logger
                )
            } catch {
                for reader in connections { try? await reader.closeEvenWhenCancelled() }
                throw error
            }
            return SQLiteStoreBackend(
                writer: writer,
                writeLock: writeLock,
                readers: SQLiteReaders(connections, logger: logger),
                checkpointer: checkpointer,
                path: path
            )
        } catch {
            try? await writer.closeEvenWhenCancelled()
            if let error = error as? StoreError { throw error }
            throw StoreError.cannotOpen(path: path, reason: "\(error)")
        }
    }

    /// `journal_size_limit` in bytes for a log restarted at `frames` frames of 4 KiB (and their headers); -1 (no limit) when
    /// that does not fit.
    static func walSizeLimit(frames: Int) -> Int {
        let (bytes, overflow) = frames.multipliedReportingOverflow(by: 4096 + 24)
        return overflow || bytes < 0 ? -1 : bytes
    }

    /// Every transaction runs alone on the writer (`exclusive` changes nothing: SQLite has one writer anyway).
    func transaction<T: Sendable>(exclusive: Bool, _ body: (any SQLDatabase) async throws -> T) async throws -> T {
        let db = writer.sql(queryLogLevel: nil)
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

    func close() async throws {
        await checkpointer.stop()
        // The writer is closed even when a reader's close failed: it was skipped before, and an unclosed connection
        // trips SQLiteNIO's assertion when it is released (seen once, in a test process on an overloaded machine).
        try await writeLock.withLock {
            var readersFailure: (any Error)?
            do { try await readers.close() } catch { readersFailure = error }
            try await writer.closeEvenWhenCancelled()
            if let readersFailure { throw readersFailure }
        }
    }
}
