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
    /// - Parameter shared: the snapshot of the agent's services; loaded here when not given.
    func build(for agent: AgentRecord, shared: ServiceSnapshot? = nil) async throws -> RenderedDesiredState {
        let snapshot: ServiceSnapshot
        if let shared {
            snapshot = shared
        } else {
            snapshot = try await ServiceSnapshot.load(agent.services, from: store)
        }
        // A release awaiting approval never leaves the controller, whatever a selector picks (the rollout selector
        // already gives the stable serial while a rollout awaits approval).
        let releases = try await selector.releases(for: agent, in: store, shared: snapshot).filter { !$0.isAwaitingApproval }
        let state = DesiredState(
            agentID: agent.id,
            pollSeconds: configuration.pollInterval.components.seconds,
            releases: releases.map(\.envelope),
            rootVersion: snapshot.rootVersion
        )
        var serials: [String: Int64] = [:]
        for release in releases { serials[release.service] = release.serial }
        return RenderedDesiredState(state, services: agent.services, serials: serials)
    }
}
