import Shared

/// The one place that computes "the desired state of agent X" from the store.
struct DesiredStateBuilder: Sendable {
    /// How the state is built.
    struct Configuration: Sendable {
        /// The poll interval agents are told to use when not long-polling. Default 15 s.
        var pollInterval: Duration = .seconds(15)
    }

    let configuration: Configuration
    let store: any ControllerStore
    /// Which serial of each service the agent gets. Default: the latest.
    let selector: any ReleaseSelector

    init(configuration: Configuration, store: any ControllerStore, selector: any ReleaseSelector = LatestReleaseSelector()) {
        self.configuration = configuration
        self.store = store
        self.selector = selector
    }

    /// The desired state of `agent`, rendered.
    func build(for agent: AgentRecord) async throws -> RenderedDesiredState {
        let releases = try await selector.releases(for: agent, in: store)
        let state = DesiredState(
            agentId: agent.id,
            pollSeconds: configuration.pollInterval.components.seconds,
            releases: releases.map(\.envelope)
        )
        var serials: [String: Int64] = [:]
        for release in releases { serials[release.service] = release.serial }
        return RenderedDesiredState(state, services: agent.services, serials: serials)
    }
}
