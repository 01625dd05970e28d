import Foundation
import Logging
import Shared

/// The parts every route handler uses, built once per application.
struct ControllerCore: Sendable {
    let configuration: ControllerConfiguration
    let store: any ControllerStore
    /// The trust root releases and newer roots are checked against.
    let trust: ControllerTrust
    let artifacts: ArtifactStore
    let authenticator: Authenticator
    /// The signal to every process serving this data directory that a token stopped working.
    let revocations: TokenRevocations
    let desiredStates: DesiredStateProvider
    /// Moves staged rollouts along (status reports, the timer, operator actions).
    let rollouts: RolloutCoordinator
    /// Commits status reports in batches (write-behind, acknowledged once committed).
    let statusReports: StatusReportQueue
    let metrics: ControllerMetrics
    let logger: Logger
    /// Notices one agent identity reporting from two hosts at once (an image baked after enrolment, a copied token).
    let identities = AgentIdentityWatch()
    /// The request bodies all connections together may hold while they arrive.
    let bodyBudget: BodyBudget
    /// The wall clock (release expiry, last-seen times); injected so tests can move it.
    let now: @Sendable () -> Date

    /// A token stopped working (revoked, its agent removed or replaced), committed to the store: no cache may serve
    /// it from now on, in this process or in another one on the same data directory.
    func tokenRevoked() {
        // The other controllers on a PostgreSQL database hear of it from the commit (`ClusterChangeTriggers`).
        // The in-memory epoch first, whatever becomes of the file: it is part of every stamp, so a principal a request
        // read before the commit and caches after it never matches again. With only the file, a failed write (a full or
        // read-only disk) left the stamp as it was, and such a principal was served for good.
        revocations.bumpEpoch()
        authenticator.forgetAll()
        do {
            try revocations.bump()
        } catch {
            // This process forgot it already; only another server on the same data directory could still hold it.
            logger.error("Signalling a token revocation failed", metadata: ["error.message": "\(error)"])
        }
    }

    /// An agent is gone from the store (removed by an operator or for its silence): its token stops working, its parked
    /// long-poll is answered, and what this controller remembers of it goes.
    func agentsRemoved(_ agents: [AgentRecord]) async {
        guard !agents.isEmpty else { return }
        tokenRevoked()
        for agent in agents {
            desiredStates.agentRemoved(id: agent.id)
            identities.forget(agentID: agent.id)
            statusReports.forget(agentID: agent.id)
        }
        // The store took them out of their services' open rollouts, whose waves may now be complete or cover other
        // agents: every cached state of those services goes (and the rollouts' copy with the generation). Without an
        // open rollout of theirs nothing else changed, and their services' parked agents are left alone (a read that
        // fails wakes them all the same).
        let services = Set(agents.flatMap(\.services))
        if let open = try? await store.activeRollouts(), !open.contains(where: { services.contains($0.service) }) { return }
        desiredStates.invalidateAllAndWake(services: services)
    }

    /// Forgets what this controller remembers of agents that are no longer in the store: removed through another
    /// controller on the same database, which this one hears of only as "agent changed" (a re-enrolment, a newer
    /// serial and a removal read alike), or by hand. Runs every `GoneAgentSweep.interval`.
    ///
    /// The ids are taken before the store is read: each was enrolled when it was noted (only an enrolled agent's
    /// report or poll is noted), so one missing from the read was removed since, and agent ids are never given again.
    /// - Returns: how many agents were forgotten.
    @discardableResult
    func forgetAgentsGoneFromStore() async throws -> Int {
        let remembered = desiredStates.cache.rememberedAgentIDs.union(identities.followedAgentIDs).union(
            statusReports.fingerprintedAgentIDs
        )
        guard !remembered.isEmpty else { return 0 }
        let gone = remembered.subtracting(try await store.agentIDs())
        for id in gone {
            desiredStates.agentRemoved(id: id)
            identities.forget(agentID: id)
            statusReports.forget(agentID: id)
        }
        return gone.count
    }

    /// Applies a change another controller on the same database committed (`PostgresChangeRelay`).
    func apply(remote change: ClusterChange) async {
        switch change {
        case .tokenRevoked, .resync:
            revocations.bumpEpoch()
            authenticator.forgetAll()
        case .releasePublished, .rolloutChanged, .agentChanged, .rootPublished:
            break
        }
        await desiredStates.apply(remote: change)
    }

    /// Whether `agent` counts as stale at `instant`: no status report for three poll intervals (counted from its
    /// enrolment when it never reported).
    func isStale(_ agent: AgentRecord, at instant: Date) -> Bool {
        (agent.lastSeen ?? agent.enrolledAt) < staleBefore(instant)
    }

    /// Whether two running agents report as `agent` at `instant`: a conflict this controller's watch sees standing, or
    /// one the controllers stored (`AgentRecord.identityConflictAt`) with a switch-back within the watch's window.
    func hasIdentityConflict(_ agent: AgentRecord, at instant: Date) -> Bool {
        if let last = agent.identityConflictAt, identities.stands(lastSwitchAt: last, at: instant) { return true }
        return watchedConflict(agent, at: instant) != nil
    }

    /// This controller's watch's view of `agent`'s conflict, while the row keeps a stored one. Every switch-back of a
    /// standing conflict is stored before its report is answered, so a row without one means the conflict was
    /// cleared since: the agent was enrolled afresh (`--replace`, a new token), perhaps through another controller,
    /// whose watch this one's does not hear from.
    func watchedConflict(_ agent: AgentRecord, at instant: Date) -> AgentIdentityWatch.Standing? {
        guard agent.identityConflictAt != nil else { return nil }
        return identities.standing(agentID: agent.id, at: instant)
    }

    /// The instant before which an agent's last report (or, without one, its enrolment) makes it stale at `instant`:
    /// `staleAfter` earlier. The store's counts (`fleetCounts`, `agentTotals`) take it.
    func staleBefore(_ instant: Date) -> Date {
        instant.addingTimeInterval(-Double(configuration.staleAfter.components.seconds))
    }
}
