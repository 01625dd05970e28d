import Logging
import NIOCore
import Synchronization

/// The connection cap: every open client connection, whether it has a request in flight, and which one to close when a
/// new connection arrives at the cap.
///
/// At the cap a new connection is admitted by closing the connection that has been idle longest (no request in flight:
/// a kept-alive connection, or one that never finished a request head); when every connection is busy the new one is
/// closed instead. So junk connections cannot starve `/healthz` or a polling agent, and parked long-polls (requests in
/// flight) are never the ones shed. Shared by all event loops; one short lock per connection state change.
final class ConnectionRegistry: Sendable {
    /// One admitted connection.
    struct Ticket: Hashable, Sendable {
        fileprivate let id: UInt64
    }

    private struct Entry {
        let channel: any Channel
        /// Whether no request is in flight.
        var isIdle: Bool
        /// Its neighbours in the idle list (`State.oldestIdle` … `State.newestIdle`), while idle.
        var olderIdle: UInt64?
        var newerIdle: UInt64?
    }

    /// The connections, and the idle ones in the order they became idle: the one to shed at the cap is the first, found
    /// without a search. A search of every entry, under the lock every event loop takes at each request's start and
    /// end, was 16,384 entries per connection accepted at the cap: a connect flood stalled every connection's I/O.
    private struct State {
        var nextID: UInt64 = 0
        var entries: [UInt64: Entry] = [:]
        var oldestIdle: UInt64?
        var newestIdle: UInt64?
        var lastCapLog: ContinuousClock.Instant?
        var shedSinceLog = 0
        var refusedSinceLog = 0

        /// Puts `id` last in the idle list (it just became idle).
        mutating func appendIdle(_ id: UInt64) {
            guard var entry = entries[id], !entry.isIdle else { return }
            entry.isIdle = true
            entry.olderIdle = newestIdle
            entry.newerIdle = nil
            entries[id] = entry
            if let newest = newestIdle { entries[newest]?.newerIdle = id } else { oldestIdle = id }
            newestIdle = id
        }

        /// Takes `id` out of the idle list (a request started, or it closed).
        mutating func removeIdle(_ id: UInt64) {
            guard var entry = entries[id], entry.isIdle else { return }
            if let older = entry.olderIdle { entries[older]?.newerIdle = entry.newerIdle } else { oldestIdle = entry.newerIdle }
            if let newer = entry.newerIdle { entries[newer]?.olderIdle = entry.olderIdle } else { newestIdle = entry.olderIdle }
            entry.isIdle = false
            entry.olderIdle = nil
            entry.newerIdle = nil
            entries[id] = entry
        }

        /// Forgets `id`; its entry, if it was there.
        mutating func remove(_ id: UInt64) -> Entry? {
            removeIdle(id)
            return entries.removeValue(forKey: id)
        }
    }

    /// How often, at most, the "cap reached" line is logged (with the counts since the previous one).
    static let capLogInterval: Duration = .seconds(10)

    let maximumConnections: Int
    private let state = Mutex(State())
    private let metrics: ConnectionMetrics
    private let logger: Logger

    init(maximumConnections: Int, metrics: ConnectionMetrics, logger: Logger) {
        self.maximumConnections = maximumConnections
        self.metrics = metrics
        self.logger = logger
    }

    /// Connections open now.
    var openCount: Int { state.withLock { $0.entries.count } }

    /// Registers a new connection (idle: it has not sent a request yet). At the cap it closes the longest-idle
    /// connection to make room, or returns `nil` when every connection is busy: the caller closes the new one.
    func admit(_ channel: any Channel, at now: ContinuousClock.Instant = .now) -> Ticket? {
        let (ticket, victim, count, log) = state.withLock { state -> (Ticket?, (any Channel)?, Int, CapLog?) in
            var victim: (any Channel)?
            if state.entries.count >= maximumConnections {
                guard let id = state.oldestIdle else {
                    state.refusedSinceLog += 1
                    return (nil, nil, state.entries.count, Self.capLog(&state, now: now))
                }
                victim = state.remove(id)?.channel
                state.shedSinceLog += 1
            }
            state.nextID &+= 1
            state.entries[state.nextID] = Entry(channel: channel, isIdle: false)
            state.appendIdle(state.nextID)
            let log = victim == nil ? nil : Self.capLog(&state, now: now)
            return (Ticket(id: state.nextID), victim, state.entries.count, log)
        }
        metrics.open.set(to: Double(count))
        metrics.accepted.increment()
        if let victim {
            metrics.shed.increment()
            victim.close(promise: nil)
        }
        if ticket == nil { metrics.refused.increment() }
        if let log {
            logger.warning(
                "Connection cap reached: closing idle connections to admit new ones, refusing new ones when none is idle",
                metadata: [
                    "ferry.connections.maximum": "\(maximumConnections)", "ferry.connections.shed": "\(log.shed)",
                    "ferry.connections.refused": "\(log.refused)",
                ]
            )
        }
        return ticket
    }

    /// The connection started (`false`) or finished (`true`) its last request in flight. Idle again, it goes last in
    /// the order of shedding.
    func setIdle(_ ticket: Ticket, _ isIdle: Bool) {
        state.withLock { state in
            if isIdle {
                state.appendIdle(ticket.id)
            } else {
                state.removeIdle(ticket.id)
            }
        }
    }

    /// The connection closed (whoever closed it).
    func release(_ ticket: Ticket) {
        let count = state.withLock { state -> Int? in
            state.remove(ticket.id) == nil ? nil : state.entries.count
        }
        if let count { metrics.open.set(to: Double(count)) }
    }

    /// A timeout closed a connection.
    func recordTimeout(_ reason: ConnectionTimeouts.Reason) {
        metrics.recordTimeout(reason)
    }

    private struct CapLog {
        let shed: Int
        let refused: Int
    }

    /// The counts to log now, or `nil` when the last line is more recent than `capLogInterval`.
    private static func capLog(_ state: inout State, now: ContinuousClock.Instant) -> CapLog? {
        if let last = state.lastCapLog, now - last < capLogInterval { return nil }
        let log = CapLog(shed: state.shedSinceLog, refused: state.refusedSinceLog)
        state.lastCapLog = now
        state.shedSinceLog = 0
        state.refusedSinceLog = 0
        return log
    }
}
