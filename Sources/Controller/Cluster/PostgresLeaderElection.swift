import Logging
import PostgresKit
import PostgresNIO
import SQLKit
import ServiceLifecycle

/// Elects the one controller that drives rollouts among those sharing a PostgreSQL database: the holder of the
/// session advisory lock `leaderLockKey`, on a connection of its own.
///
/// - A leader killed (kill -9, a crash): the kernel closes its connection, PostgreSQL releases the lock at once, and
///   another controller takes it at its next try (`retryInterval`, 1 s).
/// - A leader cut off from the database: its check (`SELECT 1` every `checkInterval`, answered within `checkTimeout`)
///   fails, so it stops driving within about 5 s; the server notices the dead connection through TCP keepalives and
///   user timeout (set on this connection: about 10 s) and frees the lock for another controller. Meanwhile nothing
///   advances twice: every rollout change is a compare-and-set in the store.
struct PostgresLeaderElection: Service {
    /// "ferry" in ASCII, then 3: see `PostgresStoreBackend`'s keys.
    static let leaderLockKey: Int64 = 0x6665_7272_7900_0003

    let backend: PostgresStoreBackend
    let leadership: RolloutLeadership
    let logger: Logger
    /// How often a follower tries to take the lock. Default 1 s.
    var retryInterval: Duration = .seconds(1)
    /// How often the leader checks its connection. Default 1 s.
    var checkInterval: Duration = .seconds(1)
    /// A check not answered within this ends the leadership. Default 4 s.
    var checkTimeout: Duration = .seconds(4)
    /// A connection not made within this is given up and tried again. Default 10 s.
    var connectTimeout: Duration = .seconds(10)
    /// Whether this controller may lead yet: it campaigns only once this holds. The controller passes "the database's
    /// clock has been read" (`ClusterClock.offset`): a leader on its host's clock until then stamped wave timers off
    /// by the host's skew, and they jumped by as much when the offset arrived (a wave advancing at once, or held back
    /// for hours). Default: always.
    var isReady: @Sendable () -> Bool = { true }
    /// How long it waits for `isReady` before it campaigns anyway, with a warning: a database whose every round trip
    /// is too slow for a clock sample must not leave rollouts without a leader. Default 60 s.
    var readyWait: Duration = Self.defaultReadyWait

    /// `readyWait`'s default, which the clock sync's eager first minute matches (`ClusterClockSync`).
    static let defaultReadyWait = Duration.seconds(60)

    /// The wait for `isReady`, from the election's start: across reconnects, each said once.
    private struct ReadyWait {
        let until: ContinuousClock.Instant
        var noted = false
        var gaveUp = false
    }

    /// Server-side detection of a vanished leader's connection.
    static let keepaliveParameters = [
        ("tcp_keepalives_idle", "5"), ("tcp_keepalives_interval", "2"), ("tcp_keepalives_count", "3"), ("tcp_user_timeout", "10000"),
    ]

    /// The election's connection: named in `pg_stat_activity`, with `keepaliveParameters`.
    static let connectionParameters = [("application_name", "ferry-controller leader election")] + keepaliveParameters

    func run() async throws {
        await cancelWhenGracefulShutdown {
            var readiness = ReadyWait(until: .now + readyWait)
            while !Task.isCancelled {
                do {
                    let connection = try await Unawaited.connect(
                        "the leader election",
                        to: backend,
                        id: 2,
                        parameters: Self.connectionParameters,
                        within: connectTimeout,
                        logger: logger
                    )
                    do {
                        try await campaign(on: connection, readiness: &readiness)
                    } catch {
                        step(down: "leader election connection failed", error: error)
                        Unawaited.close(connection)
                        throw error
                    }
                    Unawaited.close(connection)
                } catch {
                    if Task.isCancelled { break }
                    logger.warning(
                        "Leader election cannot reach the database; retrying",
                        metadata: ["error.message": "\(PostgresErrorText.describe(error))"]
                    )
                }
                try? await Task.sleep(for: retryInterval)
            }
        }
        if leadership.isLeader { step(down: "shutting down", error: nil) }
    }

    /// Tries for the lock until it is taken, then holds it while the connection answers. Every query is bounded by
    /// `checkTimeout` and never awaited past it (`Unawaited`): after a database restart a query on the old connection
    /// may never end.
    private func campaign(on connection: PostgresConnection, readiness: inout ReadyWait) async throws {
        let key = Self.leaderLockKey
        while !Task.isCancelled {
            if !readiness.gaveUp, !isReady() {
                if ContinuousClock.now < readiness.until {
                    if !readiness.noted { logger.info("Not campaigning for leadership until the database's clock is read") }
                    readiness.noted = true
                    try await Task.sleep(for: retryInterval)
                    continue
                }
                readiness.gaveUp = true
                logger.warning(
                    "The database's clock could not be read for \(readyWait.components.seconds) s: campaigning for leadership on this host's clock"
                )
            }
            let taken = try await Unawaited.result(of: "the leader lock query", within: checkTimeout) {
                let row = try await connection.sql(queryLogLevel: nil).raw("SELECT pg_try_advisory_lock(\(bind: key)) AS taken").first()
                return try row?.decode(column: "taken", as: Bool.self) == true
            }
            if taken { break }
            try await Task.sleep(for: retryInterval)
        }
        guard !Task.isCancelled else { return }
        leadership.gained()
        logger.info("This controller now drives rollouts (leader)")
        try await Unawaited.keepChecking(connection, of: "the leader", every: checkInterval, within: checkTimeout)
    }

    private func step(down reason: String, error: (any Error)?) {
        guard leadership.isLeader else { return }
        leadership.lost()
        var metadata: Logger.Metadata = ["ferry.reason": "\(reason)"]
        if let error { metadata["error.message"] = "\(PostgresErrorText.describe(error))" }
        logger.warning("This controller stopped driving rollouts", metadata: metadata)
    }
}
