import Foundation
import Shared

/// One rollout as `GET /v1/rollouts/{service}/{serial}` and the dashboard's rollout page show it: the rollout (as in
/// `GET /v1/rollouts`) and, per agent, where it stands with its latest status for the service and, when it failed the
/// serial, that failure with its diagnosis and log tails.
struct RolloutDetail: Sendable {
    var view: RolloutView
    /// The latest status of the service by agent id, with when it arrived.
    var statuses: [String: ServiceStatusRecord]

    /// How many failed agents' log tails the document carries whole; the others carry the fleet view's excerpt
    /// (`ReleaseFailure.fleetExcerpt`), and their agent's page the whole tails. A release that failed on ten thousand
    /// agents made this document (and the page that reloads it) up to gigabytes.
    static let wholeTails = 100

    /// The rollout of `serial` of `service`, or `nil` when there is none. `everyFailure`: read the evidence of every
    /// failed agent's failure (the document that lists every agent); otherwise only of the first `wholeTails` (the
    /// page, and the document that lists only failed agents).
    ///
    /// Statuses are read without their failures' diagnoses (`rolloutStatuses`), and the diagnoses then only for the
    /// agents shown with them, in chunks, each cut to the fleet excerpt as it arrives unless shown whole. Reading every
    /// status's log tails made each refresh of this page, after a release failed on 10,000 agents, decode up to
    /// 10,000 × 128 KiB.
    static func load(
        service: String,
        serial: Int64,
        everyFailure: Bool = false,
        from store: any ControllerStore
    ) async throws
        -> RolloutDetail?
    {
        guard let rollout = try await store.rollout(service: service, serial: serial) else { return nil }
        var statuses = try await store.rolloutStatuses(service: service)
        let names = try await store.agentNamesByID()
        let view = RolloutView(rollout, names: names, statuses: statuses.mapValues(\.status))
        var detail = RolloutDetail(view: view, statuses: statuses)
        let reported = view.agents.filter { detail.failure(of: $0) != nil }
        // Whole for the failed agents the page and `?agents=failed` list (the first `wholeTails` failed ones): an agent
        // that once refused the serial and runs it now reported a failure too, but is not listed there.
        let listed = reported.filter { $0.standing.progress == .failed }.prefix(wholeTails).map(\.id)
        let wholeTailAgents = Set(listed)
        let shown = everyFailure ? reported.map(\.id) : Array(listed)
        for start in stride(from: 0, to: shown.count, by: evidenceChunk) {
            let chunk = shown[start..<min(shown.count, start + evidenceChunk)]
            for record in try await store.serviceStatuses(agentIDs: Array(chunk)) where record.status.service == service {
                // A report that arrived after the read above keeps its failures without evidence: the evidence shown
                // is of the status the agent's standing was read from. Only the serial's failure takes its evidence
                // (a status lists up to 10 failures, each with its own).
                guard var slim = statuses[record.agentID], slim.updatedAt == record.updatedAt,
                    let evidence = record.status.failures.first(where: { $0.serial == serial }),
                    let index = slim.status.failures.firstIndex(where: { $0.serial == serial })
                else { continue }
                slim.status.failures[index] = wholeTailAgents.contains(record.agentID) ? evidence : evidence.fleetExcerpt
                statuses[record.agentID] = slim
            }
        }
        detail.statuses = statuses
        return detail
    }

    /// Agents whose statuses are read whole at once for their failures' evidence.
    static let evidenceChunk = 200

    /// The failure of the rollout's serial that `agent` reported, if it did: with its log tails whole for the first
    /// `wholeTails` failed agents, cut to the fleet excerpt for the others (without evidence when it was not read), as
    /// `load` left it.
    func failure(of agent: RolloutView.Agent) -> ReleaseFailure? {
        statuses[agent.id]?.status.failures.first { $0.serial == view.rollout.serial }
    }

    /// The rollout document plus `agents`, one entry per agent in rollout order.
    var json: JSONValue { json(onlyFailed: false) }

    /// The rollout document plus `agents`: one entry per agent in rollout order, or (`onlyFailed`) per failed agent,
    /// at most `wholeTails` of them, with `agentsListed` saying which.
    func json(onlyFailed: Bool) -> JSONValue {
        guard case .object(var fields) = view.json else { return view.json }
        let listed = onlyFailed ? Array(view.agents.filter { $0.standing.progress == .failed }.prefix(Self.wholeTails)) : view.agents
        fields["agentsListed"] = .string(onlyFailed ? "failed" : "all")
        fields["agents"] = .array(
            listed.map { agent in
                var entry: [String: JSONValue] = [
                    "id": .string(agent.id), "name": agent.name.map { .string($0) } ?? .null, "wave": .integer(Int64(agent.wave + 1)),
                    "reached": .bool(agent.reached), "progress": .string(agent.standing.progress.rawValue),
                    "failure": failure(of: agent)?.json ?? .null,
                ]
                if let record = statuses[agent.id] {
                    let status = record.status
                    entry["serial"] = status.serial.map { .integer($0) } ?? .null
                    entry["version"] = status.version.map { .string($0) } ?? .null
                    entry["phase"] = .string(status.phase.rawValue)
                    entry["health"] = .string(status.health.rawValue)
                    entry["message"] = .string(status.message)
                    entry["updatedAt"] = .string(Timestamp.format(record.updatedAt))
                }
                return .object(entry)
            }
        )
        return .object(fields)
    }
}
