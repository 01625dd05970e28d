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

    /// The desired state of `agentID`, which runs `services`, rendered.
    /// - Parameters:
    ///   - running: the serials the agent last reported running; the snapshot's when `nil`.
    ///   - shared: the snapshot of the agent's services; loaded here when not given.
    ///   - encode: encodes the chosen releases (the cache shares one encoding between agents given the same ones).
    func build(
        agentID: String,
        services: [String],
        running: [String: Int64]? = nil,
        shared: ServiceSnapshot? = nil,
        encode: ([ReleaseRecord]) -> EncodedReleases = { EncodedReleases($0.map(\.envelope)) }
    ) async throws -> RenderedDesiredState {
        let snapshot: ServiceSnapshot
        if let shared {
            snapshot = shared
        } else {
            snapshot = try await ServiceSnapshot.load(services, from: store)
        }
        let releases = try await selector.releases(
            forAgent: agentID,
            services: services,
            running: running ?? snapshot.running[agentID] ?? [:],
            in: store,
            shared: snapshot
        )
        return render(agentID: agentID, services: services, releases: releases, snapshot: snapshot, encode: encode)
    }

    /// The desired state of `agentID` from `shared` alone, without suspending — `nil` when the selector needs a release
    /// the snapshot does not hold (then `build` reads it). What a long-poll woken by a publish computes on its event
    /// loop; the same document `build` gives.
    func buildInMemory(
        agentID: String,
        services: [String],
        running: [String: Int64],
        shared: ServiceSnapshot,
        encode: ([ReleaseRecord]) -> EncodedReleases
    ) -> RenderedDesiredState? {
        guard case .chosen(let releases) = selector.choose(forAgent: agentID, services: services, running: running, shared: shared, fetched: nil)
        else { return nil }
        return render(agentID: agentID, services: services, releases: releases, snapshot: shared, encode: encode)
    }

    private func render(
        agentID: String,
        services: [String],
        releases chosen: [ReleaseRecord],
        snapshot: ServiceSnapshot,
        encode: ([ReleaseRecord]) -> EncodedReleases
    ) -> RenderedDesiredState {
        // A release awaiting approval never leaves the controller, whatever a selector picks (the rollout selector
        // already gives the stable serial while a rollout awaits approval).
        let releases = chosen.filter { !$0.isAwaitingApproval }
        var serials: [String: Int64] = [:]
        for release in releases { serials[release.service] = release.serial }
        return RenderedDesiredState(
            agentID: agentID,
            pollSeconds: configuration.pollInterval.components.seconds,
            releases: encode(releases),
            rootVersion: snapshot.rootVersion,
            services: services,
            serials: serials
        )
    }
}
