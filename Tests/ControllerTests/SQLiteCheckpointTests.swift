import Foundation
import SQLKit
import TestSupport
import Testing

@testable import Controller

/// The WAL is copied into the database file by the checkpoint loop, never by a commit: a report's commit does not
/// wait for a checkpoint's `fsync` of the database file.
@Suite struct SQLiteCheckpointTests {
    /// Commits 8 MiB (2,048 pages of 4 KiB, twice SQLite's automatic checkpoint threshold) in 64 transactions, then
    /// returns the size of the database file itself (not the WAL).
    static func fill(_ store: SQLControllerStore, path: String) async throws -> Int {
        try await store.transaction { db in try await db.raw("CREATE TABLE filler (data BLOB)").run() }
        for _ in 0..<64 {
            try await store.transaction { db in
                for _ in 0..<32 { try await db.raw("INSERT INTO filler VALUES (zeroblob(4000))").run() }
            }
        }
        return try Self.size(path)
    }

    static func size(_ path: String) throws -> Int {
        (try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
    }

    /// A store in a new directory whose checkpoint loop runs every `interval`.
    static func withStore(checkpointEvery interval: Duration, _ body: (SQLControllerStore, String) async throws -> Void) async throws {
        try await TestPaths.withTemporaryDirectory("ferry-checkpoint") { directory in
            let path = directory.appendingPathComponent("ferry.sqlite").path
            var configuration = SQLiteStoreBackend.Configuration(path: path)
            configuration.checkpointInterval = interval
            let store = try await SQLControllerStore.open(configuration, logger: ControllerFixture.logger)
            try await body(store, path)
            try await store.close()
        }
    }

    @Test func commitsNeverCheckpoint() async throws {
        try await Self.withStore(checkpointEvery: .seconds(3600)) { store, path in
            let size = try await Self.fill(store, path: path)
            // SQLite's automatic checkpoint would have copied at least the first 1,000 pages (4 MB) into the file.
            #expect(size < 2_000_000, "database file \(size) bytes: a commit checkpointed")
            #expect(try Self.size(path + "-wal") > 8_000_000, "the data is in the WAL")
        }
    }

    @Test func theLoopCheckpoints() async throws {
        try await Self.withStore(checkpointEvery: .milliseconds(100)) { store, path in
            _ = try await Self.fill(store, path: path)
            let deadline = ContinuousClock.now + .seconds(20)
            var size = try Self.size(path)
            while size < 8_000_000, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(100))
                size = try Self.size(path)
            }
            #expect(size >= 8_000_000, "database file \(size) bytes: the loop did not copy the WAL")
        }
    }
}
