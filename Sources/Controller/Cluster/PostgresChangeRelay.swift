import Logging
import PostgresKit
import PostgresNIO
import SQLKit
import ServiceLifecycle
import Synchronization

/// Carries committed changes between controllers sharing a PostgreSQL database, with `LISTEN`/`NOTIFY` on the channel
/// `ferry_changes`: this controller's announcements (`ClusterChangeFeed`) go out as notifications, and the others'
/// come in and are applied (cached desired states and principals dropped, parked long-polls woken).
///
/// The listener holds one connection of its own. When it drops, notifications sent meanwhile are lost, so every
/// reconnection starts with a resync (every cache forgotten, every parked agent woken to re-read its state). A change
/// whose controller dies between its commit and its NOTIFY reaches the other controllers' agents at their next poll.
struct PostgresChangeRelay: Service {
    /// The notification channel.
    static let channel = "ferry_changes"

    let backend: PostgresStoreBackend
    let feed: ClusterChangeFeed
    /// Applies another controller's change here.
    let apply: @Sendable (ClusterChange) async -> Void
    let logger: Logger
    /// Wait before reconnecting the listener. Default 1 s.
    var reconnectDelay: Duration = .seconds(1)
    /// Whether the listener is connected and listening (for tests and `/healthz` details).
    let listening = ListeningFlag()

    final class ListeningFlag: Sendable {
        private let value = Atomic<Bool>(false)
        var isListening: Bool { value.load(ordering: .acquiring) }
        fileprivate func set(_ listening: Bool) { value.store(listening, ordering: .releasing) }
    }

    func run() async throws {
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await listen() }
                group.addTask { await send() }
                await group.next()
                group.cancelAll()
            }
        }
        feed.finish()
        logger.debug("Change relay stopped")
    }

    private func listen() async {
        var missedSome = false
        while !Task.isCancelled {
            do {
                let connection = try await backend.connect(id: 1, logger: logger)
                do {
                    try await connection.listen(on: Self.channel) { notifications in
                        listening.set(true)
                        if missedSome {
                            logger.info("Listening for other controllers' changes again; resynchronizing")
                            await apply(.resync)
                        }
                        for try await notification in notifications {
                            guard let (origin, change) = ClusterChange.parse(notification.payload) else {
                                await apply(.resync)
                                continue
                            }
                            if origin != feed.origin { await apply(change) }
                        }
                    }
                } catch {
                    listening.set(false)
                    try? await connection.close()
                    throw error
                }
                listening.set(false)
                try? await connection.close()
            } catch {
                if Task.isCancelled { break }
                logger.warning(
                    "Listening for other controllers' changes failed; retrying",
                    metadata: ["error.message": "\(PostgresErrorText.describe(error))"]
                )
            }
            missedSome = true
            try? await Task.sleep(for: reconnectDelay)
        }
        listening.set(false)
    }

    /// Sends one change at once, outside any controller (`token revoke --database`).
    static func announce(_ change: ClusterChange, origin: String, on backend: PostgresStoreBackend) async throws {
        try await backend.readDB.raw("SELECT pg_notify(\(bind: channel), \(bind: change.payload(origin: origin)))").run()
    }

    private func send() async {
        guard let changes = feed.changes else { return }
        for await change in changes {
            let payload = (feed.takeDropped() ? ClusterChange.resync : change).payload(origin: feed.origin)
            for attempt in 1...3 {
                do {
                    try await backend.readDB.raw("SELECT pg_notify(\(bind: Self.channel), \(bind: payload))").run()
                    break
                } catch {
                    if Task.isCancelled { return }
                    logger.warning(
                        "Announcing a change to the other controllers failed",
                        metadata: ["error.message": "\(PostgresErrorText.describe(error))", "ferry.attempt": "\(attempt)"]
                    )
                    try? await Task.sleep(for: .milliseconds(200))
                }
            }
        }
    }
}
