/// Desired states as the HTTP layer needs them: cached, invalidated on change, with long-poll wake-ups.
final class DesiredStateProvider: Sendable {
    let builder: DesiredStateBuilder
    let cache = DesiredStateCache()
    let hub: LongPollHub
    /// Where changes are announced to the other controllers on the same database (`+Cluster`: what they do with them).
    let changes: ClusterChangeFeed
    /// Agents other controllers changed, whose stored serials are read off the change listener (`+Cluster`).
    let remoteAgents = RemoteAgentQueue()

    init(builder: DesiredStateBuilder, hub: LongPollHub, changes: ClusterChangeFeed = .disabled()) {
        self.builder = builder
        self.hub = hub
        self.changes = changes
    }

    /// The cached state of `agentID`, without computing a missing one (the poll handler's synchronous path).
    func cached(for agentID: String) -> RenderedDesiredState? {
        cache.lookup(agentID).state
    }

    /// The current desired state of `agentID`, or `nil` when no such agent exists.
    ///
    /// A missing state is computed from the agent's services (read once per enrolment), the snapshot of those services
    /// (read once per generation for all their agents) and the serials the agent reported: after a publish, no query
    /// per agent.
    func current(for agentID: String) async throws -> RenderedDesiredState? {
        let (cached, generation, stamp) = cache.lookup(agentID)
        if let cached { return cached }
        guard let services = try await agent(agentID)?.services else { return nil }
        let store = builder.store
        let shared = try await cache.snapshot(of: services, generation: generation) {
            try await ServiceSnapshot.load(services, from: store)
        }
        let cache = self.cache
        let rendered = try await builder.build(
            agentID: agentID,
            services: services,
            running: running(agentID, shared),
            shared: shared
        ) { releases in
            cache.encoded(releases, generation: generation)
        }
        cache.insert(rendered, for: agentID, computedAt: stamp)
        return rendered
    }

    /// The current desired state of `agentID` when it is cached or can be computed from memory alone — the agent's
    /// services known, its services' snapshot loaded, every release its selector chooses in that snapshot — without
    /// suspending; `nil` otherwise (then `current(for:)` computes it).
    ///
    /// After a publish, the first woken long-poll loads the snapshot and every other one computes its state here, on its
    /// connection's event loop: no task and no thread hop per agent (docs/benchmarks.md).
    func currentInMemory(for agentID: String) -> RenderedDesiredState? {
        let (cached, generation, stamp) = cache.lookup(agentID)
        if let cached { return cached }
        guard let services = cache.knownAgent(agentID)?.services,
            let shared = cache.loadedSnapshot(of: services, generation: generation)
        else { return nil }
        let cache = self.cache
        let rendered = builder.buildInMemory(agentID: agentID, services: services, running: running(agentID, shared), shared: shared) {
            releases in cache.encoded(releases, generation: generation)
        }
        guard let rendered else { return nil }
        cache.insert(rendered, for: agentID, computedAt: stamp)
        return rendered
    }

    /// The serials `agentID` runs: as the snapshot read them, updated by the reports received since.
    private func running(_ agentID: String, _ shared: ServiceSnapshot) -> [String: Int64] {
        var running = shared.running[agentID] ?? [:]
        running.merge(cache.reported(by: agentID)) { _, latest in latest }
        return running
    }

    /// The enrolled agent `agentID`, from memory after its first read (id, name and services are current; last-seen
    /// time and versions are not: read the store for those), or `nil` when no such agent exists.
    func agent(_ agentID: String) async throws -> AgentRecord? {
        let store = builder.store
        return try await cache.agent(agentID) { try await store.agent(id: agentID) }
    }

    /// A release of `service` was stored: drop cached states, wake the long-polls of agents running it.
    func releasePublished(service: String) {
        invalidateAllAndWake(services: [service])
    }

    /// A rollout of `service` changed which release some agents receive (a wave reached, completion, abort).
    func rolloutChanged(service: String) {
        invalidateAllAndWake(services: [service])
    }

    /// Drops every cached state at once, then wakes the long-polls of agents running one of `services` (every one when
    /// `nil`) once the snapshots their new states are computed from are loaded again — so each woken poll computes its
    /// state in memory on its event loop (`currentInMemory`) instead of starting a task that waits for the load. The
    /// wake is not delayed by more than the load the first woken poll would otherwise have made; when the load fails
    /// the agents are woken all the same (their polls then read the store themselves).
    ///
    /// Which snapshots: those the generation before had (the parked agents' states were computed from them). Polls
    /// arriving meanwhile see the new generation at once; a change between the drop and the wake-up is caught by the
    /// hub's generation (`LongPollHub.park(after:)`).
    func invalidateAllAndWake(services: Set<String>?) {
        let previous = cache.invalidateAll()
        let wanted = services.map { services in previous.filter { $0.contains(where: services.contains) } } ?? previous
        let hub = self.hub
        guard !wanted.isEmpty else { return Self.wake(hub, services) }
        let cache = self.cache
        let store = builder.store
        let generation = cache.generation
        // High priority: see `DesiredStatePollHandler.computeState`.
        Task(priority: .high) {
            // Several lists load side by side (a few at a time: each holds a pooled connection for its queries), so the
            // wake waits for about the slowest load, not for the sum of them.
            await withTaskGroup(of: Void.self) { group in
                var lists = wanted.makeIterator()
                func next() -> Bool {
                    guard let list = lists.next() else { return false }
                    group.addTask(priority: .high) {
                        _ = try? await cache.snapshot(of: list, generation: generation) { try await ServiceSnapshot.load(list, from: store) }
                    }
                    return true
                }
                for _ in 0..<Self.concurrentSnapshotLoads where !next() { break }
                while await group.next() != nil { _ = next() }
            }
            Self.wake(hub, services)
        }
    }

    /// Snapshots loaded at once after a publish.
    static let concurrentSnapshotLoads = 4

    private static func wake(_ hub: LongPollHub, _ services: Set<String>?) {
        if let services { hub.notify(services: services) } else { hub.notifyAll() }
    }

    /// An agent reported the serials it runs. The selector never gives a serial below the one an agent runs, so a
    /// report of a higher serial than its cached state gives (an install that finished after an abort) makes that
    /// state out of date. Without a cached state, a computation may be in flight with the statuses from before: the
    /// invalidation stops it from being cached, and the other controllers are told (one of them may hold the agent's
    /// parked poll and its state).
    ///
    /// Serials this controller was told before (the agent's periodic report, unchanged) are no news: the report that
    /// first gave them did all this. Before, with several controllers and no sticky sessions, an agent parked on one
    /// and reporting to another had no cached state there, and each of its reports sent every controller a notice that
    /// dropped its cached state, read its statuses from the store and woke its poll: 10,000 agents' periodic reports
    /// kept the notification queue full.
    func statusReceived(agentID: String, running: [String: Int64]) {
        let news = cache.noteReported(running, by: agentID)
        if let cached = cache.lookup(agentID).state {
            guard running.contains(where: { service, serial in serial > (cached.serials[service] ?? 0) }) else { return }
        } else if !news {
            return
        }
        cache.invalidate(agentID)
        hub.notify(agentID: agentID)
        changes.announce(.agentChanged(id: agentID))
    }

    /// A trust root was published: every desired state names the new version, so all of them change and every parked
    /// long-poll is answered.
    func rootPublished() {
        invalidateAllAndWake(services: nil)
    }

    /// An agent (re-)enrolled: its services may differ.
    func agentEnrolled(id: String) {
        cache.invalidate(id)
        hub.notify(agentID: id)
    }

    /// An agent was removed: its cached state goes, and a parked long-poll of it is answered (404 from then on).
    func agentRemoved(id: String) {
        cache.forget(id)
        hub.notify(agentID: id)
    }
}
