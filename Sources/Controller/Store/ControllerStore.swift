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

    /// Stores a release.
    /// - Throws: `StoreError.staleSerial` unless its serial is above every stored serial of its service.
    func insertRelease(_ release: ReleaseRecord) async throws

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

    /// Closes the database. No call may follow.
    func close() async throws
}
