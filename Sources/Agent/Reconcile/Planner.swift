import Shared

/// One thing the agent does in a pass.
enum AgentAction: Sendable, Equatable {
    /// Record and report a refused release; nothing running is touched.
    case refuse(service: String, serial: Int64?, reason: String)
    /// Download, extract, switch `current`, apply, health-gate a new release (rolling back on failure).
    case install(service: String, release: Release, payload: [UInt8])
    /// The instance env file changed: regenerate the ecosystem and reload the service's apps with the same release.
    case refreshEnvironment(service: String)
    /// Drift: bring one app of an applied release back to how it should run.
    case repair(service: String, app: AppSpec, action: AppAction)
    /// A Ferry-owned app that belongs to no release applied here.
    case removeOrphan(name: String)
}

/// Plans a pass: a pure function of (desired, applied, observed) → actions, in the order they run.
///
/// Installs come first (a service being installed is not drift-repaired in the same pass: the install applies it),
/// then env refreshes, then drift repair of everything else, then orphans. Executing the actions is a separate step
/// (`Reconciler`), where one failing action does not stop the others.
enum Planner {
    struct Input: Sendable {
        /// Decisions from the desired state, or `nil` when the controller could not be reached this pass (then only
        /// drift is repaired).
        var decisions: DesiredStateEvaluator.Result?
        /// The state of the services this instance runs (their applied releases' apps are never orphans).
        var state: AgentState
        /// The process manager's table (Ferry's namespace only).
        var observed: [ManagedProcess]
        /// The apps of each service's applied release, as they should run now.
        var appliedApps: [String: [AppSpec]]
        /// The current digest of each service's instance env file.
        var envDigests: [String: String]
        /// Services whose env refresh failed for some apps and waits out its backoff: no refresh is planned, and their
        /// apps are drift-repaired meanwhile (`Reconciler+Environment`).
        var refreshesWaiting: Set<String> = []
        /// Services whose env refresh failed for the env file they run on and whose backoff is over: refreshed again
        /// although the digest matches the applied one. A rollback's reload (or the reload after its files were put
        /// back) that failed records no new digest, so without this nothing ever reloaded the restored release's apps,
        /// which ran on with the failed release's code, reported "rolled back".
        var refreshesOwed: Set<String> = []
        /// The services configured here. While none of them has an applied release and none is being installed (a state
        /// file lost, or deleted by hand), any app of the table may be theirs: no app is removed as an orphan. One service
        /// not yet installed (just added to the config) does not hold the others' orphans back. Empty: not checked.
        var services: Set<String> = []
    }

    /// Whether the applied release's apps are reloaded with the env file of `envDigest`: it changed since they were, or
    /// a refresh of it failed for some apps (`owed`, its backoff over).
    static func refreshIsDue(applied: AppliedRelease, envDigest: String, owed: Bool) -> Bool {
        envDigest != applied.envDigest || owed
    }

    static func plan(_ input: Input) -> [AgentAction] {
        var actions: [AgentAction] = []
        var installing: Set<String> = []

        if let decisions = input.decisions {
            for (service, refusals) in decisions.refusals.sorted(by: { $0.key < $1.key }) {
                for refusal in refusals {
                    actions.append(.refuse(service: service, serial: refusal.serial, reason: refusal.reason))
                }
            }
            for (service, decision) in decisions.decisions.sorted(by: { $0.key < $1.key }) {
                if case .install(let release, let payload) = decision {
                    actions.append(.install(service: service, release: release, payload: payload))
                    installing.insert(service)
                }
            }
        }

        var refreshing: Set<String> = []
        for (service, serviceState) in input.state.services.sorted(by: { $0.key < $1.key }) {
            guard !installing.contains(service), !input.refreshesWaiting.contains(service), let applied = serviceState.applied,
                let digest = input.envDigests[service],
                refreshIsDue(applied: applied, envDigest: digest, owed: input.refreshesOwed.contains(service))
            else { continue }
            actions.append(.refreshEnvironment(service: service))
            refreshing.insert(service)
        }

        // An applied release's apps are never orphans, even when they could not be built into `appliedApps` this pass
        // (an unreadable instance env file must not get the running service deleted).
        // Nor are the apps of an install a crash interrupted (it is installed again once the controller answers).
        // Decoded once a pass: `nil` for a payload that does not decode (orphans are held back for it, below).
        let stateReleases = input.state.services.values.flatMap { [$0.applied, $0.pending] }.compactMap { $0 }.map { try? $0.release() }
        var desiredNames = Set(stateReleases.compactMap { $0 }.flatMap { $0.pm2.apps.map(\.name) })
        for (service, apps) in input.appliedApps.sorted(by: { $0.key < $1.key }) {
            for app in apps {
                desiredNames.insert(app.name)
                guard !installing.contains(service), !refreshing.contains(service) else { continue }
                let observed = input.observed.filter { $0.name == app.name }
                let action = AppAction.decide(desired: app, observed: observed, needsRefresh: false)
                if action != .none { actions.append(.repair(service: service, app: app, action: action)) }
            }
        }

        // Orphans only when the apps this instance runs are known. A payload in the state that does not decode (a newer
        // agent's stricter rules, a damaged state file) left its apps out of `desiredNames`, and a state file that was
        // lost left every service out: the running release was deleted as an orphan.
        let unreadable = stateReleases.contains { $0 == nil }
        let unknown = !input.services.isEmpty && input.services.allSatisfy { input.state.services[$0]?.applied == nil && !installing.contains($0) }
        guard !unreadable, !unknown else { return actions }
        // Apps of a service being installed are kept even when the applied release does not name them yet.
        let orphans = Set(input.observed.map(\.name)).subtracting(desiredNames)
        for name in orphans.sorted()
        where !installing.contains(where: { service in
            input.decisions?.decisions[service].map { decision in
                if case .install(let release, _) = decision { return release.pm2.apps.contains { $0.name == name } }
                return false
            } ?? false
        }) {
            actions.append(.removeOrphan(name: name))
        }
        return actions
    }
}
