import NIOCore
import NIOPosix
import Synchronization

/// Parks desired-state requests (`?wait=N`) until the state may have changed, the wait ends, or the server stops.
///
/// A parked request is an entry in this set with the closure that answers it and a timer on an event loop: no task, no
/// thread, no continuation (the channel handler that answers polls, `DesiredStatePollHandler`, parks straight from the
/// event loop; `wait` wraps the same in a continuation for async callers). A publish resumes the waiters of agents
/// running that service and they re-check their state. Each agent has at most one parked request: a new one from the
/// same agent answers the previous one at once (`.superseded`), so a client that re-polls without waiting for its
/// answers (or a stolen token) cannot pile up requests. The set is guarded by a `Mutex` rather than an actor so that a
/// cancelled wait can remove itself synchronously (an actor hop there could arrive after the registration it is meant
/// to undo).
final class LongPollHub: Sendable {
    /// Why a wait ended.
    enum Wake: Sendable, Equatable {
        /// A release or enrolment that may concern this agent happened.
        case changed
        /// The wait's time ran out.
        case timedOut
        /// The server is shutting down: answer now.
        case shutdown
        /// The request went away.
        case cancelled
        /// A newer wait of the same agent took its place: answer now with the current state.
        case superseded
    }

    /// One parked wait, to cancel it.
    struct Ticket: Sendable, Hashable {
        fileprivate let id: UInt64
    }

    private struct Waiter {
        /// The agent's services (the array of its rendered state, shared, not copied per waiter).
        let services: [String]
        let agentID: String
        let resume: @Sendable (Wake) -> Void
    }

    private struct State {
        var generation: UInt64 = 0
        var nextID: UInt64 = 0
        var waiters: [UInt64: Waiter] = [:]
        /// The parked wait of each agent (at most one).
        var byAgent: [String: UInt64] = [:]
        var isShutDown = false

        /// Parks `waiter` as its agent's only wait; the wait it replaces, if any.
        mutating func park(_ id: UInt64, _ waiter: Waiter) -> Waiter? {
            let replaced = byAgent.updateValue(id, forKey: waiter.agentID).flatMap { waiters.removeValue(forKey: $0) }
            waiters[id] = waiter
            return replaced
        }

        mutating func remove(_ id: UInt64) -> Waiter? {
            guard let waiter = waiters.removeValue(forKey: id) else { return nil }
            if byAgent[waiter.agentID] == id { byAgent[waiter.agentID] = nil }
            return waiter
        }
    }

    private let state = Mutex(State())
    private let onCountChange: @Sendable (Int) -> Void
    /// Where the timers of `wait` callers (which bring no event loop of their own) run.
    private let timers: any EventLoopGroup

    /// - Parameters:
    ///   - onCountChange: told the number of parked requests whenever it changes (for a metrics gauge), under the hub's
    ///     lock so that the last value told is the current one: it must be quick and must not call the hub.
    ///   - timers: the event loops that time out the waits of `wait` callers. Default: NIO's shared group (the one the
    ///     HTTP server runs on).
    init(onCountChange: @escaping @Sendable (Int) -> Void = { _ in }, timers: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.onCountChange = onCountChange
        self.timers = timers
    }

    /// Increases on every notification. Read it before computing a state, pass it to `wait`: a change that lands in
    /// between then ends the wait at once instead of being missed.
    var generation: UInt64 { state.withLock { $0.generation } }

    /// How many requests are parked.
    var waiterCount: Int { state.withLock { $0.waiters.count } }

    /// Whether `agentID` has a request parked here.
    func isParked(agentID: String) -> Bool { state.withLock { $0.byAgent[agentID] != nil } }

    /// Whether `shutdown()` was called.
    var isShutDown: Bool { state.withLock { $0.isShutDown } }

    /// Parks `resume` until a change concerning `agentID` or `services` after `generation`, `timeout` (timed on
    /// `eventLoop`), shutdown or `cancel(_:)`.
    ///
    /// `resume` is called exactly once, from any thread, never under the hub's lock — synchronously inside this call
    /// when the wait ends at once (a change since `generation`, shutdown).
    @discardableResult
    func park(
        agentID: String,
        services: [String],
        after generation: UInt64,
        timeout: Duration,
        on eventLoop: any EventLoop,
        resume: @escaping @Sendable (Wake) -> Void
    ) -> Ticket {
        let (ticket, immediate, replaced) = state.withLock { state -> (Ticket, Wake?, Waiter?) in
            state.nextID &+= 1
            let ticket = Ticket(id: state.nextID)
            if state.isShutDown { return (ticket, .shutdown, nil) }
            if state.generation != generation { return (ticket, .changed, nil) }
            // One parked request per agent: the newest wins.
            let replaced = state.park(ticket.id, Waiter(services: services, agentID: agentID, resume: resume))
            // Told under the lock, so concurrent changes reach the gauge in order (a gauge set is one atomic store).
            onCountChange(state.waiters.count)
            return (ticket, nil, replaced)
        }
        if let immediate {
            resume(immediate)
            return ticket
        }
        // The timer is never cancelled: one that fires after a wake finds no entry and does nothing. (Cancelling costs a
        // linear search of the event loop's scheduled tasks under its lock, 10,000 times on a publish.) Durations are
        // at most the controller's maximum wait, far from `TimeAmount`'s range.
        eventLoop.scheduleTask(in: TimeAmount(timeout)) { [self] in end(ticket.id, with: .timedOut) }
        replaced?.resume(.superseded)
        return ticket
    }

    /// Ends a parked wait with `.cancelled` (its request went away). Nothing happens when it already ended.
    func cancel(_ ticket: Ticket) {
        end(ticket.id, with: .cancelled)
    }

    /// Parks until a change concerning `agentID` or `services` after `generation`, `timeout`, shutdown or cancellation
    /// of the calling task.
    func wait(agentID: String, services: [String], after generation: UInt64, timeout: Duration) async -> Wake {
        let ticket = Mutex<Ticket?>(nil)
        let cancelledEarly = Mutex(false)
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Wake, Never>) in
                let parked = park(agentID: agentID, services: services, after: generation, timeout: timeout, on: timers.next()) { wake in
                    continuation.resume(returning: wake)
                }
                let cancelled = cancelledEarly.withLock { cancelled in
                    ticket.withLock { $0 = parked }
                    return cancelled
                }
                if cancelled { cancel(parked) }
            }
        } onCancel: {
            // Before `park` returned, the ticket is unknown: the registration cancels itself once it is.
            let parked = cancelledEarly.withLock { cancelled in
                cancelled = true
                return ticket.withLock { $0 }
            }
            if let parked { cancel(parked) }
        }
    }

    /// Wakes the waiters of agents running any of `services` (a release was published).
    func notify(services: Set<String>) {
        resume(.changed) { waiter in waiter.services.contains(where: services.contains) }
    }

    /// Wakes every waiter (a trust root was published: every agent's state names it).
    func notifyAll() {
        resume(.changed) { _ in true }
    }

    /// Wakes the waiter of one agent (it enrolled again, or reported a serial its state does not know).
    func notify(agentID: String) {
        let woken = state.withLock { state -> Waiter? in
            state.generation &+= 1
            let woken = state.byAgent[agentID].flatMap { state.remove($0) }
            if woken != nil { onCountChange(state.waiters.count) }
            return woken
        }
        woken?.resume(.changed)
    }

    /// Answers every waiter now and every later wait at once: the server is stopping.
    func shutdown() {
        state.withLock { $0.isShutDown = true }
        resume(.shutdown) { _ in true }
    }

    private func end(_ id: UInt64, with wake: Wake) {
        let waiter = state.withLock { state -> Waiter? in
            let waiter = state.remove(id)
            if waiter != nil { onCountChange(state.waiters.count) }
            return waiter
        }
        waiter?.resume(wake)
    }

    private func resume(_ wake: Wake, where matches: (Waiter) -> Bool) {
        let woken = state.withLock { state -> [Waiter] in
            state.generation &+= 1
            let ids = state.waiters.compactMap { id, waiter in matches(waiter) ? id : nil }
            let woken = ids.compactMap { state.remove($0) }
            if !woken.isEmpty { onCountChange(state.waiters.count) }
            return woken
        }
        // Resumed outside the lock. A waiter of `DesiredStatePollHandler` hops to its connection's event loop, so the
        // work of answering is spread over every loop instead of being done here.
        for waiter in woken { waiter.resume(wake) }
    }
}
