/// Chooses each agent's release through the service's governing rollout (its latest, or while a newer release awaits
/// approval, the latest that started: `RolloutRecord.governing`): the new serial once the rollout reached the
/// agent (or completed), the service's stable serial otherwise — and never a serial below the one the agent runs.
///
/// The last rule is why halting or aborting needs no new signature and never asks an agent for the impossible: an
/// agent refuses serials lower than one it accepted, so one that already installed the new serial keeps receiving
/// it (agents that rolled it back run the older serial and receive that one or the failed one, which they skip).
/// A service without any rollout (releases stored before rollouts existed), or whose latest rollout is older than its
/// latest release, gives its latest release to everyone.
struct RolloutReleaseSelector: ReleaseSelector {
    func choose(
        forAgent agentID: String,
        services: [String],
        running: [String: Int64],
        shared: ServiceSnapshot,
        fetched: [ReleaseKey: ReleaseRecord]?
    ) -> ReleaseChoice {
        guard !services.isEmpty else { return .chosen([]) }
        // Per service: the serial the rollout intends, and the higher serial the agent runs (if any) as first choice.
        var choices: [String: [Int64]] = [:]
        for service in services {
            guard let latest = shared.latest[service] else { continue }
            let newest = latest.serial
            let intended: Int64?
            // A rollout newer than the latest release read is a snapshot torn by a publish between its two reads (the
            // release, then the rollout): the rollout is the truth, and its release is fetched (`.missing`). Taken as
            // "no rollout", every agent the new rollout has not reached was handed the superseded serial, which it
            // could never leave again (a lower serial is refused).
            // A latest release awaiting approval reaches no agent: the rollout that started before it governs.
            if let rollout = shared.rollouts[service], rollout.serial >= newest || latest.isAwaitingApproval {
                intended = rollout.intendedSerial(for: agentID, reached: shared.reached[service])
            } else {
                intended = newest
            }
            var candidates: [Int64] = []
            if let serial = running[service], serial > (intended ?? 0) { candidates.append(serial) }
            if let intended { candidates.append(intended) }
            if !candidates.isEmpty { choices[service] = candidates }
        }
        func record(_ service: String, _ serial: Int64) -> ReleaseRecord? {
            shared.release(service, serial) ?? fetched?[ReleaseKey(service: service, serial: serial)]
        }
        // Only an agent running a serial that is neither the latest nor the stable one costs a query.
        if fetched == nil {
            let missing = choices.flatMap { service, serials in
                serials.filter { record(service, $0) == nil }.map { ReleaseKey(service: service, serial: $0) }
            }
            if !missing.isEmpty { return .missing(missing) }
        }
        return .chosen(
            choices.keys.sorted().compactMap { service in
                choices[service]?.lazy.compactMap { record(service, $0) }.first
            }
        )
    }
}
