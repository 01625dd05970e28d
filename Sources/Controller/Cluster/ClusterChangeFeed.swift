import Foundation
import Synchronization

/// Where this controller announces its committed changes for the others on the same database (`PostgresChangeRelay`
/// sends them). With one controller (SQLite) nobody listens: `announce` does nothing.
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
    static func disabled() -> ClusterChangeFeed { ClusterChangeFeed(enabled: false) }

    /// A feed a relay reads.
    static func enabled() -> ClusterChangeFeed { ClusterChangeFeed(enabled: true) }

    private init(enabled: Bool) {
        origin = "c" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(12).lowercased()
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

    /// Whether changes were dropped since the last call (the relay then asks everyone to resync).
    func takeDropped() -> Bool { dropped.exchange(false, ordering: .relaxed) }

    /// Ends the stream (shutdown).
    func finish() { continuation?.finish() }
}
