/// Decides which release of each service an agent receives.
///
/// The one seam for staged rollouts: a later selector can hold some agents on an older serial (waves, canaries)
/// while `DesiredStateBuilder`, the cache and long-polling stay as they are.
protocol ReleaseSelector: Sendable {
    /// The releases agent `agentID` (running `services`) should run now, at most one per service, sorted by service.
    /// - Parameters:
    ///   - running: the serial the agent last reported running, per service.
    ///   - shared: what all agents of those services share, loaded once per cache generation.
    func releases(
        forAgent agentID: String,
        services: [String],
        running: [String: Int64],
        in store: any ControllerStore,
        shared: ServiceSnapshot
    ) async throws -> [ReleaseRecord]
}

/// Every agent gets the latest release of each service it runs.
struct LatestReleaseSelector: ReleaseSelector {
    func releases(
        forAgent agentID: String,
        services: [String],
        running: [String: Int64],
        in store: any ControllerStore,
        shared: ServiceSnapshot
    ) async throws -> [ReleaseRecord] {
        services.sorted().compactMap { shared.latest[$0] }
    }
}
