import Foundation
import Hummingbird
import Shared

/// `POST /v1/releases[?strategy=S&waveStableSeconds=N&maxFailures=N]` (operator), `GET /v1/services` (operator,
/// viewer), `GET /v1/services/{service}/releases` (operator: the answer carries each release's envelope, env included,
/// for `rollback` to re-sign and `approve` to co-sign), `POST /v1/services/{service}/releases/{serial}/signatures`
/// (operator: an approval, `ReleaseRoutes+Approval.swift`).
///
/// Releases are checked against the `release` role of the controller's newest trust root (`ControllerTrust`). A release
/// signed by at least one of its keys but fewer than its threshold is stored awaiting approval (two-person rule): its
/// rollout reaches no agent until enough release keys co-sign it.
struct ReleaseRoutes: Sendable {
    let core: ControllerCore

    /// Most releases one listing returns.
    static let maximumListing = 500

    func register(operators: RouterGroup<FerryRequestContext>, readers: RouterGroup<FerryRequestContext>) {
        operators.post("/v1/releases") { request, context in try await publish(request, context: context) }
        readers.get("/v1/services") { _, _ in try await services() }
        operators.get("/v1/services/:service/releases") { request, context in try await releases(request, context: context) }
        operators.post("/v1/services/:service/releases/:serial/signatures") { request, context in
            try await approve(request, context: context)
        }
    }

    private func publish(_ request: Request, context: FerryRequestContext) async throws -> Response {
        let principal = try context.authenticated()
        // The body stays the signed envelope: how it rolls out is not part of what was signed.
        let parameters: RolloutParameters
        do {
            parameters = try RolloutParameters(query: request.uri.queryParameters.map { (name: String($0.key), value: String($0.value)) })
        } catch {
            throw APIError.badRequest(error.code, "\(error)")
        }
        let bytes = try await core.body(
            of: request,
            context: context,
            limit: core.configuration.maximumBodyBytes,
            what: "the envelope"
        )
        let envelope: Envelope
        do {
            envelope = try Envelope.decode(bytes)
        } catch {
            throw APIError.document(error, what: "envelope")
        }
        let trust = try await currentTrust()
        let verified: VerifiedPayload
        do {
            verified = try ControllerTrust.releaseSignatures(of: envelope, under: trust)
        } catch {
            throw Self.signatureError(error)
        }
        let release: Release
        do {
            release = try Release.decode(verified.payload)
        } catch {
            throw APIError.unprocessable("invalid_release", "release: \(error)")
        }
        do {
            // Same grace as agents: refuse what no agent would install.
            try ReleaseAdmission(now: core.now).checkExpiry(release)
        } catch {
            throw APIError.unprocessable("release_expired", "\(error)")
        }
        // Pinned from the check that the artifact is stored until the release is: no prune of this controller removes it
        // in between (one removing it now is answered 503, like a copy being checked).
        let pinned = release.artifact.isRelative ? release.artifact.sha256 : nil
        if let pinned, !core.artifacts.retention.pin(pinned) { throw ArtifactRoutes.beingRemoved(pinned) }
        defer { if let pinned { core.artifacts.retention.unpin(pinned) } }
        if release.artifact.isRelative {
            let size: Int64
            switch try await core.artifacts.availability(of: release.artifact.sha256) {
            case .absent:
                throw APIError.unprocessable(
                    "unknown_artifact",
                    "artifact \(release.artifact.sha256.hex) is not stored here; upload it first (POST /v1/artifacts)"
                )
            case .checking(let checking): throw ArtifactRoutes.beingChecked(release.artifact.sha256, size: checking)
            case .local(let local), .shared(let local): size = local
            }
            guard size == release.artifact.size else {
                throw APIError.unprocessable(
                    "artifact_size_mismatch",
                    "artifact \(release.artifact.sha256.hex) has \(size) bytes, the release says \(release.artifact.size)"
                )
            }
        }
        let record = ReleaseRecord(
            service: release.service,
            serial: release.serial,
            version: release.version,
            artifactSHA256: release.artifact.sha256.hex,
            artifactSize: release.artifact.size,
            envelope: envelope,
            publishedBy: principal.name,
            createdAt: core.now(),
            signedBy: verified.keyIDs,
            signaturesRequired: trust.root.releaseRole.threshold
        )
        let agents = try await rolloutAgents(service: release.service)
        let plan = RolloutPlan(parameters: parameters, agentOrder: agents.map(\.id))
        let published: PublishedRollout
        do {
            published = try await core.store.insertRelease(
                record,
                rollout: RolloutStateMachine.publish(record, plan: plan),
                requiringStoredArtifact: release.artifact.isRelative && core.artifacts.configuration.shared != nil
            )
        } catch let error as StoreError {
            if case .unknownArtifact = error {
                // A prune through another controller removed it after this one's check: this controller's copy (if it
                // has one) is shared again at the next check, so uploading (or the CLI's publish) repairs it.
                core.artifacts.knownShared.remove(release.artifact.sha256)
                throw APIError.unprocessable(
                    "unknown_artifact",
                    "artifact \(release.artifact.sha256.hex) was removed by a prune; upload it again (POST /v1/artifacts), then publish"
                )
            }
            guard case .staleSerial = error else { throw error }
            // The very release again (the same signed document: a retry whose first answer was lost after the commit):
            // answered as stored, nothing changed. Another document under a stored serial stays a conflict.
            if let stored = try await core.store.release(service: release.service, serial: release.serial),
                stored.envelope.payload == envelope.payload
            {
                core.logger.info(
                    "Release publish repeated",
                    metadata: ["ferry.service": "\(release.service)", "ferry.serial": "\(release.serial)", "ferry.published_by": "\(principal.name)"]
                )
                // The same fields as the first answer (a pipeline reads `.rollout.state` whichever it got), as they
                // stand now (the rollout may have moved on: its agents' statuses are read whole). Best effort, as for
                // the first answer: the release is stored, and a 500 now would fail the pipeline.
                var view: RolloutView?
                if let rollout = try? await core.store.rollout(service: release.service, serial: release.serial) {
                    view = (try? await RolloutView.load([rollout], from: core.store).first) ?? RolloutView(rollout, names: [:], statuses: [:])
                }
                let body = Self.publishAnswer(stored, verifiedBy: verified.keyIDs, trust: trust, rollout: view, repeated: true)
                return JSONResponse.make(body, status: .ok)
            }
            throw APIError(.conflict, "stale_serial", "\(error)")
        }
        // Agents are woken when this handler ends — its answer ready, or a later step failed (the release is stored
        // either way): the rollout view below (a read, and a document naming every agent of the rollout) is no longer
        // built on event loops busy answering thousands of woken long-polls (issue 12: the CLI's publish waited behind
        // them). Cached states are dropped then too, before the answer leaves: a poll sent after `publish` returned
        // gets the new state. (The parked ones are woken once the snapshot their new states need is loaded again, see
        // `DesiredStateProvider.invalidateAllAndWake`.)
        defer { core.desiredStates.releasePublished(service: release.service) }
        core.metrics.releasesPublished.increment()
        core.logger.info(
            "Release published",
            metadata: [
                "ferry.service": "\(release.service)", "ferry.serial": "\(release.serial)", "ferry.version": "\(release.version)",
                "ferry.published_by": "\(principal.name)", "ferry.rollout.strategy": "\(parameters.strategy)",
            ]
        )
        let names = Dictionary(agents.map { ($0.id, $0.name) }, uniquingKeysWith: { first, _ in first })
        let rollout: RolloutView
        do {
            rollout = try await RolloutView.opened(published.rollout, names: names, from: core.store)
        } catch {
            // The release is committed: a 500 now would tell a CI pipeline the publish failed, and its retry would be
            // refused as a stale serial. The view is answered without the agents' statuses instead (a release just
            // published: nobody runs it yet; `GET /v1/rollouts/...` reads them).
            core.logger.warning(
                "Reading the new rollout's agent statuses failed; answering the publish without them",
                metadata: ["ferry.service": "\(release.service)", "ferry.serial": "\(release.serial)", "error.message": "\(error)"]
            )
            rollout = RolloutView(published.rollout, names: names, statuses: [:])
        }
        let body = Self.publishAnswer(record, verifiedBy: verified.keyIDs, trust: trust, rollout: rollout, repeated: false)
        return JSONResponse.make(body, status: .created)
    }

    /// The answer to a publish: the release's summary, the keys that verified it, the trust root's version and its
    /// rollout (`repeated`: the very release was stored before, by a publish whose answer was lost).
    static func publishAnswer(
        _ record: ReleaseRecord,
        verifiedBy keyIDs: [String],
        trust: TrustedRoot,
        rollout: RolloutView?,
        repeated: Bool
    ) -> JSONValue {
        guard case .object(var fields) = summary(record) else { return summary(record) }
        if repeated { fields["repeated"] = .bool(true) }
        fields["verifiedBy"] = .array(keyIDs.map { .string($0) })
        fields["trustRootVersion"] = .integer(trust.version)
        if let rollout { fields["rollout"] = rollout.json }
        return .object(fields)
    }

    /// The controller's newest trust root, usable for releases: a broken chain is a 500 naming it, an expired root a 422.
    func currentTrust() async throws -> TrustedRoot {
        let trust: TrustedRoot
        do {
            trust = try await core.trust.current(in: core.store)
        } catch let error as ControllerTrustError {
            core.logger.error("The stored trust roots do not follow from the pinned root", metadata: ["error.message": "\(error)"])
            throw APIError(.internalServerError, "trust_chain_broken", "\(error)")
        }
        guard !trust.root.isExpired(at: core.now(), grace: core.trust.clockSkewGrace) else {
            throw APIError.unprocessable(
                "trust_root_expired",
                "trust root version \(trust.version) expired at \(Timestamp.format(trust.root.expiresAt)): agents admit no new release "
                    + "under it (they keep running what they run). Publish a renewed root first (`ferry-controller root rotate`, "
                    + "`root sign`, `root publish`)"
            )
        }
        return trust
    }

    /// Signature failures, told apart so an operator knows whether to fix the key, the trust list or add signers.
    static func signatureError(_ error: TrustError) -> APIError {
        switch error {
        case .unexpectedPayloadType:
            return .unprocessable("wrong_payload_type", "\(error)")
        case .thresholdNotMet(_, let verified, let failures, let untrusted):
            if !failures.isEmpty { return .unprocessable("bad_signature", "\(error)") }
            if verified.isEmpty && untrusted > 0 {
                return .unprocessable("untrusted_key", "no signature is by a key this controller trusts: \(error)")
            }
            return .unprocessable("threshold_not_met", "\(error)")
        case .invalidThreshold:
            return APIError(.internalServerError, "internal_error", "the controller's trust policy is invalid")
        }
    }

    private func services() async throws -> Response {
        let summaries = try await core.store.serviceSummaries()
        let items: [JSONValue] = summaries.map { summary in
            var fields: [String: JSONValue] = [
                "name": .string(summary.name), "releases": .integer(Int64(summary.releaseCount)),
                "agents": .integer(Int64(summary.agentCount)),
            ]
            fields["latestSerial"] = summary.latestSerial.map { .integer($0) } ?? .null
            fields["latestVersion"] = summary.latestVersion.map { .string($0) } ?? .null
            return .object(fields)
        }
        return JSONResponse.make(.object(["services": .array(items)]))
    }

    private func releases(_ request: Request, context: FerryRequestContext) async throws -> Response {
        let service = context.parameters.get("service") ?? ""
        guard Release.isValidServiceName(service) else {
            throw APIError.badRequest("invalid_service", "\"\(service.prefix(80))\" is not a service name (^[a-z0-9][a-z0-9-]{0,62}$)")
        }
        var limit = 50
        if let text = request.uri.queryParameters.get("limit") {
            guard let value = Int(text), (1...Self.maximumListing).contains(value) else {
                throw APIError.badRequest("invalid_limit", "limit must be an integer from 1 to \(Self.maximumListing), got \"\(text.prefix(40))\"")
            }
            limit = value
        }
        var envelopes = true
        if let text = request.uri.queryParameters.get("envelopes") {
            guard let value = Bool(text) else {
                throw APIError.badRequest("invalid_envelopes", "envelopes must be true or false, got \"\(text.prefix(40))\"")
            }
            envelopes = value
        }
        let records = try await core.store.releases(service: service, limit: limit)
        // Releases published before rollouts existed have none; every other one has exactly one.
        var rollouts: [Int64: RolloutRecord] = [:]
        if let oldest = records.last?.serial {
            for rollout in try await core.store.rollouts(service: service, limit: limit) where rollout.serial >= oldest {
                rollouts[rollout.serial] = rollout
            }
        }
        let items: [JSONValue] = records.map { record in
            guard case .object(var fields) = Self.summary(record) else { return .null }
            fields["keyIds"] = .array(record.envelope.signatures.map { .string($0.keyid) })
            fields["rollout"] = rollouts[record.serial].map(Self.outcome(_:)) ?? .null
            if envelopes { fields["envelope"] = record.envelope.json }
            return .object(fields)
        }
        return JSONResponse.make(.object(["service": .string(service), "releases": .array(items)]))
    }

    /// How a release's rollout went (or goes): the strategy it was published with and where it stands.
    static func outcome(_ rollout: RolloutRecord) -> JSONValue {
        .object([
            "strategy": .string(rollout.strategy.description), "state": .string(rollout.state.rawValue),
            "reason": .string(rollout.reason), "waveStableSeconds": .integer(rollout.waveStable.components.seconds),
            "maxFailures": .integer(Int64(rollout.maxFailures)), "agents": .integer(Int64(rollout.agentOrder.count)),
            "updatedAt": .string(Timestamp.format(rollout.updatedAt)),
        ])
    }

    /// A release as listings and the publish answer show it.
    static func summary(_ record: ReleaseRecord) -> JSONValue {
        .object([
            "service": .string(record.service), "serial": .integer(record.serial), "version": .string(record.version),
            "artifact": .object(["sha256": .string(record.artifactSHA256), "size": .integer(record.artifactSize)]),
            "publishedBy": .string(record.publishedBy), "createdAt": .string(Timestamp.format(record.createdAt)),
            "signedBy": .array(record.signedBy.map { .string($0) }), "signaturesRequired": .integer(Int64(record.signaturesRequired)),
            "awaitingApproval": .bool(record.isAwaitingApproval),
        ])
    }

    /// A rollout's agents as it starts (at its publish, or at its approval): the service's agents now, by name then id.
    /// Agents enrolling later receive the stable serial until it completes. (Ids and names only: reading whole agents
    /// was about 40 % of a publish's time in the controller at 10,000 agents.)
    func rolloutAgents(service: String) async throws -> [AgentName] {
        try await core.store.agentNames(service: service).sorted { ($0.name, $0.id) < ($1.name, $1.id) }
    }
}
