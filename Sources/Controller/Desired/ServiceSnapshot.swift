/// What every agent of a set of services shares when its desired state is computed: each service's latest release,
/// its latest rollout, the stable release that rollout gives agents it has not reached, and the serial each agent
/// reported running.
///
/// Loaded once per cache generation and set of services (see `DesiredStateCache.snapshot`), so waking 10,000
/// long-polls after a publish costs four queries in all, not some per agent.
struct ServiceSnapshot: Sendable {
    var latest: [String: ReleaseRecord] = [:]
    var rollouts: [String: RolloutRecord] = [:]
    /// The agents each rollout of `rollouts` has reached, by service: asked for every agent of the fleet, so a set,
    /// built once per load (see `RolloutRecord.intendedSerial(for:reached:)`).
    var reached: [String: Set<String>] = [:]
    /// Releases other than the latest that a rollout hands out (its stable serial; its own while a newer release awaits
    /// approval), by key.
    var others: [ReleaseKey: ReleaseRecord] = [:]
    /// The newest trust root version stored (every agent's desired state names it), or `nil` when none is.
    var rootVersion: Int64?
    /// The serial each agent last reported running, by agent id then service (reports stored before the load).
    var running: [String: [String: Int64]] = [:]

    /// Reads the snapshot of `services` from `store`.
    static func load(_ services: [String], from store: any ControllerStore) async throws -> ServiceSnapshot {
        var snapshot = ServiceSnapshot()
        snapshot.rootVersion = try await store.latestTrustRootVersion()
        guard !services.isEmpty else { return snapshot }
        for record in try await store.latestReleases(for: services) { snapshot.latest[record.service] = record }
        snapshot.rollouts = RolloutRecord.governing(try await store.currentRollouts(for: services))
        for (service, rollout) in snapshot.rollouts { snapshot.reached[service] = Set(rollout.reachedAgents) }
        // The stable serials, and a governing rollout's own serial while a newer release awaits approval: what the
        // rollouts hand out besides the latest release (else read once per agent given it).
        let others = snapshot.rollouts.values.flatMap { rollout in
            [rollout.stableSerial, rollout.serial].compactMap { serial -> ReleaseKey? in
                guard let serial, serial != snapshot.latest[rollout.service]?.serial else { return nil }
                return ReleaseKey(service: rollout.service, serial: serial)
            }
        }
        if !others.isEmpty {
            for record in try await store.releases(others) { snapshot.others[ReleaseKey(service: record.service, serial: record.serial)] = record }
        }
        snapshot.running = try await store.runningSerials(for: services)
        return snapshot
    }

    /// The stored release `service`/`serial`, if the snapshot holds it.
    func release(_ service: String, _ serial: Int64) -> ReleaseRecord? {
        if let latest = latest[service], latest.serial == serial { return latest }
        return others[ReleaseKey(service: service, serial: serial)]
    }
}
