import Synchronization

/// Parks desired-state requests (`?wait=N`) until the state may have changed, the wait ends, or the server stops.
///
/// Waiting requests hold a continuation in this set, not a thread; a publish resumes the waiters of agents running
/// that service and they re-check their state. Each agent has at most one parked request: a new one from the same
/// agent answers the previous one at once (`.superseded`), so a client that re-polls without waiting for its answers
/// (or a stolen token) cannot pile up requests. The set is guarded by a `Mutex` rather than an actor so that a
/// cancelled wait can remove itself synchronously from its cancellation handler (an actor hop there could arrive after
/// the registration it is meant to undo).
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

    private struct Waiter {
        let services: Set<String>
        let agentID: String
        let continuation: CheckedContinuation<Wake, Never>
    }

    private struct State {
        var generation: UInt64 = 0
        var nextID: UInt64 = 0
        var waiters: [UInt64: Waiter] = [:]
        /// Waits that have an id but no registered continuation yet.
        var pending: Set<UInt64> = []
        /// Pending waits that were cancelled before registering.
        var cancelledEarly: Set<UInt64> = []
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

    /// - Parameter onCountChange: told the number of parked requests whenever it changes (for a metrics gauge).
    init(onCountChange: @escaping @Sendable (Int) -> Void = { _ in }) {
        self.onCountChange = onCountChange
    }

    /// Increases on every notification. Read it before computing a state, pass it to `wait`: a change that lands in
    /// between then ends the wait at once instead of being missed.
    var generation: UInt64 { state.withLock { $0.generation } }

    /// How many requests are parked.
    var waiterCount: Int { state.withLock { $0.waiters.count } }

    /// Whether `shutdown()` was called.
    var isShutDown: Bool { state.withLock { $0.isShutDown } }

    /// Parks until a change concerning `agentID` or `services` after `generation`, `timeout`, shutdown or cancellation.
    func wait(agentID: String, services: [String], after generation: UInt64, timeout: Duration) async -> Wake {
        await withTaskGroup(of: Wake.self) { group in
            group.addTask { await self.park(agentID: agentID, services: Set(services), after: generation) }
            group.addTask {
                do {
                    try await Task.sleep(for: timeout)
                    return .timedOut
                } catch {
                    return .cancelled
                }
            }
            let first = await group.next() ?? .cancelled
            group.cancelAll()
            return first
        }
    }

    private func park(agentID: String, services: Set<String>, after generation: UInt64) async -> Wake {
        let id = state.withLock { state -> UInt64 in
            state.nextID &+= 1
            state.pending.insert(state.nextID)
            return state.nextID
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Wake, Never>) in
                let (immediate, replaced, count) = state.withLock { state -> (Wake?, [Waiter], Int?) in
                    state.pending.remove(id)
                    if state.cancelledEarly.remove(id) != nil { return (.cancelled, [], nil) }
                    if state.isShutDown { return (.shutdown, [], nil) }
                    if state.generation != generation { return (.changed, [], nil) }
                    // One parked request per agent: the newest wins.
                    let replaced = state.park(id, Waiter(services: services, agentID: agentID, continuation: continuation))
                    return (nil, replaced.map { [$0] } ?? [], state.waiters.count)
                }
                if let immediate { continuation.resume(returning: immediate) }
                for waiter in replaced { waiter.continuation.resume(returning: .superseded) }
                if let count { onCountChange(count) }
            }
        } onCancel: {
            let (waiter, count) = state.withLock { state -> (Waiter?, Int) in
                guard let waiter = state.remove(id) else {
                    // Not registered yet: tell the registration. Already resumed: nothing to do.
                    if state.pending.contains(id) { state.cancelledEarly.insert(id) }
                    return (nil, state.waiters.count)
                }
                return (waiter, state.waiters.count)
            }
            if let waiter {
                waiter.continuation.resume(returning: .cancelled)
                onCountChange(count)
            }
        }
    }

    /// Wakes the waiters of agents running any of `services` (a release was published).
    func notify(services: Set<String>) {
        resume(.changed) { !$0.services.isDisjoint(with: services) }
    }

    /// Wakes every waiter (a trust root was published: every agent's state names it).
    func notifyAll() {
        resume(.changed) { _ in true }
    }

    /// Wakes the waiter of one agent (it enrolled again, or reported a serial its state does not know).
    func notify(agentID: String) {
        let (woken, count) = state.withLock { state -> (Waiter?, Int) in
            state.generation &+= 1
            return (state.byAgent[agentID].flatMap { state.remove($0) }, state.waiters.count)
        }
        if let woken {
            woken.continuation.resume(returning: .changed)
            onCountChange(count)
        }
    }

    /// Answers every waiter now and every later wait at once: the server is stopping.
    func shutdown() {
        state.withLock { $0.isShutDown = true }
        resume(.shutdown) { _ in true }
    }

    private func resume(_ wake: Wake, where matches: (Waiter) -> Bool) {
        let (woken, count) = state.withLock { state -> ([Waiter], Int) in
            state.generation &+= 1
            let ids = state.waiters.filter { matches($0.value) }.map(\.key)
            let woken = ids.compactMap { state.remove($0) }
            return (woken, state.waiters.count)
        }
        for waiter in woken { waiter.continuation.resume(returning: wake) }
        if !woken.isEmpty { onCountChange(count) }
    }
}
