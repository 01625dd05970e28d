/// Decides which release of each service an agent receives.
///
/// The one seam for staged rollouts: a later selector can hold some agents on an older serial (waves, canaries)
/// while `DesiredStateBuilder`, the cache and long-polling stay as they are.
///
/// The choice itself is synchronous, from what every agent of the services shares (`ServiceSnapshot`): after a
/// publish, 10,000 woken long-polls compute their states on their event loops without a task each. Only a release the
/// snapshot does not hold (an agent running a serial that is neither the latest nor a rollout's stable one) needs the
/// store: `choose` names it, and `releases(forAgent:services:running:in:shared:)` reads it and chooses again.
protocol ReleaseSelector: Sendable {
    /// The releases agent `agentID` (running `services`) should run now, at most one per service, sorted by service —
    /// or, when `fetched` is `nil`, the releases the choice needs that `shared` does not hold.
    /// - Parameters:
    ///   - running: the serial the agent last reported running, per service.
    ///   - shared: what all agents of those services share, loaded once per cache generation.
    ///   - fetched: releases read from the store after an earlier `.missing`; a release still missing then is not
    ///     stored (the next candidate of its service, if any, is given).
    func choose(
        forAgent agentID: String,
        services: [String],
        running: [String: Int64],
        shared: ServiceSnapshot,
        fetched: [ReleaseKey: ReleaseRecord]?
    ) -> ReleaseChoice
}

/// A selector named releases it needs after they were read for it (a broken `ReleaseSelector`).
struct ReleaseSelectionError: Error, CustomStringConvertible {
    let missing: [ReleaseKey]

    var description: String {
        "the release selector asked again for \(missing.map { "\($0.service) serial \($0.serial)" }.joined(separator: ", ")) after they were read"
    }
}

/// What a `ReleaseSelector` chose.
enum ReleaseChoice: Sendable {
    /// The releases, sorted by service.
    case chosen([ReleaseRecord])
    /// Releases the snapshot does not hold: read them, then choose again with them.
    case missing([ReleaseKey])
}

extension ReleaseSelector {
    /// The releases agent `agentID` should run now, reading from `store` what `shared` does not hold.
    func releases(
        forAgent agentID: String,
        services: [String],
        running: [String: Int64],
        in store: any ControllerStore,
        shared: ServiceSnapshot
    ) async throws -> [ReleaseRecord] {
        switch choose(forAgent: agentID, services: services, running: running, shared: shared, fetched: nil) {
        case .chosen(let releases):
            return releases
        case .missing(let keys):
            var fetched: [ReleaseKey: ReleaseRecord] = [:]
            for record in try await store.releases(keys) { fetched[ReleaseKey(service: record.service, serial: record.serial)] = record }
            switch choose(forAgent: agentID, services: services, running: running, shared: shared, fetched: fetched) {
            case .chosen(let releases):
                return releases
            case .missing(let again):
                // Against `choose`'s contract (with `fetched` given it chooses among what exists). An error, never an
                // empty list: an agent given no release of a service would stop running it.
                throw ReleaseSelectionError(missing: again)
            }
        }
    }
}

/// Every agent gets the latest release of each service it runs.
struct LatestReleaseSelector: ReleaseSelector {
    func choose(
        forAgent agentID: String,
        services: [String],
        running: [String: Int64],
        shared: ServiceSnapshot,
        fetched: [ReleaseKey: ReleaseRecord]?
    ) -> ReleaseChoice {
        .chosen(services.sorted().compactMap { shared.latest[$0] })
    }
}
