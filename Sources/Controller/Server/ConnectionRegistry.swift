import Logging
import NIOCore
import Synchronization

/// The connection cap: every open client connection, whether it has a request in flight, and which one to close when a
/// new connection arrives at the cap.
///
/// At the cap a new connection is admitted by closing the connection that has been idle longest (no request in flight:
/// a kept-alive connection, or one that never finished a request head); when every connection is busy, the one whose
/// client has not read what it was sent for longest, if that is `unreadBeforeShed` or more (its socket unwritable: a
/// slow reader, which the connection's own timeout closes after the idle timeout anyway; a download on a slow link is
/// unwritable often but briefly, and is not cut for it); when there is none of either the new one is closed instead. So junk
/// connections cannot starve `/healthz` or a polling agent, and parked long-polls (requests in flight, nothing to send)
/// are never the ones shed. Busy connections that never read used to hold every slot: pipelined `GET /healthz`s that
/// are never read keep their answers unwritten, so a client could refuse everyone else for 75 s at a time. Shared by
/// all event loops; one short lock per connection state change.
final class ConnectionRegistry: Sendable {
    /// One admitted connection.
    struct Ticket: Hashable, Sendable {
        fileprivate let id: UInt64
    }

    /// Connection ids in the order they joined, the first found without a search. A search of every entry, under the
    /// lock every event loop takes at each request's start and end, was 16,384 entries per connection accepted at the
    /// cap: a connect flood stalled every connection's I/O.
    private struct Order {
        private var links: [UInt64: (older: UInt64?, newer: UInt64?)] = [:]
        private(set) var first: UInt64?
        private var last: UInt64?

        /// Puts `id` last, unless it is in already.
        mutating func append(_ id: UInt64) {
            guard links[id] == nil else { return }
            links[id] = (last, nil)
            if let last { links[last]?.newer = id } else { first = id }
            last = id
        }

        /// Puts `id` last if it is in, leaving it out otherwise.
        mutating func moveLast(_ id: UInt64) {
            guard links[id] != nil else { return }
            remove(id)
            append(id)
        }

        /// Takes `id` out, if it is in.
        mutating func remove(_ id: UInt64) {
            guard let link = links.removeValue(forKey: id) else { return }
            if let older = link.older { links[older]?.newer = link.newer } else { first = link.newer }
            if let newer = link.newer { links[newer]?.older = link.older } else { last = link.older }
        }
    }

    /// The connections; the idle ones in the order they became idle, and the busy ones whose client stopped reading in
    /// the order they stopped: the first of either is the one to shed at the cap.
    private struct State {
        var nextID: UInt64 = 0
        var channels: [UInt64: any Channel] = [:]
        var idle = Order()
        var unread = Order()
        /// Since when each connection of `unread` has not been read.
        var unreadSince: [UInt64: ContinuousClock.Instant] = [:]
        var lastCapLog: ContinuousClock.Instant?
        var shedSinceLog = 0
        var refusedSinceLog = 0

        /// Forgets `id`; its channel, if it was there.
        mutating func remove(_ id: UInt64) -> (any Channel)? {
            idle.remove(id)
            unread.remove(id)
            unreadSince[id] = nil
            return channels.removeValue(forKey: id)
        }
    }

    /// How long a busy connection's client must have read nothing before the cap sheds it for a new connection.
    static let unreadBeforeShed: Duration = .seconds(10)

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
    var openCount: Int { state.withLock { $0.channels.count } }

    /// Registers a new connection (idle: it has not sent a request yet). At the cap it closes the longest-idle
    /// connection to make room (or, with none idle, the longest-unread one), or returns `nil` when there is neither: the
    /// caller closes the new one.
    func admit(_ channel: any Channel, at now: ContinuousClock.Instant = .now) -> Ticket? {
        let (ticket, victim, count, log) = state.withLock { state -> (Ticket?, (any Channel)?, Int, CapLog?) in
            var victim: (any Channel)?
            if state.channels.count >= maximumConnections {
                let unread = state.unread.first.flatMap { id in
                    state.unreadSince[id].map { now - $0 >= Self.unreadBeforeShed } == true ? id : nil
                }
                guard let id = state.idle.first ?? unread else {
                    state.refusedSinceLog += 1
                    return (nil, nil, state.channels.count, Self.capLog(&state, now: now))
                }
                victim = state.remove(id)
                state.shedSinceLog += 1
            }
            state.nextID &+= 1
            state.channels[state.nextID] = channel
            state.idle.append(state.nextID)
            let log = victim == nil ? nil : Self.capLog(&state, now: now)
            return (Ticket(id: state.nextID), victim, state.channels.count, log)
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
                "Connection cap reached: closing idle connections (or, with none idle, ones whose client stopped reading) to admit new ones, refusing new ones when there is neither",
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
            guard state.channels[ticket.id] != nil else { return }
            if isIdle {
                state.idle.append(ticket.id)
            } else {
                state.idle.remove(ticket.id)
            }
        }
    }

    /// An idle connection was just used without becoming busy (a request answered within one read, by
    /// `DesiredStateFastPath`): it goes last in the order of shedding, as if it had ended a request now. Without this an
    /// agent that polls through the fast path kept the place it took when it connected, and was the first shed at the
    /// cap however recently it polled.
    func used(_ ticket: Ticket) {
        state.withLock { state in
            guard state.channels[ticket.id] != nil else { return }
            state.idle.moveLast(ticket.id)
        }
    }

    /// The connection's client stopped reading what it is sent (`true`: its socket is unwritable) or read again.
    /// Unread since the longest, it is the one shed at the cap when none is idle.
    func setUnread(_ ticket: ConnectionRegistry.Ticket, _ isUnread: Bool, at now: ContinuousClock.Instant = .now) {
        state.withLock { state in
            guard state.channels[ticket.id] != nil else { return }
            if isUnread {
                guard state.unreadSince[ticket.id] == nil else { return }
                state.unread.append(ticket.id)
                state.unreadSince[ticket.id] = now
            } else {
                state.unread.remove(ticket.id)
                state.unreadSince[ticket.id] = nil
            }
        }
    }

    /// The connection closed (whoever closed it).
    func release(_ ticket: Ticket) {
        let count = state.withLock { state -> Int? in
            state.remove(ticket.id) == nil ? nil : state.channels.count
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
