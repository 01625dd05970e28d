import NIOCore
import NIOPosix
import Synchronization

/// Parks desired-state requests (`?wait=N`) until the state may have changed, the wait ends, or the server stops.
///
/// A parked request is an entry in this set with the closure that answers it and its deadline: no task, no timer, no
/// thread, no continuation (the channel handler that answers polls, `DesiredStatePollHandler`, parks straight from the
/// event loop; `wait` wraps the same in a continuation for async callers). A publish resumes the waiters of agents
/// running that service and they re-check their state. Each agent has at most one parked request: a new one from the
/// same agent answers the previous one at once (`.superseded`), so a client that re-polls without waiting for its
/// answers (or a stolen token) cannot pile up requests. Deadlines are kept here, by `sweepGranularity` tick, and one
/// sweep per tick that has any ends the waits whose time ran out (never early, at most a tick late): a timer per wait,
/// never cancelled (cancelling one searches the event loop's whole queue), outlived the wait it timed, so an agent
/// token re-polling with `?wait=60` as fast as it could left 60 s worth of its requests' timers alive, hundreds of MB at
/// ten thousand requests a second. An ended wait leaves only its id in its tick's list. The set is guarded by a `Mutex` rather than an actor so that a
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
        /// The deadlines of the waits timed on each event loop, by the loop's own clock (a test's embedded loop keeps
        /// a virtual one).
        var sweeps: [ObjectIdentifier: Sweeps] = [:]
        /// Sweeps scheduled so far (tests).
        var sweepsScheduled = 0

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

    /// The deadlines one event loop sweeps.
    private struct Sweeps {
        /// The loop (held, so that its identifier cannot name another loop allocated where a gone one was).
        let loop: any EventLoop
        /// The waits whose deadline falls in each tick (`LongPollHub.tick(of:)`), ended ones too: a sweep at the tick
        /// ends those still parked.
        var expiries: [Int64: [UInt64]] = [:]
        /// The earliest tick a sweep is scheduled for and has not run yet, `nil` when none is.
        var sweepAt: Int64?
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

    /// How many sweeps were scheduled (tests: one per tick that has waits, not one per wait).
    var sweepsScheduled: Int { state.withLock { $0.sweepsScheduled } }

    /// How finely deadlines are kept: a wait ends at most this long after its time (never before).
    static let sweepGranularity: Int64 = 100_000_000

    /// The tick `deadline` falls in: the first tick boundary at or after it.
    private static func tick(of deadline: NIODeadline) -> Int64 {
        let nanoseconds = Int64(clamping: deadline.uptimeNanoseconds)
        return nanoseconds / sweepGranularity + (nanoseconds % sweepGranularity == 0 ? 0 : 1)
    }

    /// Whether `shutdown()` was called.
    var isShutDown: Bool { state.withLock { $0.isShutDown } }

    /// Parks `resume` until a change concerning `agentID` or `services` after `generation`, `timeout` (timed by
    /// `eventLoop`'s clock and ended by a sweep on it), shutdown or `cancel(_:)`.
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
        // Durations are at most the controller's maximum wait, far from `TimeAmount`'s range.
        let tick = Self.tick(of: eventLoop.now + TimeAmount(timeout))
        let loop = ObjectIdentifier(eventLoop)
        let (ticket, immediate, replaced, sweep) = state.withLock { state -> (Ticket, Wake?, Waiter?, Int64?) in
            state.nextID &+= 1
            let ticket = Ticket(id: state.nextID)
            if state.isShutDown { return (ticket, .shutdown, nil, nil) }
            if state.generation != generation { return (ticket, .changed, nil, nil) }
            // One parked request per agent: the newest wins.
            let replaced = state.park(ticket.id, Waiter(services: services, agentID: agentID, resume: resume))
            state.sweeps[loop, default: Sweeps(loop: eventLoop)].expiries[tick, default: []].append(ticket.id)
            // Told under the lock, so concurrent changes reach the gauge in order (a gauge set is one atomic store).
            onCountChange(state.waiters.count)
            return (ticket, nil, replaced, Self.claimSweep(at: tick, of: loop, on: eventLoop, in: &state))
        }
        if let immediate {
            resume(immediate)
            return ticket
        }
        if let sweep { schedule(sweep, on: eventLoop) }
        replaced?.resume(.superseded)
        return ticket
    }

    /// `tick` when no sweep is due at it or before (one is then scheduled for it), else `nil`.
    private static func claimSweep(at tick: Int64, of loop: ObjectIdentifier, on eventLoop: any EventLoop, in state: inout State) -> Int64? {
        if let due = state.sweeps[loop]?.sweepAt, due <= tick { return nil }
        state.sweeps[loop, default: Sweeps(loop: eventLoop)].sweepAt = tick
        state.sweepsScheduled += 1
        return tick
    }

    private func schedule(_ tick: Int64, on eventLoop: any EventLoop) {
        let at = NIODeadline.uptimeNanoseconds(UInt64(tick) * UInt64(Self.sweepGranularity))
        let scheduled = eventLoop.scheduleTask(deadline: at) { [self] in sweep(tick, on: eventLoop) }
        // A loop that shut down (a test's) runs no sweep: its claim goes, so a later wait on it claims one again.
        scheduled.futureResult.whenFailure { [self] _ in
            state.withLock { state in
                if state.sweeps[ObjectIdentifier(eventLoop)]?.sweepAt == tick { state.sweeps[ObjectIdentifier(eventLoop)]?.sweepAt = nil }
            }
        }
    }

    /// Ends the parked waits timed on `eventLoop` whose deadline has passed (ticks up to its now), then schedules the
    /// sweep of the next tick that has any.
    private func sweep(_ tick: Int64, on eventLoop: any EventLoop) {
        let now = eventLoop.now
        let loop = ObjectIdentifier(eventLoop)
        let (expired, next) = state.withLock { state -> ([Waiter], Int64?) in
            // Taken out while it changes: a copy left in the dictionary made each sweep copy the loop's whole deadline table.
            guard var sweeps = state.sweeps.removeValue(forKey: loop) else { return ([], nil) }
            if sweeps.sweepAt == tick { sweeps.sweepAt = nil }
            // The ticks whose boundary has passed: every deadline in them has (a deadline lies at or before its tick's).
            let current = Int64(clamping: now.uptimeNanoseconds) / Self.sweepGranularity
            var expired: [Waiter] = []
            for due in sweeps.expiries.keys.filter({ $0 <= current }) {
                // An id whose wait already ended (answered, superseded, cancelled) is no longer parked.
                expired += (sweeps.expiries.removeValue(forKey: due) ?? []).compactMap { state.remove($0) }
            }
            if !expired.isEmpty { onCountChange(state.waiters.count) }
            let earliest = sweeps.expiries.keys.min()
            // A loop with nothing left to sweep is forgotten (a sweep still scheduled finds nothing).
            state.sweeps[loop] = earliest == nil && sweeps.sweepAt == nil ? nil : sweeps
            guard let earliest else { return (expired, nil) }
            return (expired, Self.claimSweep(at: earliest, of: loop, on: eventLoop, in: &state))
        }
        if let next { schedule(next, on: eventLoop) }
        for waiter in expired { waiter.resume(.timedOut) }
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
