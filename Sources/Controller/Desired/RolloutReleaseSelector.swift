/// Chooses each agent's release through the service's latest rollout: the new serial once the rollout reached the
/// agent (or completed), the service's stable serial otherwise — and never a serial below the one the agent runs.
///
/// The last rule is why halting or aborting needs no new signature and never asks an agent for the impossible: an
/// agent refuses serials lower than one it accepted, so one that already installed the new serial keeps receiving
/// it (agents that rolled it back run the older serial and receive that one or the failed one, which they skip).
/// A service without any rollout (releases stored before rollouts existed) gives its latest release to everyone.
struct RolloutReleaseSelector: ReleaseSelector {
    func releases(
        forAgent agentID: String,
        services: [String],
        running: [String: Int64],
        in store: any ControllerStore,
        shared: ServiceSnapshot
    ) async throws -> [ReleaseRecord] {
        guard !services.isEmpty else { return [] }
        let rollouts = shared.rollouts
        var known: [ReleaseKey: ReleaseRecord] = shared.others
        var latest: [String: Int64] = [:]
        for service in services {
            guard let record = shared.latest[service] else { continue }
            known[ReleaseKey(service: record.service, serial: record.serial)] = record
            latest[service] = record.serial
        }

        // Per service: the serial the rollout intends, and the higher serial the agent runs (if any) as first choice.
        var choices: [String: [Int64]] = [:]
        for service in services {
            guard let newest = latest[service] else { continue }
            let intended: Int64?
            if let rollout = rollouts[service], rollout.serial == newest {
                intended = rollout.intendedSerial(for: agentID)
            } else {
                intended = newest
            }
            var candidates: [Int64] = []
            if let serial = running[service], serial > (intended ?? 0) { candidates.append(serial) }
            if let intended { candidates.append(intended) }
            if !candidates.isEmpty { choices[service] = candidates }
        }
        let missing = choices.flatMap { service, serials in serials.map { ReleaseKey(service: service, serial: $0) } }
            .filter { known[$0] == nil }
        // Only an agent running a serial that is neither the latest nor the stable one costs a query.
        if !missing.isEmpty {
            for record in try await store.releases(missing) { known[ReleaseKey(service: record.service, serial: record.serial)] = record }
        }

        return choices.keys.sorted().compactMap { service in
            choices[service]?.lazy.compactMap { known[ReleaseKey(service: service, serial: $0)] }.first
        }
    }
}
