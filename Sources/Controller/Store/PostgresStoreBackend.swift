import Foundation
import Logging
import NIOCore
import NIOSSL
import PostgresKit
import PostgresNIO
import SQLKit
import Shared
import Synchronization

/// PostgreSQL, shared by several controllers: a pool of connections (postgres-nio's `PostgresClient`).
///
/// Write transactions run one at a time **across every controller** on the database, as SQLite's do on one file: each
/// takes the transaction-scoped advisory lock `writeLockKey` after `BEGIN` (within a process, an `AsyncLock` first, so
/// at most one pooled connection per controller waits on it). That keeps the store's read-check-write transactions
/// (a publish's serial check, an enrolment's name check, a rollout's supersede) exactly as correct as on SQLite, for the
/// methods written here and for any added later. Transactions that touch one agent's own rows only
/// (`exclusive: false`: status reports) skip the lock: row locks order them.
///
/// Migrations run at open under the session advisory lock `migrationLockKey`: when several controllers start at once,
/// one migrates and the others wait, then find nothing to do.
final class PostgresStoreBackend: SQLStoreBackend {
    /// Advisory lock keys (one 64-bit space per database): "ferry" in ASCII, then a purpose.
    static let writeLockKey: Int64 = 0x6665_7272_7900_0001
    static let migrationLockKey: Int64 = 0x6665_7272_7900_0002

    let configuration: PostgresStoreConfiguration
    /// This process's id in change notifications: the pool's connections carry it as the setting `ferry.origin`, which
    /// the change triggers put in each notification (`ClusterChangeTriggers`), so a controller knows its own.
    let origin: String
    /// The settings of one connection (the notification listener and the leader election hold their own).
    let connectionConfiguration: PostgresConnection.Configuration
    let client: PostgresClient
    /// The pool with a bound on waiting for a connection.
    let pool: PostgresPool
    private let running: Task<Void, Never>
    private let writeLock = AsyncLock()
    /// What to do after a COMMIT whose outcome is unknown (`whenACommitIsUncertain`).
    private let uncertainCommit = Mutex<(@Sendable () -> Void)?>(nil)
    let readDB: any SQLDatabase
    private let logger: Logger
    /// How long `close()` waits for the pool to stop. Default 10 s.
    static let closeTimeout: Duration = .seconds(10)

    var dialect: StoreDialect { .postgres }
    var location: String { configuration.redacted }

    private init(
        configuration: PostgresStoreConfiguration,
        origin: String,
        connectionConfiguration: PostgresConnection.Configuration,
        client: PostgresClient,
        running: Task<Void, Never>,
        logger: Logger
    ) {
        self.configuration = configuration
        self.origin = origin
        self.connectionConfiguration = connectionConfiguration
        self.client = client
        self.running = running
        self.pool = PostgresPool(
            client: client,
            leaseTimeout: configuration.connectTimeout,
            location: configuration.redacted,
            statementDeadline: configuration.statementDeadline
        )
        self.readDB = PostgresPoolDatabase(pool: pool, logger: logger)
        self.logger = logger
    }

    /// Connects, applies pending migrations (one controller at a time), and starts the pool.
    /// - Throws: `StoreError.cannotOpen` (unreachable, refused login, TLS failure: the reason names it),
    ///   `StoreError.schemaTooNew`.
    static func open(_ configuration: PostgresStoreConfiguration, logger: Logger) async throws -> PostgresStoreBackend {
        let location = configuration.redacted
        let origin = ClusterChangeFeed.makeOrigin()
        let connectionConfiguration: PostgresConnection.Configuration
        let clientConfiguration: PostgresClient.Configuration
        do {
            (connectionConfiguration, clientConfiguration) = try makeConfigurations(configuration, origin: origin)
        } catch {
            throw StoreError.cannotOpen(path: location, reason: "TLS set-up: \(error)")
        }
        // A direct connection first: an unreachable server or a refused login fails here at once with its reason,
        // where a pool would retry in the background.
        let connection: PostgresConnection
        do {
            connection = try await PostgresConnection.connect(
                on: PostgresConnection.defaultEventLoopGroup.any(),
                configuration: connectionConfiguration,
                id: 0,
                logger: logger
            ).get()
        } catch {
            throw StoreError.cannotOpen(path: location, reason: PostgresErrorText.describe(error))
        }
        do {
            let db = connection.sql(queryLogLevel: nil)
            // No statement timeout for migrations: a full-table update of a large history, or an ALTER waiting for the
            // transactions of controllers still running the older version, may take longer than a request may. Cut
            // short it would roll back, and every restart would try and fail again: the controller could not start.
            try await db.raw("SET statement_timeout = 0").run()
            try await withSessionLock(migrationLockKey, on: db, logger: logger) {
                try await SchemaMigrator.migrate(
                    db,
                    dialect: .postgres,
                    location: location,
                    logger: logger,
                    upgrades: configuration.upgradesSchema
                )
            }
            try? await connection.close()
        } catch {
            try? await connection.close()
            if let error = error as? StoreError { throw error }
            throw StoreError.cannotOpen(path: location, reason: PostgresErrorText.describe(error))
        }
        let client = PostgresClient(configuration: clientConfiguration, backgroundLogger: logger)
        // The pool's background work runs for the store's life and stops in `close()`: the store is opened before any
        // service group (the token commands use it without one).
        let running = Task { await client.run() }
        return PostgresStoreBackend(
            configuration: configuration,
            origin: origin,
            connectionConfiguration: connectionConfiguration,
            client: client,
            running: running,
            logger: logger
        )
    }

    /// Holds the session-level advisory lock `key` around `body`, polling for it (so no statement waits past the
    /// statement timeout while another controller migrates).
    static func withSessionLock<T>(_ key: Int64, on db: any SQLDatabase, logger: Logger, _ body: () async throws -> T) async throws -> T {
        var waited = false
        while true {
            let row = try await db.raw("SELECT pg_try_advisory_lock(\(bind: key)) AS taken").first()
            if try row?.decode(column: "taken", as: Bool.self) == true { break }
            if !waited {
                logger.info("Waiting for another controller to finish migrating the database")
                waited = true
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        do {
            let result = try await body()
            _ = try await db.raw("SELECT pg_advisory_unlock(\(bind: key)) AS released").first()
            return result
        } catch {
            _ = try? await db.raw("SELECT pg_advisory_unlock(\(bind: key)) AS released").first()
            throw error
        }
    }

    func transaction<T: Sendable>(exclusive: Bool, _ body: (any SQLDatabase) async throws -> T) async throws -> T {
        if exclusive {
            return try await writeLock.withLock { try await run(locking: true, body) }
        }
        return try await run(locking: false, body)
    }

    /// Sets what to do after the COMMIT of a write under the write lock (a publish, an approval, a rollout's transition,
    /// an enrolment or removal, a token's revocation: what caches follow) was sent and failed: its answer may never have
    /// come (the connection dropped, the statement's deadline passed) while the server committed. The caller sees an
    /// error and updates none of this controller's caches, and the change triggers' notifications name this controller
    /// and are ignored when they come back, so without it this controller would serve what the database no longer says:
    /// a publish or a rollout's next wave never reaching the agents polling it (the other controllers are told by the
    /// triggers). The application resynchronizes (`UncertainCommitResync`). Status reports' writes, the most frequent,
    /// change no cached state and are not reported.
    func whenACommitIsUncertain(_ action: @escaping @Sendable () -> Void) {
        uncertainCommit.withLock { $0 = action }
    }

    private func run<T: Sendable>(locking: Bool, _ body: (any SQLDatabase) async throws -> T) async throws -> T {
        try await pool.retryingClosedConnection { connection in
            let db = pool.database(on: connection)
            // A connection closed before anything was sent (see `retryingClosedConnection`) fails here.
            try await StaleConnection.check { try await db.raw("BEGIN").run() }
            do {
                if locking { try await db.raw("SELECT pg_advisory_xact_lock(\(bind: Self.writeLockKey))").run() }
                let result = try await body(db)
                do {
                    try await db.raw("COMMIT").run()
                } catch {
                    // A connection closed before the COMMIT was sent (`StaleConnection`, from the statement deadline's
                    // wrapper) committed nothing.
                    if locking, !(error is StaleConnection) {
                        logger.warning(
                            "A transaction's COMMIT failed, and it may have committed all the same: resynchronizing this controller",
                            metadata: ["error.message": "\(error)"]
                        )
                        uncertainCommit.withLock { $0 }?()
                    }
                    throw error
                }
                return result
            } catch {
                try? await db.raw("ROLLBACK").run()
                throw error
            }
        }
    }

    /// Stops the pool, waiting at most `closeTimeout`: a pool that does not stop (a lease never given back: a query on a
    /// connection whose server went away may never end) must not keep the controller from shutting down. It is then
    /// left to the process's exit.
    func close() async throws {
        running.cancel()
        let running = running
        let stopped = await FirstOf.run(
            {
                await running.value
                return true
            },
            or: {
                try? await Task.sleep(for: Self.closeTimeout)
                return false
            }
        )
        if !stopped {
            logger.warning(
                "The PostgreSQL pool did not stop in time; closing anyway",
                metadata: ["store.location": "\(configuration.redacted)", "ferry.waited": "\(Self.closeTimeout)"]
            )
        }
    }

    /// Opens a connection of its own (not from the pool), with `parameters` added to its start-up settings (replacing
    /// any of the same name, such as `application_name`).
    func connect(id: Int, logger: Logger, parameters: [(String, String)] = []) async throws -> PostgresConnection {
        var settings = connectionConfiguration
        let replaced = Set(parameters.map(\.0))
        settings.options.additionalStartupParameters.removeAll { replaced.contains($0.0) }
        settings.options.additionalStartupParameters += parameters
        return try await PostgresConnection.connect(
            on: PostgresConnection.defaultEventLoopGroup.any(),
            configuration: settings,
            id: id,
            logger: logger
        ).get()
    }

    /// The connection settings of the first connection and of the pool, from one configuration, naming `origin`.
    static func makeConfigurations(
        _ configuration: PostgresStoreConfiguration,
        origin: String
    ) throws -> (PostgresConnection.Configuration, PostgresClient.Configuration) {
        let parameters =
            [
                ("ferry.origin", origin),
                ("statement_timeout", "\(configuration.statementTimeout.components.seconds * 1000)"),
                ("application_name", "ferry-controller"),
                // No JIT compilation: the controller's queries are short, and the planner's cost of a fleet view over
                // 10,000 agents is above `jit_above_cost`, so every view compiled its expressions first (20–30 ms per query);
                // while the tables had no statistics yet (the first minute after a fleet enrolled) the estimates also passed
                // the inlining and optimizing thresholds and a single page took 0.5 s to compile (docs/benchmarks.md).
                ("jit", "off"),
            ] + PostgresLeaderElection.keepaliveParameters
        // The server's keepalives and TCP user timeout, as on the election's connection: a controller whose host freezes
        // or drops off the network inside a write transaction held the cluster's write lock (and, while migrating, the
        // migration lock) until the server's default keepalive noticed, about two hours later, and every other
        // controller's writes waited for it. Now the server ends such a session within about 15 s.
        var connection = PostgresConnection.Configuration(
            host: configuration.host,
            port: configuration.port,
            username: configuration.user,
            password: configuration.password,
            database: configuration.database,
            tls: .disable
        )
        var client = PostgresClient.Configuration(
            host: configuration.host,
            port: configuration.port,
            username: configuration.user,
            password: configuration.password,
            database: configuration.database,
            tls: .disable
        )
        if let tls = try tlsConfiguration(configuration) {
            let context = try NIOSSLContext(configuration: tls)
            switch configuration.tls {
            case .disable: break
            case .prefer:
                connection.tls = .prefer(context)
                client.tls = .prefer(tls)
            case .require, .verifyCA, .verifyFull:
                connection.tls = .require(context)
                client.tls = .require(tls)
            }
        }
        connection.options.additionalStartupParameters = parameters
        connection.options.connectTimeout = .seconds(configuration.connectTimeout.components.seconds)
        client.options.additionalStartupParameters = parameters
        client.options.connectTimeout = configuration.connectTimeout
        client.options.maximumConnections = configuration.poolSize
        // postgres-nio's pool starts two timers (`Task.sleep`) each time a connection goes back idle, a keep-alive
        // query's (30 s) and the idle close's (60 s), and cancels them at the next lease. A cancelled sleep keeps its
        // memory until its deadline (swiftlang/swift#60441), so a burst of queries (10,000 enrolments: about 15 leases
        // each) held 60 MB for a minute and left the heap fragmented. No keep-alive query, and idle connections closed
        // after 20 s instead, which also drops a connection that died silently while idle (what the keep-alive found).
        // docs/benchmarks.md, "Where PostgreSQL's extra memory went".
        client.options.keepAliveBehavior = nil
        client.options.connectionIdleTimeout = .seconds(20)
        return (connection, client)
    }

    private static func tlsConfiguration(_ configuration: PostgresStoreConfiguration) throws -> TLSConfiguration? {
        var tls = TLSConfiguration.makeClientConfiguration()
        switch configuration.tls {
        case .disable: return nil
        case .prefer, .require: tls.certificateVerification = .none
        case .verifyCA: tls.certificateVerification = .noHostnameVerification
        case .verifyFull: tls.certificateVerification = .fullVerification
        }
        if let caFile = configuration.caFile {
            tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(caFile))
        }
        return tls
    }
}

/// postgres-nio's pool with a bound on waiting for a connection: on its own, a lease waits while the pool retries an
/// unreachable server, forever (vapor/postgres-nio#489), and so would every request during a database failover. Past
/// `leaseTimeout` (the connect timeout) the caller gets `StoreError.unavailable`, which the API answers with 503.
struct PostgresPool: Sendable {
    let client: PostgresClient
    let leaseTimeout: Duration
    /// The database as errors name it (no password).
    let location: String
    /// How long one statement may go unanswered before its connection is closed (`database(on:)`); `nil`: no bound.
    var statementDeadline: Duration? = nil

    /// Runs `body` on a leased connection, and once more on another when it fails with `StaleConnection`: the pool
    /// handed out a connection that was closed (one a statement deadline closed as it went back to the pool, before the
    /// pool saw it close), found so before a statement was sent. Statements `body` sent before it, on that connection,
    /// belonged to a transaction the server rolled back when the connection closed; `body` is a store transaction or
    /// one read, which touch nothing but the database, so running it again is safe.
    func retryingClosedConnection<T>(_ body: (PostgresConnection) async throws -> T) async throws -> T {
        do {
            return try await withConnection { connection in try await body(connection) }
        } catch is StaleConnection {
            do {
                return try await withConnection { connection in try await body(connection) }
            } catch is StaleConnection {
                // Two closed connections in a row: the database is going away.
                throw StoreError.unavailable(location: location, waited: leaseTimeout)
            }
        }
    }

    /// `connection` as SQLKit uses it, each statement bounded by `statementDeadline`.
    func database(on connection: PostgresConnection) -> any SQLDatabase {
        let db = connection.sql(queryLogLevel: nil)
        guard let statementDeadline else { return db }
        return DeadlineSQLDatabase(base: db, connection: connection, deadline: statementDeadline, location: location)
    }

    /// Runs `body` on a leased connection, returned to the pool when `body` ends.
    /// - Throws: `StoreError.unavailable` when no connection is leased within `leaseTimeout`; what `body` throws.
    func withConnection<T>(_ body: (PostgresConnection) async throws -> T) async throws -> T {
        // The lease is held by a task of its own (the pool's API lends a connection to a closure only) and handed over
        // here; that task keeps it until `body` is done, so nothing else can use the connection meanwhile. Not a child
        // task: a lease the pool cannot give may not end when cancelled (a new connection to a server that accepted the
        // TCP connection and then went silent waits for its start-up answer), and a task group waits for its children,
        // so the caller waited on it past `leaseTimeout`, holding the write lock. Left alone, it ends when the pool
        // gives up, and a connection it gets too late goes straight back.
        let (leases, lender) = AsyncStream.makeStream(of: PostgresConnection.self)
        let returned = LeaseReturn()
        let client = client
        let lease = Task {
            do {
                try await client.withConnection { connection in
                    // Too late (the caller stopped waiting): the connection goes straight back.
                    guard case .enqueued = lender.yield(connection) else { return }
                    lender.finish()
                    await returned.wait()
                }
            } catch {
                lender.finish()
            }
        }
        // The bound is a NIO timer, cancelled once the lease is handed over, not a sleeping task: a cancelled
        // `Task.sleep` keeps its memory (a few hundred bytes) until its deadline would have come (swiftlang/swift#60441),
        // and every lease cancelled one, so a burst of queries held its last ten seconds of leases' timers.
        let timer = PostgresClient.defaultEventLoopGroup.any().scheduleTask(in: TimeAmount(leaseTimeout)) { lender.finish() }
        var iterator = leases.makeAsyncIterator()
        let leased = await withTaskCancellationHandler {
            await iterator.next()
        } onCancel: {
            lender.finish()
        }
        timer.cancel()
        guard let connection = leased else {
            lease.cancel()
            try Task.checkCancellation()
            throw StoreError.unavailable(location: location, waited: leaseTimeout)
        }
        // The lease task waits for `returned`, which cancellation does not end.
        defer { returned.signal() }
        return try await body(connection)
    }
}

/// When the caller is done with a leased connection (`signal`), the task holding the lease (`wait`) gives it back.
private final class LeaseReturn: Sendable {
    private enum State {
        case holding
        case waiting(CheckedContinuation<Void, Never>)
        case returned
    }

    private let state = Mutex(State.holding)

    func wait() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let resumeNow = state.withLock { state -> Bool in
                if case .returned = state { return true }
                state = .waiting(continuation)
                return false
            }
            if resumeNow { continuation.resume() }
        }
    }

    func signal() {
        let waiting = state.withLock { state -> CheckedContinuation<Void, Never>? in
            defer { state = .returned }
            if case .waiting(let continuation) = state { return continuation }
            return nil
        }
        waiting?.resume()
    }
}

/// Reads through the pool: each query on a connection leased for it (the store's `readDB` on PostgreSQL).
struct PostgresPoolDatabase: SQLDatabase {
    let pool: PostgresPool
    let logger: Logger

    var eventLoop: any EventLoop { PostgresClient.defaultEventLoopGroup.any() }
    var dialect: any SQLDialect { PostgresDialect() }
    var queryLogLevel: Logger.Level? { nil }

    func execute(sql query: any SQLExpression, _ onRow: @escaping @Sendable (any SQLRow) -> Void) -> EventLoopFuture<Void> {
        eventLoop.makeFutureWithTask { try await self.execute(sql: query, onRow) }
    }

    func execute(sql query: any SQLExpression, _ onRow: @escaping @Sendable (any SQLRow) -> Void) async throws {
        // One statement, a read: nothing was sent on a stale connection, and a read may be tried again anyway.
        try await pool.retryingClosedConnection { connection in
            try await StaleConnection.check { try await pool.database(on: connection).execute(sql: query, onRow) }
        }
    }
}

/// The connection was closed by this client before the statement was sent: what the pool handed out was already gone.
struct StaleConnection: Error {
    /// Runs `statement`, the first on a leased connection, turning its failure on a connection this client closed into
    /// `StaleConnection`. (This client closes a connection in use only past a statement's deadline, which fails with
    /// `StoreError.unresponsive` instead.)
    static func check<T>(_ statement: () async throws -> T) async throws -> T {
        do {
            return try await statement()
        } catch let error as PSQLError where error.code == .clientClosedConnection {
            throw StaleConnection()
        }
    }
}

/// A connection's statements with a client-side deadline. The server cancels a statement at its `statement_timeout`, but
/// only a server that answers can: when the database host or the network to it goes silent (a dropped route, a frozen
/// VM, a proxy whose backend vanished), TCP keeps the query waiting for its retransmissions, a quarter of an hour, and a
/// write transaction holds the controller's write lock all that time, so every publish, enrolment and rollout action
/// queues behind it. Past the deadline the connection is closed: the statement fails with
/// `StoreError.unresponsive`, the transaction ends, the lock is released and the pool opens a new connection.
struct DeadlineSQLDatabase: SQLDatabase {
    let base: any SQLDatabase
    let connection: PostgresConnection
    let deadline: Duration
    let location: String

    var logger: Logger { base.logger }
    var eventLoop: any EventLoop { base.eventLoop }
    var version: (any SQLDatabaseReportedVersion)? { base.version }
    var dialect: any SQLDialect { base.dialect }
    var queryLogLevel: Logger.Level? { base.queryLogLevel }

    func execute(sql query: any SQLExpression, _ onRow: @escaping @Sendable (any SQLRow) -> Void) -> EventLoopFuture<Void> {
        eventLoop.makeFutureWithTask { try await self.execute(sql: query, onRow) }
    }

    func execute(sql query: any SQLExpression, _ onRow: @escaping @Sendable (any SQLRow) -> Void) async throws {
        // A connection already closed (by a deadline, as it went back to the pool) takes no statement: one written to
        // it is never answered, and never failed either (its channel is gone). Nothing was sent: another connection
        // may be tried (`PostgresPool.retryingClosedConnection`).
        guard !connection.isClosed else { throw StaleConnection() }
        let base = base
        // SQLKit's expressions are not `Sendable`; this one is only read, by the statement's task.
        nonisolated(unsafe) let query = query
        do {
            // Not waiting for the statement past its deadline: on a channel closed under it, it may never end. Nor
            // ending the wait at a cancellation (as before this deadline existed): postgres-nio sends a statement
            // whatever its task's cancellation, and a caller resumed early would send its `ROLLBACK` while the
            // statement is still queued behind it; a write could then run after the `ROLLBACK`, outside any transaction.
            try await Unawaited.result(of: "a statement", within: deadline, endsOnCancellation: false) {
                try await base.execute(sql: query, onRow)
            }
        } catch is Unawaited.TimedOut {
            // Closed before the caller goes on (its `ROLLBACK`, the pool): nothing more runs on this session.
            connection.close().whenComplete { _ in }
            throw StoreError.unresponsive(location: location, waited: deadline)
        }
    }
}

/// What a PostgreSQL error says, for an operator: the server's message and SQLSTATE, or the connection failure.
/// (postgres-nio's own description is deliberately generic.) Never includes the query's bound values.
enum PostgresErrorText {
    static func describe(_ error: any Error) -> String {
        guard let error = error as? PSQLError else { return "\(error)" }
        if let info = error.serverInfo, let message = info[.message] {
            var text = message
            if let state = info[.sqlState] { text += " (SQLSTATE \(state))" }
            if let detail = info[.detail] { text += ": \(detail)" }
            return text
        }
        if let underlying = error.underlying { return "\(error.code): \(underlying)" }
        return "\(error.code)"
    }
}

/// The result of whichever of two operations ends first. The other is left running, not awaited: for waits that
/// cancellation cannot end (`Task.value`).
enum FirstOf {
    static func run<T: Sendable>(_ first: @escaping @Sendable () async -> T, or second: @escaping @Sendable () async -> T) async -> T {
        let winner = Winner<T>()
        return await withCheckedContinuation { continuation in
            winner.set(continuation)
            for operation in [first, second] {
                Task { winner.resume(returning: await operation()) }
            }
        }
    }

    /// The continuation, resumed once: by the first operation to end.
    private final class Winner<T: Sendable>: Sendable {
        private let continuation = Mutex<CheckedContinuation<T, Never>?>(nil)

        func set(_ continuation: CheckedContinuation<T, Never>) {
            self.continuation.withLock { $0 = continuation }
        }

        func resume(returning value: T) {
            continuation.withLock { $0.take() }?.resume(returning: value)
        }
    }
}
