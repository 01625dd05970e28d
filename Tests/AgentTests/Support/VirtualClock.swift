import Synchronization

/// A clock whose time moves only when someone sleeps on it: `sleep(until:)` jumps straight to the deadline.
///
/// Logic that polls on an interval (the health gate) then runs deterministically and instantly, whatever the load of
/// the machine: durations measured with this clock are exact.
final class VirtualClock: Clock, Sendable {
    struct Instant: InstantProtocol {
        var offset: Duration
        func advanced(by duration: Duration) -> Instant { Instant(offset: offset + duration) }
        func duration(to other: Instant) -> Duration { other.offset - offset }
        static func < (lhs: Instant, rhs: Instant) -> Bool { lhs.offset < rhs.offset }
    }

    private let time = Mutex(Duration.zero)

    var now: Instant { Instant(offset: time.withLock { $0 }) }
    var minimumResolution: Duration { .zero }

    func sleep(until deadline: Instant, tolerance: Duration? = nil) async throws {
        try Task.checkCancellation()
        time.withLock { if $0 < deadline.offset { $0 = deadline.offset } }
        await Task.yield()
        try Task.checkCancellation()
    }
}
