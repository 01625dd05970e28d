import Logging
import NIOCore
import SQLKit
import SQLiteKit
import Shared
import Synchronization

/// The SQLite store's read connections, each running one query at a time.
///
/// A SQLite connection in autocommit mode holds one read transaction while any of its statements is active, and a
/// statement started meanwhile joins it: it reads the snapshot the first one took. SQLiteNIO steps a connection's
/// queries on a thread pool, so concurrent reads on one shared connection overlapped, and under steady load (thousands
/// of agents polling) the connection never left its read transaction: reads kept seeing the database as it was
/// seconds before. Found with 10,000 agents enrolling at once (`scripts/bench-fleet`): an agent's first poll right
/// after its enrolment was answered 201 sometimes found no token and answered 401. Here every query has a connection
/// to itself for its duration, so each one starts a fresh snapshot and sees every transaction committed before it
/// began, as a read after a commit must.
final class SQLiteReaders: SQLDatabase {
    private struct Reader: Sendable {
        let connection: SQLiteConnection
        let lock = AsyncLock()
    }

    private let readers: [Reader]
    private let next = Atomic<UInt>(0)
    let logger: Logger

    /// - Parameter connections: at least one, opened on the same file.
    init(_ connections: [SQLiteConnection], logger: Logger) {
        precondition(!connections.isEmpty, "SQLiteReaders needs a connection")
        self.readers = connections.map { Reader(connection: $0) }
        self.logger = logger
    }

    private var first: any SQLDatabase { readers[0].connection.sql(queryLogLevel: nil) }
    var eventLoop: any EventLoop { readers[0].connection.eventLoop }
    var version: (any SQLDatabaseReportedVersion)? { first.version }
    var dialect: any SQLDialect { first.dialect }
    var queryLogLevel: Logger.Level? { nil }

    func execute(sql query: any SQLExpression, _ onRow: @escaping @Sendable (any SQLRow) -> Void) async throws {
        // The first idle connection from a round-robin start; when all are busy, the start's, after its running query.
        // A query never shares another's snapshot.
        let start = Int(next.wrappingAdd(1, ordering: .relaxed).oldValue % UInt(readers.count))
        for offset in 0..<readers.count {
            let reader = readers[(start + offset) % readers.count]
            let ran = try await reader.lock.withLockIfFree {
                try await reader.connection.sql(queryLogLevel: nil).execute(sql: query, onRow)
            }
            if ran { return }
        }
        let reader = readers[start]
        try await reader.lock.withLock {
            try await reader.connection.sql(queryLogLevel: nil).execute(sql: query, onRow)
        }
    }

    func execute(sql query: any SQLExpression, _ onRow: @escaping @Sendable (any SQLRow) -> Void) -> EventLoopFuture<Void> {
        let promise = eventLoop.makePromise(of: Void.self)
        promise.completeWithTask { try await self.execute(sql: query, onRow) }
        return promise.futureResult
    }

    /// Closes every connection, after its running query.
    /// Closes every reader, even when closing one fails (a connection left open is never closed afterwards); throws
    /// the first failure.
    func close() async throws {
        var firstFailure: (any Error)?
        for reader in readers {
            do {
                try await reader.lock.withLock { try await reader.connection.closeEvenWhenCancelled() }
            } catch {
                firstFailure = firstFailure ?? error
            }
        }
        if let firstFailure { throw firstFailure }
    }
}
