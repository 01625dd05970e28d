import Foundation
import Shared

/// What `POST /v1/agents/{id}/status` does once the agent is authenticated and its body read: checks the report, stores
/// it (returning once its batch is committed) and tells the desired states and the rollouts. Shared by the route and by
/// `DesiredStatePollHandler`, which answers the reports of a healthy fleet before the router.
///
/// Nothing is changed unless it returns: every error is thrown before the report is stored (a rollout evaluation that
/// fails afterwards is logged, as the report is already accepted), so a caller may hand a refused report to the route,
/// which refuses it again with its error.
struct StatusReportIntake: Sendable {
    let core: ControllerCore

    /// Accepts the report `bytes` of agent `id` (already authenticated as that agent).
    /// - Throws: `APIError`: the document is not a status report (400/422), the agent is gone (404), a service is not
    ///   the agent's or appears twice (422), too many reports wait to be stored (503); or the store's error.
    func accept<Bytes: Collection>(_ bytes: Bytes, agentID id: String) async throws where Bytes.Element == UInt8 {
        let report: StatusReport
        do {
            report = try StatusReport(json: JSONValue.parse(bytes))
        } catch {
            throw APIError.document(error, what: "status report")
        }
        guard let agent = try await core.desiredStates.agent(id) else {
            throw APIError.notFound("unknown_agent", "agent \(id) is not enrolled here")
        }
        let assigned = Set(agent.services)
        if let stray = report.services.first(where: { !assigned.contains($0.service) }) {
            throw APIError.unprocessable(
                "unknown_service",
                "service \(stray.service) is not one this agent enrolled for (\(agent.services.joined(separator: ", ")))"
            )
        }
        var seen: Set<String> = []
        if let duplicate = report.services.first(where: { !seen.insert($0.service).inserted }) {
            throw APIError.unprocessable("invalid_document", "status report: service \(duplicate.service) appears twice")
        }
        // The stored statuses tell which failures are new (a failure becomes an event once): only a report that carries
        // failures needs them, so a healthy fleet's reports cost no read. The events are committed with the report.
        let previous = report.services.contains { !$0.failures.isEmpty } ? try await core.store.serviceStatuses(agentID: id) : []
        let written: StatusWriteResult
        let receivedAt = core.now()
        let events = RolloutEventDraft.newFailures(in: report, from: agent, previous: previous, at: receivedAt)
        do {
            // Returns once the batch holding the report (and its events) is committed: a 204 is never lost.
            written = try await core.statusReports.record(report, agentID: id, receivedAt: receivedAt, events: events)
        } catch let full as StatusReportQueue.Full {
            throw APIError(
                .serviceUnavailable,
                "status_queue_full",
                "\(full.pending) status reports are waiting to be stored; this one was not: send it again in a moment",
                headers: [.retryAfter: "1"]
            )
        }
        guard written.stored else {
            throw APIError.notFound("unknown_agent", "agent \(id) is not enrolled here")
        }
        core.metrics.statusReports.increment()
        if let conflict = core.identities.observe(agentID: id, hostname: report.hostname, before: written.hostnameBefore, at: receivedAt) {
            core.metrics.identityConflicts.increment()
            core.logger.warning(
                "Two running agents report as one agent: an image baked after the agent enrolled, a copied state directory or a stolen token. Their reports overwrite each other; remove the agent (ferry-controller agents remove, which revokes the shared token) and enroll each instance afresh",
                metadata: ["ferry.agent.id": "\(id)", "ferry.agent.hostnames": "\(conflict.hostnames.joined(separator: ", "))"]
            )
        }
        // A switch-back of a standing conflict is stored too: every controller's agent page shows it (an operator's
        // request may reach a controller neither host reports to), and so does this one after a restart.
        if let standing = core.identities.standing(agentID: id, at: receivedAt), standing.lastSwitchAt == receivedAt {
            do {
                try await core.store.recordIdentityConflict(agentID: id, standing, window: core.identities.window)
            } catch {
                core.logger.warning(
                    "Storing an identity conflict failed; it is shown once a later switch-back is stored",
                    metadata: ["ferry.agent.id": "\(id)", "error.message": "\(error)"]
                )
            }
        }
        var running: [String: Int64] = [:]
        for service in report.services { running[service.service] = service.serial }
        core.desiredStates.statusReceived(agentID: id, running: running)
        do {
            // Evaluated before answering, so a rollout's reaction to a report is visible once the report is accepted.
            try await core.rollouts.statusReceived(report, from: agent, receivedAt: receivedAt)
        } catch {
            // The report is stored; the timer evaluates the rollout again within a second.
            core.logger.warning(
                "Rollout evaluation after a status report failed",
                metadata: ["ferry.agent.id": "\(id)", "error.message": "\(error)"]
            )
        }
    }
}
