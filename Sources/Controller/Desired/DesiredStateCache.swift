import Synchronization

/// Rendered desired states by agent id, so an unchanged poll (the common case, answered `304`) costs no database
/// read and no encoding; and what computing a missing one needs, so waking 10,000 long-polls after a publish costs a
/// few queries in all rather than some per agent.
///
/// Two kinds of invalidation. A publish or rollout change (`invalidateAll`) starts a new generation: every entry, every
/// service snapshot and every encoded releases array goes. A change of one agent (`invalidate(_:)`: enrolment, removal,
/// a report of a serial its state does not know) bumps that agent's epoch and drops its entry and services only.
/// A value computed before an invalidation must not be cached after it: every lookup hands out the generation and the
/// agent's epoch, and `insert` accepts only a value computed under both still current. Epochs are tracked only from
/// one generation to the next (`State.epochs`).
final class DesiredStateCache: Sendable {
    /// What a lookup saw; pass it back to `insert`.
    struct Stamp: Sendable, Equatable {
        var generation: UInt64
        var epoch: UInt64
    }

    private struct State {
        var generation: UInt64 = 0
        var entries: [String: RenderedDesiredState] = [:]
        /// Each agent invalidated since the last generation change, with the value of `clock` it was given; an agent
        /// missing here has `floor`. An agent's epoch only ever grows, and grows at each invalidation, so a value handed
        /// out before one never equals the current one. Emptied at each generation change (`floor` then takes the
        /// clock): a map that kept every agent ever seen grew for as long as the controller ran, by every instance an
        /// autoscaling fleet ever enrolled.
        var epochs: [String: UInt64] = [:]
        var clock: UInt64 = 0
        var floor: UInt64 = 0

        func epoch(of agentID: String) -> UInt64 { epochs[agentID] ?? floor }

        mutating func bumpEpoch(of agentID: String) {
            clock &+= 1
            epochs[agentID] = clock
        }
        /// Each agent's row as read at its first use after (re-)enrolment, so a recomputation or a status report
        /// reads no agent row. Only what enrolment sets is used from it (id, name, services): the rest goes stale.
        var agents: [String: AgentRecord] = [:]
        /// Service snapshots of the current generation, by sorted service list; in flight ones are shared too.
        var snapshots: [[String]: Task<ServiceSnapshot, any Error>] = [:]
        /// The snapshots of `snapshots` whose load finished, for callers that must not suspend.
        var loaded: [[String]: ServiceSnapshot] = [:]
        /// Encoded releases arrays of the current generation, by the releases they hold.
        var encoded: [[ReleaseKey]: EncodedReleases] = [:]
        /// The serials agents last reported running through this process, by agent then service: at least as new as
        /// any snapshot's.
        var reported: [String: [String: Int64]] = [:]
    }

    private let state = Mutex(State())

    /// The cached state of `agentID` and the stamp to pass to `insert` after computing a missing one.
    func lookup(_ agentID: String) -> (state: RenderedDesiredState?, generation: UInt64, stamp: Stamp) {
        state.withLock { state in
            let stamp = Stamp(generation: state.generation, epoch: state.epoch(of: agentID))
            return (state.entries[agentID], stamp.generation, stamp)
        }
    }

    /// Caches `rendered` unless something concerning `agentID` was invalidated since `stamp`.
    func insert(_ rendered: RenderedDesiredState, for agentID: String, computedAt stamp: Stamp) {
        state.withLock { state in
            guard state.generation == stamp.generation, state.epoch(of: agentID) == stamp.epoch else { return }
            state.entries[agentID] = rendered
        }
    }

    /// The enrolled agent `agentID` (id, name and services are current; the rest is as it was when read), read with
    /// `load` when not known (`nil`: no such agent, not remembered).
    func agent(_ agentID: String, load: () async throws -> AgentRecord?) async throws -> AgentRecord? {
        let (known, epoch) = state.withLock { ($0.agents[agentID], $0.epoch(of: agentID)) }
        if let known { return known }
        guard let loaded = try await load() else { return nil }
        state.withLock { state in
            if state.epoch(of: agentID) == epoch { state.agents[agentID] = loaded }
        }
        return loaded
    }

    /// The snapshot of `services` for `generation`, loading it with `load` at most once per generation: the long-polls
    /// a publish wakes all share one load. A generation that is no longer current gets its own, uncached load.
    func snapshot(
        of services: [String],
        generation: UInt64,
        load: @escaping @Sendable () async throws -> ServiceSnapshot
    ) async throws -> ServiceSnapshot {
        let key = services.sorted()
        let task: Task<ServiceSnapshot, any Error> = state.withLock { state in
            guard state.generation == generation else { return Task { try await load() } }
            if let existing = state.snapshots[key] { return existing }
            let task = Task { try await load() }
            state.snapshots[key] = task
            return task
        }
        do {
            let snapshot = try await task.value
            state.withLock { state in
                if state.generation == generation { state.loaded[key] = snapshot }
            }
            return snapshot
        } catch {
            // A failed load is not kept: the next caller tries again.
            state.withLock { state in
                if state.generation == generation { state.snapshots[key] = nil }
            }
            throw error
        }
    }

    /// The snapshot of `services` for `generation` if one was loaded, without waiting for or starting a load.
    func loadedSnapshot(of services: [String], generation: UInt64) -> ServiceSnapshot? {
        let key = services.sorted()
        return state.withLock { $0.generation == generation ? $0.loaded[key] : nil }
    }

    /// The enrolled agent `agentID` if it is remembered (see `agent(_:load:)`), without reading the store.
    func knownAgent(_ agentID: String) -> AgentRecord? {
        state.withLock { $0.agents[agentID] }
    }

    /// The encoded array of `releases` (sorted by service), shared by every agent given the same ones in `generation`.
    func encoded(_ releases: [ReleaseRecord], generation: UInt64) -> EncodedReleases {
        let key = releases.map { ReleaseKey(service: $0.service, serial: $0.serial) }
        if let known = state.withLock({ $0.generation == generation ? $0.encoded[key] : nil }) { return known }
        // Encoded outside the lock; two agents racing here encode twice and one copy is kept.
        let encoded = EncodedReleases(releases.map(\.envelope))
        return state.withLock { state in
            guard state.generation == generation else { return encoded }
            if let winner = state.encoded[key] { return winner }
            state.encoded[key] = encoded
            return encoded
        }
    }

    /// Remembers the serials `agentID` reported running (see `reported(by:)`).
    /// - Returns: whether any of them is news: a service not noted before for the agent, or another serial.
    @discardableResult
    func noteReported(_ running: [String: Int64], by agentID: String) -> Bool {
        guard !running.isEmpty else { return false }
        return state.withLock { state in
            let before = state.reported[agentID] ?? [:]
            guard running.contains(where: { service, serial in before[service] != serial }) else { return false }
            state.reported[agentID, default: [:]].merge(running) { _, latest in latest }
            return true
        }
    }

    /// The serials `agentID` reported running through this process.
    func reported(by agentID: String) -> [String: Int64] {
        state.withLock { $0.reported[agentID] ?? [:] }
    }

    /// The current generation: it changes whenever a release is published, a rollout moves or a root is published.
    var generation: UInt64 { state.withLock { $0.generation } }

    /// Drops every state, snapshot and encoding (a release was published, a rollout moved).
    /// - Returns: the service lists whose snapshots the generation before had loaded or was loading (what the parked
    ///   agents' states were computed from: `DesiredStateProvider` loads them again before waking those agents).
    @discardableResult
    func invalidateAll() -> [[String]] {
        state.withLock { state in
            state.generation &+= 1
            let previous = Array(state.snapshots.keys)
            state.entries.removeAll(keepingCapacity: true)
            state.snapshots.removeAll()
            state.loaded.removeAll()
            state.encoded.removeAll()
            // Every agent's epoch becomes the clock: none goes back, and none is tracked any more.
            state.floor = state.clock
            state.epochs.removeAll()
            return previous
        }
    }

    /// Drops every agent's row (`agent(_:load:)` reads each again) and moves every agent's epoch past any handed out,
    /// so a row being read now is not kept either: changes to agents may have been missed (`resynchronize`).
    func forgetAgentRows() {
        state.withLock { state in
            state.clock &+= 1
            state.floor = state.clock
            state.epochs.removeAll()
            state.agents.removeAll()
        }
    }

    /// Drops one agent's state and row (it enrolled again, maybe with other services, was removed, or runs a
    /// newer serial than its state gives).
    func invalidate(_ agentID: String) {
        state.withLock { state in
            state.bumpEpoch(of: agentID)
            state.entries[agentID] = nil
            state.agents[agentID] = nil
        }
    }

    /// Forgets everything about a removed agent but its epoch (a computation still in flight must not be cached).
    func forget(_ agentID: String) {
        state.withLock { state in
            state.bumpEpoch(of: agentID)
            state.entries[agentID] = nil
            state.agents[agentID] = nil
            state.reported[agentID] = nil
        }
    }

    /// The agents this cache remembers anything of beyond the current generation (their rows, the serials they
    /// reported).
    var rememberedAgentIDs: Set<String> {
        state.withLock { state in Set(state.agents.keys).union(state.reported.keys) }
    }

    /// How many agents' epochs are tracked (those invalidated since the last generation change).
    var trackedEpochs: Int { state.withLock { $0.epochs.count } }
}
