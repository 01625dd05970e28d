import Foundation
import Synchronization

/// Where this controller announces changes that are no commit of its own for the others on the same database (a report
/// that makes a cached state out of date; `PostgresChangeRelay` sends them). Committed changes are announced by their
/// transactions (`ClusterChangeTriggers`). With one controller (SQLite) nobody listens: `announce` does nothing.
///
/// `announce` never waits: changes queue here (bounded: past `capacity` the oldest pending ones are dropped, and the
/// relay sends a "resync" instead, which makes every other controller forget its caches).
final class ClusterChangeFeed: Sendable {
    /// Pending changes kept at most before the relay falls back to a resync. 10 000.
    static let capacity = 10_000

    private let stream: AsyncStream<ClusterChange>?
    private let continuation: AsyncStream<ClusterChange>.Continuation?
    private let dropped = Atomic<Bool>(false)

    /// This controller's id in notifications (its own come back to it and are ignored).
    let origin: String

    /// A feed nobody reads: one controller.
    static func disabled() -> ClusterChangeFeed { ClusterChangeFeed() }

    /// A feed a relay reads, for the controller `origin` (`PostgresStoreBackend.origin`: its commits' notifications
    /// name it too).
    static func enabled(origin: String) -> ClusterChangeFeed { ClusterChangeFeed(origin: origin) }

    /// A controller id for notifications: `c` and 12 hex digits.
    static func makeOrigin() -> String {
        "c" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(12).lowercased()
    }

    private init(origin: String? = nil) {
        let enabled = origin != nil
        self.origin = origin ?? "none"
        if enabled {
            let (stream, continuation) = AsyncStream.makeStream(of: ClusterChange.self, bufferingPolicy: .bufferingNewest(Self.capacity))
            self.stream = stream
            self.continuation = continuation
        } else {
            stream = nil
            continuation = nil
        }
    }

    /// Whether a relay sends what is announced.
    var isEnabled: Bool { continuation != nil }

    /// Queues a committed change for the other controllers.
    func announce(_ change: ClusterChange) {
        guard let continuation else { return }
        if case .dropped = continuation.yield(change) { dropped.store(true, ordering: .relaxed) }
    }

    /// The queued changes, for the relay (one reader).
    var changes: AsyncStream<ClusterChange>? { stream }

    /// A change could not be sent: the next one goes out as a resync.
    func noteLost() { dropped.store(true, ordering: .relaxed) }

    /// Whether changes were dropped since the last call (the relay then asks everyone to resync).
    func takeDropped() -> Bool { dropped.exchange(false, ordering: .relaxed) }

    /// Ends the stream (shutdown).
    func finish() { continuation?.finish() }
}
