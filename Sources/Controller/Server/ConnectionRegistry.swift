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
        /// When it became idle; `nil` while a request is in flight.
        var idleSince: ContinuousClock.Instant?
    }

    private struct State {
        var nextID: UInt64 = 0
        var entries: [UInt64: Entry] = [:]
        var lastCapLog: ContinuousClock.Instant?
        var shedSinceLog = 0
        var refusedSinceLog = 0
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
                let oldest = state.entries.lazy.compactMap { id, entry in entry.idleSince.map { (id, $0) } }.min { $0.1 < $1.1 }
                guard let (id, _) = oldest else {
                    state.refusedSinceLog += 1
                    return (nil, nil, state.entries.count, Self.capLog(&state, now: now))
                }
                victim = state.entries.removeValue(forKey: id)?.channel
                state.shedSinceLog += 1
            }
            state.nextID &+= 1
            state.entries[state.nextID] = Entry(channel: channel, idleSince: now)
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

    /// The connection started (`false`) or finished (`true`) its last request in flight.
    func setIdle(_ ticket: Ticket, _ isIdle: Bool, at now: ContinuousClock.Instant = .now) {
        state.withLock { state in
            state.entries[ticket.id]?.idleSince = isIdle ? now : nil
        }
    }

    /// The connection closed (whoever closed it).
    func release(_ ticket: Ticket) {
        let count = state.withLock { state -> Int? in
            state.entries.removeValue(forKey: ticket.id) == nil ? nil : state.entries.count
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
