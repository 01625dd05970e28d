import Foundation
import Hummingbird
import Shared

/// `POST /v1/agents` (enroll token or operator), `DELETE /v1/agents/{name}` (operator),
/// `GET /v1/agents/{id}/desired-state` and `POST /v1/agents/{id}/status` (that agent).
struct AgentRoutes: Sendable {
    let core: ControllerCore

    func register(
        enrollment: RouterGroup<FerryRequestContext>,
        agents: RouterGroup<FerryRequestContext>,
        operators: RouterGroup<FerryRequestContext>
    ) {
        enrollment.post("/v1/agents") { request, context in try await enroll(request, context: context) }
        // One parameter name at this position for the router: the agent's id on its own routes, its name on DELETE.
        operators.delete("/v1/agents/:agent") { _, context in try await remove(context: context) }
        agents.get("/v1/agents/:agent/desired-state") { request, context in try await desiredState(request, context: context) }
        agents.post("/v1/agents/:agent/status") { request, context in try await status(request, context: context) }
    }

    /// Enrolls a new agent. An enrollment token only ever creates agents, for services in its scope, while it is
    /// valid and has uses left; an operator token may also replace the agent of the same name (`"replace": true`).
    private func enroll(_ request: Request, context: FerryRequestContext) async throws -> Response {
        let principal = try context.authenticated()
        let bytes = try await core.body(
            of: request,
            context: context,
            limit: 64 * 1024,
            what: "the enrolment request"
        )
        let enrollment: EnrollRequest
        do {
            enrollment = try EnrollRequest(json: JSONValue.parse(bytes))
        } catch {
            throw APIError.document(error, what: "enrolment")
        }
        let mode: EnrollmentMode
        switch principal.role {
        case .operator:
            mode = enrollment.replace ? .replace : .create(consumingToken: nil)
        case .enroll:
            guard !enrollment.replace else {
                throw APIError(
                    .forbidden,
                    "replace_needs_operator",
                    "an enrollment token cannot replace an agent; re-enroll with an operator token and --replace, or remove the "
                        + "agent first (ferry-controller agents remove NAME; where enrolments are attested, an instance enrolled "
                        + "once then still needs an operator token)"
                )
            }
            guard let tokenID = principal.tokenID, let scope = principal.scope else {
                throw APIError(.internalServerError, "internal_error", "the enrollment token has no id or scope; see the controller's log")
            }
            let outside = scope.outside(enrollment.services)
            guard outside.isEmpty else {
                throw APIError(
                    .forbidden,
                    "out_of_scope",
                    "enrollment token \(tokenID) may enroll for \(scope.text), not for \(outside.joined(separator: ", ")); ask an "
                        + "operator for a token with --service \(outside[0])"
                )
            }
            mode = .create(consumingToken: tokenID)
        case .viewer, .agent:
            throw APIError.forbidden("this needs a token with role enroll or operator; this token has role \(principal.role.rawValue)")
        }
        let instance = try attestedInstance(enrollment, role: principal.role)
        // The agent's own token when it chose one (only its digest comes here), else the one issued now.
        let issued = Token.generate()
        let tokenHash = enrollment.tokenSHA256?.hex ?? Token.digest(issued)
        // A replace for fewer services takes the agent out of the others' rollouts: their cached states (the agents each
        // wave reached) go, below. Read only for a replace.
        let servicesBefore = mode == .replace ? Set(try await core.store.agent(named: enrollment.name)?.services ?? []) : []
        let enrolled: (agent: AgentRecord, replaced: Bool, repeated: Bool)
        do {
            enrolled = try await core.store.enrollAgent(
                proposedID: Self.newAgentID(),
                name: enrollment.name,
                hostname: enrollment.hostname,
                services: enrollment.services,
                tokenHash: tokenHash,
                mode: mode,
                instanceID: instance?.instanceID,
                at: core.now()
            )
        } catch let error as StoreError {
            switch error {
            case .instanceEnrolled(let instanceID, let holder), .instanceEnrolledBefore(let instanceID, let holder):
                core.metrics.enrolmentRefused(.instanceEnrolled)
                core.logger.warning(
                    "Enrolment refused: the instance is enrolled already, or was",
                    metadata: ["ferry.instance.id": "\(instanceID)", "ferry.agent.name": "\(holder)", "ferry.token.id": "\(principal.tokenID ?? "")"]
                )
            default:
                break
            }
            throw Self.enrollmentError(error, name: enrollment.name)
        }
        let agent = enrolled.agent
        if enrolled.repeated, enrollment.tokenSHA256 != nil {
            // A retry whose first answer was lost: the same answer again, nothing changed.
            core.logger.info(
                "Agent enrolment repeated",
                metadata: ["ferry.agent.id": "\(agent.id)", "ferry.agent.name": "\(agent.name)", "ferry.token.id": "\(principal.tokenID ?? "")"]
            )
            return JSONResponse.make(EnrollAcknowledgement(agentID: agent.id).json, status: .ok)
        }
        if enrolled.replaced {
            // The old token must stop working at once, here and in any cache; a conflict of two hosts sharing it ends
            // with it (the store cleared its record of one).
            core.tokenRevoked()
            core.identities.forget(agentID: agent.id)
            core.statusReports.forget(agentID: agent.id)
            let dropped = servicesBefore.subtracting(agent.services)
            if !dropped.isEmpty { core.desiredStates.invalidateAllAndWake(services: dropped) }
        }
        core.desiredStates.agentEnrolled(id: agent.id)
        core.logger.info(
            enrolled.replaced ? "Agent replaced" : "Agent enrolled",
            metadata: [
                "ferry.agent.id": "\(agent.id)", "ferry.agent.name": "\(agent.name)", "ferry.token": "\(principal.name)",
                "ferry.token.id": "\(principal.tokenID ?? "")", "ferry.instance.id": "\(instance?.instanceID ?? "")",
            ]
        )
        if enrollment.tokenSHA256 != nil { return JSONResponse.make(EnrollAcknowledgement(agentID: agent.id).json, status: .created) }
        return JSONResponse.make(EnrollResponse(agentID: agent.id, token: issued).json, status: .created)
    }

    /// The instance the enrolment proves, when this controller checks instance identity documents
    /// (`--instance-identity-cert`): an enrollment token's enrolment must carry a valid one; an operator's may (and is
    /// then bound to it). Without that setting no document is read, and none binds.
    private func attestedInstance(_ enrollment: EnrollRequest, role: TokenRole) throws -> AttestedInstance? {
        guard let verifier = core.configuration.instanceIdentity else { return nil }
        guard let proof = enrollment.instanceIdentity else {
            guard role == .operator else {
                core.metrics.enrolmentRefused(.attestationRequired)
                throw APIError(
                    .forbidden,
                    EnrolmentRefusal.attestationRequired.rawValue,
                    "this controller enrolls only EC2 instances that prove their identity: run ferry-agent enroll with "
                        + "--machine-identity ec2 on the instance, so it sends its signed instance identity document"
                )
            }
            return nil
        }
        do {
            return try verifier.verify(proof)
        } catch {
            core.logger.warning("Enrolment refused: instance identity not proven", metadata: ["ferry.reason": "\(error)"])
            let reason: EnrolmentRefusal = error.kind == .accountNotAllowed ? .accountNotAllowed : .attestationInvalid
            core.metrics.enrolmentRefused(reason)
            throw APIError(.forbidden, reason.rawValue, "\(error)")
        }
    }

    static func enrollmentError(_ error: StoreError, name: String) -> any Error {
        switch error {
        case .agentExists:
            return APIError(
                .conflict,
                "agent_exists",
                "an agent named \(name.prefix(128)) is already enrolled; an enrollment token only creates new agents. To enroll "
                    + "this instance again, re-enroll with an operator token and --replace, or remove the old agent "
                    + "(ferry-controller agents remove \(name.prefix(128))) first (where enrolments are attested, an instance "
                    + "enrolled once then still needs an operator token)"
            )
        case .instanceEnrolled(let instanceID, let holder):
            return APIError(
                .conflict,
                EnrolmentRefusal.instanceEnrolled.rawValue,
                "instance \(instanceID) is already enrolled as agent \(holder.prefix(128)); an instance enrolls once. To enroll it "
                    + "again, re-enroll it with an operator token and --replace"
            )
        case .instanceEnrolledBefore(let instanceID, let former):
            return APIError(
                .conflict,
                EnrolmentRefusal.instanceEnrolled.rawValue,
                "instance \(instanceID) was enrolled before, as agent \(former.prefix(128)), which has been removed; an enrollment token "
                    + "enrolls an instance once (a copy of its identity document must not enrol it again once its agent is gone). "
                    + "To enroll it again, enroll it with an operator token"
            )
        case .tokenInUse:
            return APIError(
                .conflict,
                "token_in_use",
                "another agent holds the token this enrolment offers (an earlier enrolment under another name); offer a new one"
            )
        case .tokenUnusable(let id, let reason):
            let message = "enrollment token \(id) \(reason); ask an operator for a new one (ferry-controller token create --role enroll)"
            switch reason {
            case .expired:
                return APIError(.unauthorized, "token_expired", message, headers: [.wwwAuthenticate: Authenticator.Challenge.bearer.header])
            case .revoked:
                return APIError(.unauthorized, "token_revoked", message, headers: [.wwwAuthenticate: Authenticator.Challenge.bearer.header])
            case .unknown: return APIError.unauthorized(message, challenge: Authenticator.Challenge.bearer.header)
            case .usedUp: return APIError(.forbidden, "token_used_up", message)
            }
        default:
            return error
        }
    }

    /// Removes an agent: its token stops working at once; its status goes, the events keep their history.
    private func remove(context: FerryRequestContext) async throws -> Response {
        let principal = try context.authenticated()
        let raw = context.parameters.get("agent") ?? ""
        guard let name = raw.removingPercentEncoding, !name.isEmpty, name.utf8.count <= 128 else {
            throw APIError.badRequest("invalid_agent_name", "an agent name is 1 to 128 characters (percent-encoded in the path)")
        }
        guard let agent = try await core.store.removeAgent(name: name) else {
            throw APIError.notFound("unknown_agent", "no agent named \(name) is enrolled here (ferry-controller agents lists them)")
        }
        await core.agentsRemoved([agent])
        core.logger.info(
            "Agent removed",
            metadata: ["ferry.agent.id": "\(agent.id)", "ferry.agent.name": "\(agent.name)", "ferry.token": "\(principal.name)"]
        )
        let removed = JSONValue.object([
            "id": .string(agent.id), "name": .string(agent.name), "hostname": .string(agent.hostname),
            "services": .array(agent.services.map { .string($0) }),
        ])
        return JSONResponse.make(.object(["removed": removed]))
    }

    /// `agt_` and 16 random hex characters.
    static func newAgentID() -> String {
        var generator = SystemRandomNumberGenerator()
        return "agt_" + Hex.encode((0..<8).map { _ in UInt8.random(in: .min ... .max, using: &generator) })
    }

    /// The agent id in the path, which must be the caller's own.
    private func ownAgentID(context: FerryRequestContext) throws -> String {
        let principal = try context.authenticated()
        let id = context.parameters.get("agent") ?? ""
        guard principal.agentID == id else {
            throw APIError.forbidden("this token belongs to agent \(principal.agentID ?? "?"); it cannot act for agent \(id.prefix(80))")
        }
        return id
    }

    /// Parses the request and writes the answer; the long-poll itself is `DesiredStateProvider.state(for:ifNoneMatch:waitingUpTo:)`.
    private func desiredState(_ request: Request, context: FerryRequestContext) async throws -> Response {
        let id = try ownAgentID(context: context)
        var wait = Duration.zero
        if request.uri.query != nil, let text = request.uri.queryParameters.get("wait") {
            let maximum = core.configuration.maximumWait.components.seconds
            guard let seconds = Int64(text), (0...maximum).contains(seconds) else {
                throw APIError.badRequest("invalid_wait", "wait must be a whole number of seconds from 0 to \(maximum), got \"\(text.prefix(40))\"")
            }
            wait = .seconds(seconds)
        }
        let ifNoneMatch = request.headers[.ifNoneMatch]
        let principal = try context.authenticated()
        // A wait may outlast the token (revoked, or the agent replaced by an operator: the wake-up its re-enrolment sends
        // would otherwise hand the old token the state, new services' releases and their env values included).
        let confirm = { try await context.confirm(principal, with: core.authenticator) }
        guard let state = try await core.desiredStates.state(for: id, ifNoneMatch: ifNoneMatch, waitingUpTo: wait, confirm: confirm) else {
            throw APIError.notFound("unknown_agent", "agent \(id) is not enrolled here")
        }
        let headers: HTTPFields = [.eTag: state.etag, .cacheControl: "private, no-cache"]
        if let ifNoneMatch, state.isMatched(byIfNoneMatch: ifNoneMatch) {
            core.metrics.desiredStateNotModified.increment()
            return Response(status: .notModified, headers: headers)
        }
        core.metrics.desiredStateFull.increment()
        var fields = headers
        fields[.contentType] = "application/json; charset=utf-8"
        return Response(status: .ok, headers: fields, body: .init(byteBuffer: state.body))
    }

    private func status(_ request: Request, context: FerryRequestContext) async throws -> Response {
        let id = try ownAgentID(context: context)
        // The body counts against the token's share until the report is stored, as on the poll handler's fast path.
        try await core.withBody(of: request, context: context, limit: core.configuration.maximumStatusBytes, what: "the status report") {
            try await StatusReportIntake(core: core).accept($0, agentID: id)
        }
        return Response(status: .noContent)
    }
}
