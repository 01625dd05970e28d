/// Decides which release of each service an agent receives.
///
/// The one seam for staged rollouts: a later selector can hold some agents on an older serial (waves, canaries)
/// while `DesiredStateBuilder`, the cache and long-polling stay as they are.
protocol ReleaseSelector: Sendable {
    /// The releases `agent` should run now, at most one per service, sorted by service.
    func releases(for agent: AgentRecord, in store: any ControllerStore) async throws -> [ReleaseRecord]
}

/// Every agent gets the latest release of each service it runs.
struct LatestReleaseSelector: ReleaseSelector {
    func releases(for agent: AgentRecord, in store: any ControllerStore) async throws -> [ReleaseRecord] {
        try await store.latestReleases(for: agent.services)
    }
}
