import Foundation
import Shared

/// Everything the controller persists except artifact bytes: tokens, releases, agents and their status.
///
/// Handlers only talk to this protocol, so a PostgreSQL store (for several replicas) can be added without touching
/// them. Implementations must make `insertRelease` atomic with its serial check: two publishers racing for the same
/// serial must see one success and one `StoreError.staleSerial`.
protocol ControllerStore: Sendable {
    /// Stores a token by the SHA-256 hex of its text (the text itself is never stored).
    func createToken(hash: String, name: String, role: TokenRole, at date: Date) async throws

    /// The principal a token hash belongs to (operator/enroll/viewer tokens and agent tokens), or `nil`.
    func principal(forTokenHash hash: String) async throws -> Principal?

    /// Stores a release together with its rollout and `events`, atomically.
    ///
    /// The service's latest rollout, when still open (rolling, paused or halted), becomes `superseded` (and a
    /// `superseded` event is recorded). The new rollout's stable serial is the previous rollout's serial when that one
    /// completed, otherwise the previous rollout's stable serial; without any previous rollout, the highest serial
    /// stored before this one. It starts in `plan.initialState` at wave 0.
    /// - Throws: `StoreError.staleSerial` unless its serial is above every stored serial of its service.
    func insertRelease(_ release: ReleaseRecord, rollout plan: RolloutPlan, events: [RolloutEventDraft]) async throws -> PublishedRollout

    /// The highest serial published for `service`, or `nil` when it has none.
    func latestSerial(service: String) async throws -> Int64?

    /// The highest-serial release of each of `services` that has one, sorted by service name.
    func latestReleases(for services: [String]) async throws -> [ReleaseRecord]

    /// Releases of `service`, newest (highest serial) first, at most `limit`.
    func releases(service: String, limit: Int) async throws -> [ReleaseRecord]

    /// Every service that has a release or an agent running it, sorted by name.
    func serviceSummaries() async throws -> [ServiceSummary]

    /// Enrolls an agent, or re-enrolls the agent of the same name (same id, new token, new services).
    /// - Parameter proposedID: the id to give a new agent.
    func enrollAgent(
        proposedID: String,
        name: String,
        hostname: String,
        services: [String],
        tokenHash: String,
        at date: Date
    ) async throws -> AgentRecord

    /// The agent with `id`, or `nil`.
    func agent(id: String) async throws -> AgentRecord?

    /// Every agent, sorted by name.
    func agents() async throws -> [AgentRecord]

    /// Records a status report: the latest per service, one history entry (keeping the newest `historyLimit`), and
    /// the agent's last-seen time, version and process manager.
    /// - Throws: `StoreError.unknownAgent`.
    func recordStatus(_ report: StatusReport, agentID: String, receivedAt date: Date, historyLimit: Int) async throws

    /// The latest status of every (agent, service) pair that reported.
    func serviceStatuses() async throws -> [ServiceStatusRecord]

    /// An agent's stored reports, newest first, at most `limit`.
    func statusHistory(agentID: String, limit: Int) async throws -> [StatusHistoryEntry]

    /// The latest status of every agent for `service`.
    func serviceStatuses(service: String) async throws -> [ServiceStatusRecord]

    /// The latest status of every service `agentID` reported.
    func serviceStatuses(agentID: String) async throws -> [ServiceStatusRecord]

    /// The stored releases among `keys` (missing ones are left out), sorted by service then serial.
    func releases(_ keys: [ReleaseKey]) async throws -> [ReleaseRecord]

    // MARK: Rollouts

    /// The latest (highest-serial) rollout of each of `services` that has one, sorted by service; every service's
    /// when `services` is `nil`.
    func latestRollouts(for services: [String]?) async throws -> [RolloutRecord]

    /// Rollouts of `service`, newest first, at most `limit`.
    func rollouts(service: String, limit: Int) async throws -> [RolloutRecord]

    /// Rollouts that are rolling or paused (the ones still evaluated), sorted by service.
    func activeRollouts() async throws -> [RolloutRecord]

    /// Writes `rollout`'s state, wave and reason, and `events`, atomically — only if the stored rollout is still at
    /// `revision` (compare-and-set, so two evaluations or replicas never both advance a wave).
    /// - Returns: whether the update happened.
    func updateRollout(_ rollout: RolloutRecord, expecting revision: RolloutRevision, events: [RolloutEventDraft]) async throws -> Bool

    /// Stores events (keeping the newest `EventRetention.limit`).
    func recordEvents(_ events: [RolloutEventDraft]) async throws

    /// Events, newest first, at most `limit`, of `service` or of every service.
    func events(service: String?, limit: Int) async throws -> [RolloutEvent]

    /// Closes the database. No call may follow.
    func close() async throws
}

extension ControllerStore {
    /// Stores a release that reaches every agent at once (an `all` rollout, completed), superseding any open
    /// rollout of its service.
    /// - Throws: `StoreError.staleSerial` unless its serial is above every stored serial of its service.
    func insertRelease(_ release: ReleaseRecord) async throws {
        _ = try await insertRelease(release, rollout: RolloutPlan(parameters: RolloutParameters(), agentOrder: []), events: [])
    }
}

/// How many events the store keeps.
enum EventRetention {
    /// Older events are deleted when newer ones are stored. 10 000.
    static let limit = 10_000
}
