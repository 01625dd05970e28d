import Foundation
import Logging
import SQLKit
import ServiceLifecycle
import Synchronization

/// The wall clock of controllers sharing a PostgreSQL database: this host's clock corrected by its measured offset from
/// the database server's clock.
///
/// One controller stamps a status report when it arrives and the elected one judges it fresh or stale against its own
/// clock: with each on its host's clock, a replica 2 minutes behind the leader stamped every report it received 2 minutes
/// in the past, the leader saw those agents as silent, and a rollout waiting for their waves stalled (a replica ahead kept
/// a dead agent fresh as long). On the database's clock every controller agrees to within a round trip.
///
/// Between samples the time is counted from the last one on the monotonic clock, not as this host's wall clock plus the
/// offset: a host whose clock was stepped (chrony's `makestep` on an instance that booted minutes off) moved "the
/// database's time" by the step until the next sample, up to 30 s later — reports stamped minutes ahead, tokens expiring
/// early, and on the leader every other controller's agents stale.
final class ClusterClock: Sendable {
    /// One sample: the database's clock read between `sent` and `received` on this host's clock; `receivedAt` is
    /// `received` on the monotonic clock.
    struct Sample: Sendable {
        var sent: Date
        var received: Date
        var database: Date
        var receivedAt: ContinuousClock.Instant = .now

        /// The database clock minus this host's, assuming the database read its clock halfway through the round trip.
        var offset: TimeInterval { database.timeIntervalSince(sent) - received.timeIntervalSince(sent) / 2 }
        var roundTrip: TimeInterval { received.timeIntervalSince(sent) }
    }

    /// A sample whose round trip took longer than this is dropped: the offset it gives is off by up to half of it.
    static let longestRoundTrip: TimeInterval = 1

    /// The last sample taken: its offset, and the database's time when it was received, on both clocks.
    private struct Anchor {
        var offset: TimeInterval
        var database: Date
        var at: ContinuousClock.Instant
    }

    private let base: @Sendable () -> Date
    private let monotonic: @Sendable () -> ContinuousClock.Instant
    private let state = Mutex<Anchor?>(nil)

    /// - Parameters:
    ///   - base: this host's wall clock.
    ///   - monotonic: the clock counted from a sample (tests step `base` without it).
    init(base: @escaping @Sendable () -> Date, monotonic: @escaping @Sendable () -> ContinuousClock.Instant = { .now }) {
        self.base = base
        self.monotonic = monotonic
    }

    /// Now, on the database's clock: the last sample's time plus the monotonic time since (this host's clock until the
    /// first sample).
    func now() -> Date {
        guard let anchor = state.withLock({ $0 }) else { return base() }
        let elapsed = (monotonic() - anchor.at).components
        return anchor.database.addingTimeInterval(Double(elapsed.seconds) + Double(elapsed.attoseconds) / 1e18)
    }

    /// The offset of the last sample (database minus this host), `nil` before the first sample.
    var offset: TimeInterval? { state.withLock { $0?.offset } }

    /// Reads this host's clock, unadjusted.
    func hostNow() -> Date { base() }

    /// Reads the monotonic clock (a sample's `receivedAt`).
    func monotonicNow() -> ContinuousClock.Instant { monotonic() }

    /// Takes `sample`; returns its offset, or `nil` when the round trip was too slow to trust.
    @discardableResult
    func adjust(to sample: Sample) -> TimeInterval? {
        guard sample.roundTrip >= 0, sample.roundTrip <= Self.longestRoundTrip else { return nil }
        let offset = sample.offset
        // The database read its clock halfway through the round trip: at `received` it read half a round trip later.
        let anchor = Anchor(offset: offset, database: sample.database.addingTimeInterval(sample.roundTrip / 2), at: sample.receivedAt)
        state.withLock { $0 = anchor }
        return offset
    }
}

/// Keeps a `ClusterClock` on the database's clock: reads it at start, then every `interval`.
struct ClusterClockSync: Service {
    let clock: ClusterClock
    let database: any SQLDatabase
    let logger: Logger
    /// How often the database's clock is read again. Default 30 s.
    var interval: Duration = .seconds(30)
    /// An offset at least this large is logged as a warning (and again whenever it changes by as much). Default 2 s.
    var warnAbove: TimeInterval = 2

    func run() async throws {
        await cancelWhenGracefulShutdown {
            var reported: TimeInterval = 0
            // Said once: a database that is always too slow would say it every second.
            var slowReported = false
            let started = ContinuousClock.now
            while !Task.isCancelled {
                do {
                    // The fastest of three: a query that waited for a pool connection (a busy controller) counts that
                    // wait as round trip, and the database read its clock after it, not halfway.
                    var fastest: ClusterClock.Sample?
                    for _ in 0..<3 {
                        let sample = try await Unawaited.result(of: "the database clock query", within: .seconds(5)) {
                            try await Self.sample(clock: clock, database: database)
                        }
                        if fastest.map({ sample.roundTrip < $0.roundTrip }) ?? true { fastest = sample }
                    }
                    let adjusted = fastest.flatMap { clock.adjust(to: $0) }
                    if adjusted == nil, clock.offset == nil, !slowReported, let fastest {
                        slowReported = true
                        logger.warning(
                            "The database's clock could not be read: every round trip took over \(ClusterClock.longestRoundTrip) s; trying again",
                            metadata: ["clock.round_trip_seconds": "\(String(format: "%.3f", fastest.roundTrip))"]
                        )
                    }
                    if let offset = adjusted, abs(offset) >= warnAbove || abs(reported) >= warnAbove, abs(offset - reported) >= warnAbove {
                        reported = offset
                        logger.warning(
                            "This host's clock is off the database server's; controllers use the database's clock",
                            metadata: ["clock.offset_seconds": "\(String(format: "%.3f", offset))"]
                        )
                    }
                } catch {
                    if Task.isCancelled { break }
                    logger.debug("Reading the database clock failed", metadata: ["error.message": "\(PostgresErrorText.describe(error))"])
                }
                // Until a first sample is taken (the database unreachable, a busy pool making every round trip too
                // slow), again within a second for the first minute: this controller does not lead rollouts before
                // (`PostgresLeaderElection.readyWait`, after which it leads anyway).
                let eager = clock.offset == nil && ContinuousClock.now - started < PostgresLeaderElection.defaultReadyWait
                try? await Task.sleep(for: eager ? min(interval, .seconds(1)) : interval)
            }
        }
    }

    /// Reads the database's clock (`clock_timestamp()`, not the transaction's `now()`), timed on this host's clock.
    static func sample(clock: ClusterClock, database: any SQLDatabase) async throws -> ClusterClock.Sample {
        let sent = clock.hostNow()
        let row = try await database.raw("SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint AS micros").first()
        let received = clock.hostNow()
        let receivedAt = clock.monotonicNow()
        guard let micros = try row?.decode(column: "micros", as: Int64.self) else {
            throw ClockQueryError()
        }
        return .init(sent: sent, received: received, database: Date(timeIntervalSince1970: Double(micros) / 1_000_000), receivedAt: receivedAt)
    }

    struct ClockQueryError: Error, CustomStringConvertible {
        var description: String { "the database clock query returned no row" }
    }
}
