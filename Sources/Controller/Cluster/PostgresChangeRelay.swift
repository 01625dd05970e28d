import Logging
import PostgresKit
import PostgresNIO
import SQLKit
import ServiceLifecycle
import Synchronization

/// Carries committed changes between controllers sharing a PostgreSQL database, with `LISTEN`/`NOTIFY` on the channel
/// `ferry_changes`: the transactions that commit changes announce them (`ClusterChangeTriggers`), as does this
/// controller for what is no commit of its own (`ClusterChangeFeed`); the others' notifications come in and are applied
/// (cached desired states and principals dropped, parked long-polls woken).
///
/// The listener holds one connection of its own. When it drops, notifications sent meanwhile are lost, so every
/// reconnection starts with a resync (every cache forgotten, every parked agent woken to re-read its state).
struct PostgresChangeRelay: Service {
    /// The notification channel.
    static let channel = "ferry_changes"

    let backend: PostgresStoreBackend
    let feed: ClusterChangeFeed
    /// Applies another controller's change here.
    let apply: @Sendable (ClusterChange) async -> Void
    let logger: Logger
    /// Told when the listener starts hearing the others' changes (after its resync) and when it stops: while it does not,
    /// this controller may miss another's token revocation, so its authentication cache must not be used
    /// (`TokenRevocations.othersUnheard`).
    var onListening: @Sendable (Bool) -> Void = { _ in }
    /// Whether a notification this controller's own commit sent is applied all the same. A revocation always is: it
    /// costs a cache's refill, and a revocation whose COMMIT answer was lost (the API answered an error, so nothing
    /// dropped the cache) would otherwise keep the token working here for good. The application adds every change
    /// while a commit was uncertain (`UncertainCommitResync.appliesOwnChanges`).
    var appliesOwn: @Sendable (ClusterChange) -> Bool = { $0 == .tokenRevoked }
    /// Wait before reconnecting the listener. Default 1 s.
    var reconnectDelay: Duration = .seconds(1)
    /// While the listener has not listened for this long, and the database answers, this controller resynchronizes
    /// every time this passes again (`unheardResync`). Default 30 s.
    var unheardResyncInterval: Duration = .seconds(30)
    /// A listener connection not made within this is given up and tried again; an announcement not sent within it is
    /// tried again. Default 10 s.
    var connectTimeout: Duration = .seconds(10)
    /// How often the listener's connection is checked. Default 5 s.
    var checkInterval: Duration = .seconds(5)
    /// A check not answered within this drops the listener's connection (it is made again). Default 4 s.
    var checkTimeout: Duration = .seconds(4)
    /// The listener's connection: named in `pg_stat_activity`, with the server-side detection of a vanished client
    /// that the leader election uses.
    static let connectionParameters = [("application_name", "ferry-controller change listener")] + PostgresLeaderElection.keepaliveParameters

    /// Whether the listener is connected and listening (for tests and `/healthz` details).
    let listening = ListeningFlag()

    /// Whether the listener listens, set by the connection attempt that does. An attempt that ended (its connection
    /// dropped or stopped answering its check) cannot set it again: its listen runs in a task of its own that is not
    /// awaited past a cancellation (`Unawaited`), and one still in its resync when the attempt gave up said "listening"
    /// after the attempt had said it stopped, with nothing listening — the authentication cache trusted meanwhile.
    final class ListeningFlag: Sendable {
        private let state = Mutex<(listening: Bool, attempt: UInt64)>((false, 0))
        var isListening: Bool { state.withLock { $0.listening } }

        /// A new connection attempt: earlier ones can no longer say they listen.
        func begin() -> UInt64 {
            state.withLock { state in
                state.attempt &+= 1
                return state.attempt
            }
        }

        /// `attempt` listens; `tell` runs under the flag's lock (so a later `end` is told after it), unless the
        /// attempt already ended. `tell` must not use the flag (its lock is not reentrant).
        func listen(attempt: UInt64, tell: () -> Void) {
            state.withLock { state in
                guard state.attempt == attempt, !state.listening else { return }
                state.listening = true
                tell()
            }
        }

        /// Nothing listens, whichever attempt ended; `tell` runs under the flag's lock and must not use the flag.
        func end(tell: () -> Void) {
            state.withLock { state in
                state.attempt &+= 1
                state.listening = false
                tell()
            }
        }
    }

    func run() async throws {
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await listen() }
                group.addTask { await send() }
                group.addTask { await unheardResync() }
                await group.next()
                group.cancelAll()
            }
        }
        feed.finish()
        logger.debug("Change relay stopped")
    }

    private func listen() async {
        // The first listen resynchronizes too: this controller serves requests (and caches states and principals) from
        // its start, before its listen is acknowledged, and what the others commit meanwhile is announced to nobody.
        var reconnecting = false
        while !Task.isCancelled {
            do {
                try await listenOnce(reconnecting: reconnecting)
            } catch {
                if Task.isCancelled { break }
                logger.warning(
                    "Listening for other controllers' changes failed; retrying",
                    metadata: ["error.message": "\(PostgresErrorText.describe(error))"]
                )
            }
            reconnecting = true
            try? await Task.sleep(for: reconnectDelay)
        }
        listening.end { onListening(false) }
    }

    /// Connects (within `connectTimeout`), listens and applies notifications until the connection ends or stops
    /// answering its check; starts with a resync (notifications were missed while it was down, or before it first
    /// listened).
    ///
    /// A listener hears nothing on a connection that died without a word (a database failover that leaves the old
    /// address silent, a listen whose server went away mid-start): it would wait for ever while this controller's
    /// agents miss every change made through the others. So the connection answers `SELECT 1` every `checkInterval`
    /// within `checkTimeout`, as the leader's does, or is dropped and made again (with a resync).
    ///
    /// Nothing here is awaited past a cancellation (`Unawaited`): PostgresNIO's connect, and a listen on a connection
    /// whose server went away, may not end when cancelled, and the controller's shutdown would hang on them.
    private func listenOnce(reconnecting: Bool) async throws {
        let connection = try await Unawaited.connect(
            "the change listener",
            to: backend,
            id: 1,
            parameters: Self.connectionParameters,
            within: connectTimeout,
            logger: logger
        )
        let attempt = listening.begin()
        defer {
            listening.end { onListening(false) }
            Unawaited.close(connection)
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                try await Unawaited.result(of: "the change listener", within: nil) {
                    try await consume(on: connection, reconnecting: reconnecting, attempt: attempt)
                }
            }
            group.addTask {
                try await Unawaited.keepChecking(connection, of: "the change listener", every: checkInterval, within: checkTimeout)
            }
            // The first to end (the listen's connection closed, a check failed) ends both.
            defer { group.cancelAll() }
            try await group.next()
        }
    }

    /// Listens on `connection` and applies what arrives until the notifications end.
    private func consume(on connection: PostgresConnection, reconnecting: Bool, attempt: UInt64) async throws {
        try await connection.listen(on: Self.channel) { notifications in
            if reconnecting { logger.info("Listening for other controllers' changes again; resynchronizing") }
            await apply(.resync)
            listening.listen(attempt: attempt) { onListening(true) }
            for try await notification in notifications {
                guard let (origin, change) = ClusterChange.parse(notification.payload) else {
                    await apply(.resync)
                    continue
                }
                if origin != feed.origin || appliesOwn(change) { await apply(change) }
            }
        }
    }

    /// Resynchronizes this controller every `unheardResyncInterval` while its listener cannot listen and the database
    /// answers (a connection limit reached, a `pg_hba` rule that refuses the listener's new connection while the pool
    /// keeps its own). Only tokens stopped being served from a cache meanwhile: cached desired states and agent rows
    /// were served for as long as it lasted — a publish or an abort through another controller never reached the
    /// agents polling this one (their ETags answered 304), and an agent re-enrolled there for fewer services still got
    /// the releases of the others here. Not while the database does not answer either: agents then keep what they have
    /// (parked, or served from the cache) rather than being woken into errors.
    private func unheardResync() async {
        var unheardSince: ContinuousClock.Instant?
        while !Task.isCancelled {
            try? await Task.sleep(for: unheardResyncInterval)
            if Task.isCancelled { return }
            guard !listening.isListening else {
                unheardSince = nil
                continue
            }
            let since = unheardSince ?? .now
            unheardSince = since
            guard ContinuousClock.now - since >= unheardResyncInterval else { continue }
            let backend = self.backend
            let answered: Bool
            do {
                try await Unawaited.result(of: "the database check before a resync", within: checkTimeout) {
                    try await backend.readDB.raw("SELECT 1").run()
                }
                answered = true
            } catch {
                answered = false
            }
            guard answered, !listening.isListening else { continue }
            logger.warning("Not hearing the other controllers' changes: resynchronizing (every cache dropped, parked agents woken)")
            await apply(.resync)
        }
    }

    private func send() async {
        guard let changes = feed.changes else { return }
        let backend = self.backend
        let connectTimeout = self.connectTimeout
        await Self.announce(changes, feed: feed, logger: logger) { payload in
            // Bounded and not awaited past it, like the listener: a shutdown must not wait on a query of a connection
            // whose server went away.
            try await Unawaited.result(of: "announcing a change", within: connectTimeout) {
                try await backend.readDB.raw("SELECT pg_notify(\(bind: Self.channel), \(bind: payload))").run()
            }
        }
    }

    /// Sends each change of `changes` with `send` (`pg_notify`), three tries each, `retryDelay` apart. A change given up
    /// on is made up for by a resync (every other controller forgets its caches), tried every `resyncInterval` until it
    /// goes out. It used to wait for the next change to go out in its place, which may not come for hours: meanwhile
    /// the other controllers served agents a desired state older than what they ran.
    static func announce(
        _ changes: AsyncStream<ClusterChange>,
        feed: ClusterChangeFeed,
        logger: Logger,
        retryDelay: Duration = .milliseconds(200),
        resyncInterval: Duration = .seconds(1),
        send: @Sendable (String) async throws -> Void
    ) async {
        for await change in changes {
            let payload = (feed.takeDropped() ? ClusterChange.resync : change).payload(origin: feed.origin)
            var sent = false
            for attempt in 1...3 where !sent {
                do {
                    try await send(payload)
                    sent = true
                } catch {
                    if Task.isCancelled { return }
                    logger.warning(
                        "Announcing a change to the other controllers failed",
                        metadata: ["error.message": "\(PostgresErrorText.describe(error))", "ferry.attempt": "\(attempt)"]
                    )
                    if attempt < 3 { try? await Task.sleep(for: retryDelay) }
                }
            }
            guard !sent else { continue }
            // Not announced: a resync goes out instead, tried until it does (it covers whatever the feed dropped meanwhile).
            var resyncPending = true
            while resyncPending, !Task.isCancelled {
                try? await Task.sleep(for: resyncInterval)
                _ = feed.takeDropped()
                do {
                    try await send(ClusterChange.resync.payload(origin: feed.origin))
                    resyncPending = false
                    logger.info("Asked the other controllers to resynchronize after a change that could not be announced")
                } catch {
                    if Task.isCancelled { return }
                }
            }
        }
    }
}
