/// Desired states as the HTTP layer needs them: cached, invalidated on change, with long-poll wake-ups.
final class DesiredStateProvider: Sendable {
    let builder: DesiredStateBuilder
    let cache = DesiredStateCache()
    let hub: LongPollHub
    /// Where changes are announced to the other controllers on the same database (`+Cluster`: what they do with them).
    let changes: ClusterChangeFeed

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
        var running = shared.running[agentID] ?? [:]
        running.merge(cache.reported(by: agentID)) { _, latest in latest }
        let cache = self.cache
        let rendered = try await builder.build(agentID: agentID, services: services, running: running, shared: shared) { releases in
            cache.encoded(releases, generation: generation)
        }
        cache.insert(rendered, for: agentID, computedAt: stamp)
        return rendered
    }

    /// The enrolled agent `agentID`, from memory after its first read (id, name and services are current; last-seen
    /// time and versions are not: read the store for those), or `nil` when no such agent exists.
    func agent(_ agentID: String) async throws -> AgentRecord? {
        let store = builder.store
        return try await cache.agent(agentID) { try await store.agent(id: agentID) }
    }

    /// A release of `service` was stored: drop cached states, wake the long-polls of agents running it.
    func releasePublished(service: String) {
        cache.invalidateAll()
        hub.notify(services: [service])
        changes.announce(.releasePublished(service: service))
    }

    /// A rollout of `service` changed which release some agents receive (a wave reached, completion, abort).
    func rolloutChanged(service: String) {
        cache.invalidateAll()
        hub.notify(services: [service])
        changes.announce(.rolloutChanged(service: service))
    }

    /// An agent reported the serials it runs. The selector never gives a serial below the one an agent runs, so a
    /// report of a higher serial than its cached state gives (an install that finished after an abort) makes that
    /// state out of date. Without a cached state, a computation may be in flight with the statuses from before: the
    /// invalidation stops it from being cached.
    func statusReceived(agentID: String, running: [String: Int64]) {
        cache.noteReported(running, by: agentID)
        if let cached = cache.lookup(agentID).state,
            !running.contains(where: { service, serial in serial > (cached.serials[service] ?? 0) })
        {
            return
        }
        cache.invalidate(agentID)
        hub.notify(agentID: agentID)
        changes.announce(.agentChanged(id: agentID))
    }

    /// A trust root was published: every desired state names the new version, so all of them change and every parked
    /// long-poll is answered.
    func rootPublished() {
        cache.invalidateAll()
        hub.notifyAll()
    }

    /// An agent (re-)enrolled: its services may differ.
    func agentEnrolled(id: String) {
        cache.invalidate(id)
        hub.notify(agentID: id)
        changes.announce(.agentChanged(id: id))
    }

    /// An agent was removed: its cached state goes, and a parked long-poll of it is answered (404 from then on).
    func agentRemoved(id: String) {
        cache.forget(id)
        hub.notify(agentID: id)
        changes.announce(.agentChanged(id: id))
    }
}
