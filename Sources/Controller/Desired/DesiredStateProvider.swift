/// Desired states as the HTTP layer needs them: cached, invalidated on change, with long-poll wake-ups.
final class DesiredStateProvider: Sendable {
    let builder: DesiredStateBuilder
    let cache = DesiredStateCache()
    let hub: LongPollHub

    init(builder: DesiredStateBuilder, hub: LongPollHub) {
        self.builder = builder
        self.hub = hub
    }

    /// The current desired state of `agentID`, or `nil` when no such agent exists.
    func current(for agentID: String) async throws -> RenderedDesiredState? {
        let (cached, generation) = cache.lookup(agentID)
        if let cached { return cached }
        guard let agent = try await builder.store.agent(id: agentID) else { return nil }
        let rendered = try await builder.build(for: agent)
        cache.insert(rendered, for: agentID, computedIn: generation)
        return rendered
    }

    /// A release of `service` was stored: drop cached states, wake the long-polls of agents running it.
    func releasePublished(service: String) {
        cache.invalidateAll()
        hub.notify(services: [service])
    }

    /// An agent (re-)enrolled: its services may differ.
    func agentEnrolled(id: String) {
        cache.invalidate(id)
        hub.notify(agentID: id)
    }
}
