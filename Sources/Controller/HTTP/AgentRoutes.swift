import Foundation
import Hummingbird
import Shared

/// `POST /v1/agents` (enroll), `GET /v1/agents/{id}/desired-state` and `POST /v1/agents/{id}/status` (that agent).
struct AgentRoutes: Sendable {
    let core: ControllerCore

    func register(on router: Router<BasicRequestContext>) {
        router.post("/v1/agents") { request, _ in try await enroll(request) }
        router.get("/v1/agents/:id/desired-state") { request, context in try await desiredState(request, context: context) }
        router.post("/v1/agents/:id/status") { request, context in try await status(request, context: context) }
    }

    private func enroll(_ request: Request) async throws -> Response {
        let principal = try await core.authenticator.require([.enroll, .operator], for: request)
        let bytes = try await RequestBodyReader.collect(request, limit: 64 * 1024, what: "the enrolment request")
        let enrollment: EnrollRequest
        do {
            enrollment = try EnrollRequest(json: JSONValue.parse(bytes))
        } catch {
            throw APIError.document(error, what: "enrolment")
        }
        let token = Token.generate()
        let agent = try await core.store.enrollAgent(
            proposedID: Self.newAgentID(),
            name: enrollment.name,
            hostname: enrollment.hostname,
            services: enrollment.services,
            tokenHash: Token.digest(token),
            at: core.now()
        )
        // A re-enrolment keeps the id and rotates the token: the old one must stop working at once.
        core.authenticator.forgetAgent(id: agent.id)
        core.desiredStates.agentEnrolled(id: agent.id)
        core.logger.info(
            "Agent enrolled",
            metadata: ["ferry.agent.id": "\(agent.id)", "ferry.agent.name": "\(agent.name)", "ferry.token": "\(principal.name)"]
        )
        return JSONResponse.make(EnrollResponse(agentId: agent.id, token: token).json, status: .created)
    }

    /// `agt_` and 16 random hex characters.
    static func newAgentID() -> String {
        var generator = SystemRandomNumberGenerator()
        return "agt_" + Hex.encode((0..<8).map { _ in UInt8.random(in: .min ... .max, using: &generator) })
    }

    /// The agent id in the path, which must be the caller's own.
    private func ownAgentID(_ request: Request, context: BasicRequestContext) async throws -> String {
        let principal = try await core.authenticator.require([.agent], for: request)
        let id = context.parameters.get("id") ?? ""
        guard principal.agentID == id else {
            throw APIError.forbidden("this token belongs to agent \(principal.agentID ?? "?"); it cannot act for agent \(id.prefix(80))")
        }
        return id
    }

    private func desiredState(_ request: Request, context: BasicRequestContext) async throws -> Response {
        let id = try await ownAgentID(request, context: context)
        var wait = Duration.zero
        if request.uri.query != nil, let text = request.uri.queryParameters.get("wait") {
            let maximum = core.configuration.maximumWait.components.seconds
            guard let seconds = Int64(text), (0...maximum).contains(seconds) else {
                throw APIError.badRequest("invalid_wait", "wait must be a whole number of seconds from 0 to \(maximum), got \"\(text.prefix(40))\"")
            }
            wait = .seconds(seconds)
        }
        let ifNoneMatch = request.headers[.ifNoneMatch]
        var state = try await currentState(id)
        // Long-poll: while the client already has this state, park until something that may concern it happens.
        let deadline = wait > .zero ? ContinuousClock.now + wait : nil
        while let deadline, let ifNoneMatch, state.rendered.isMatched(byIfNoneMatch: ifNoneMatch) {
            let remaining = deadline - ContinuousClock.now
            guard remaining > .zero else { break }
            let wake = await core.desiredStates.hub.wait(
                agentID: id,
                services: state.rendered.services,
                after: state.generation,
                timeout: remaining
            )
            state = try await currentState(id)
            if wake != .changed { break }
        }
        let headers: HTTPFields = [.eTag: state.rendered.etag, .cacheControl: "private, no-cache"]
        if let ifNoneMatch, state.rendered.isMatched(byIfNoneMatch: ifNoneMatch) {
            core.metrics.desiredStateNotModified.increment()
            return Response(status: .notModified, headers: headers)
        }
        core.metrics.desiredStateFull.increment()
        var fields = headers
        fields[.contentType] = "application/json; charset=utf-8"
        return Response(status: .ok, headers: fields, body: .init(byteBuffer: state.rendered.body))
    }

    /// The agent's state and the long-poll generation read before it (see `LongPollHub.generation`).
    private func currentState(_ id: String) async throws -> (rendered: RenderedDesiredState, generation: UInt64) {
        let generation = core.desiredStates.hub.generation
        guard let rendered = try await core.desiredStates.current(for: id) else {
            throw APIError.notFound("unknown_agent", "agent \(id) is not enrolled here")
        }
        return (rendered, generation)
    }

    private func status(_ request: Request, context: BasicRequestContext) async throws -> Response {
        let id = try await ownAgentID(request, context: context)
        let bytes = try await RequestBodyReader.collect(request, limit: core.configuration.maximumStatusBytes, what: "the status report")
        let report: StatusReport
        do {
            report = try StatusReport(json: JSONValue.parse(bytes))
        } catch {
            throw APIError.document(error, what: "status report")
        }
        guard let agent = try await core.store.agent(id: id) else {
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
        let previous = try await core.store.serviceStatuses(agentID: id)
        try await core.store.recordStatus(report, agentID: id, receivedAt: core.now(), historyLimit: core.configuration.statusHistoryLimit)
        core.metrics.statusReports.increment()
        var running: [String: Int64] = [:]
        for service in report.services { running[service.service] = service.serial }
        core.desiredStates.statusReceived(agentID: id, running: running)
        do {
            // Evaluated before answering, so a rollout's reaction to a report is visible once the report is accepted.
            try await core.rollouts.statusReceived(report, from: agent, previous: previous)
        } catch {
            // The report is stored; the timer evaluates the rollout again within a second.
            core.logger.warning(
                "Rollout evaluation after a status report failed",
                metadata: ["ferry.agent.id": "\(id)", "error.message": "\(error)"]
            )
        }
        return Response(status: .noContent)
    }
}
