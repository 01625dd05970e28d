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

    /// The current desired state of `agentID`, or `nil` when no such agent exists.
    func current(for agentID: String) async throws -> RenderedDesiredState? {
        let (cached, generation) = cache.lookup(agentID)
        if let cached { return cached }
        guard let agent = try await builder.store.agent(id: agentID) else { return nil }
        let builder = builder
        let shared = try await cache.snapshot(of: agent.services, generation: generation) {
            try await ServiceSnapshot.load(agent.services, from: builder.store)
        }
        let rendered = try await builder.build(for: agent, shared: shared)
        cache.insert(rendered, for: agentID, computedIn: generation)
        return rendered
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
        if let cached = cache.lookup(agentID).state,
            !running.contains(where: { service, serial in serial > (cached.serials[service] ?? 0) })
        {
            return
        }
        cache.invalidate(agentID)
        hub.notify(agentID: agentID)
        changes.announce(.agentChanged(id: agentID))
    }

    /// An agent (re-)enrolled: its services may differ.
    func agentEnrolled(id: String) {
        cache.invalidate(id)
        hub.notify(agentID: id)
        changes.announce(.agentChanged(id: id))
    }

    /// An agent was removed: its cached state goes, and a parked long-poll of it is answered (404 from then on).
    func agentRemoved(id: String) {
        cache.invalidate(id)
        hub.notify(agentID: id)
        changes.announce(.agentChanged(id: id))
    }
}
