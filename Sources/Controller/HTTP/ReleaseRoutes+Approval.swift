import Foundation
import Hummingbird
import Shared

/// `POST /v1/services/{service}/releases/{serial}/signatures` with `{"signatures": [{"keyid": "...", "sig": "..."}]}`:
/// an approver's signatures over the stored payload of a release awaiting approval (two-person rule).
///
/// Each signature must verify under a key of the newest trust root's `release` role and come from a key that has not
/// signed the release yet (a key counts once). The signatures are added to the stored envelope; when the distinct
/// release keys reach the threshold the rollout starts (`RolloutStateMachine.approved`) and the service's agents are
/// woken. The controller only checks and stores: the signatures were made on the approver's machine.
extension ReleaseRoutes {
    /// Largest approval body: a handful of signatures.
    static let maximumApprovalBytes = 64 * 1024

    func approve(_ request: Request, context: FerryRequestContext) async throws -> Response {
        let principal = try context.authenticated()
        let service = context.parameters.get("service") ?? ""
        guard Release.isValidServiceName(service) else {
            throw APIError.badRequest("invalid_service", "\"\(service.prefix(80))\" is not a service name (^[a-z0-9][a-z0-9-]{0,62}$)")
        }
        let serialText = context.parameters.get("serial") ?? ""
        guard let serial = Int64(serialText), (1...Release.maximumSerial).contains(serial) else {
            throw APIError.badRequest("invalid_serial", "\"\(serialText.prefix(40))\" is not a serial (an integer from 1 to 2^53)")
        }
        let bytes = try await core.body(
            of: request,
            context: context,
            limit: Self.maximumApprovalBytes,
            what: "the approval"
        )
        let offered: [Envelope.Signature]
        do {
            offered = try Self.approvalSignatures(bytes)
        } catch {
            throw APIError.document(error, what: "approval")
        }

        guard let record = try await core.store.releases([ReleaseKey(service: service, serial: serial)]).first else {
            throw APIError.notFound("unknown_release", "service \(service) has no release with serial \(serial)")
        }
        guard let rollout = try await core.store.rollout(service: service, serial: serial) else {
            throw APIError(
                .conflict,
                "not_awaiting_approval",
                "serial \(serial) of \(service) has no rollout: it was published before approvals existed"
            )
        }
        guard rollout.state == .awaitingApproval else {
            throw APIError(
                .conflict,
                "not_awaiting_approval",
                "\(RolloutTransitionError.notAwaitingApproval(service: service, serial: serial, state: rollout.state))"
            )
        }
        // An approval the next day of a release that expired meanwhile would start a rollout every agent refuses.
        do {
            try ReleaseAdmission(now: core.now).checkExpiry(try Release.decode(record.envelope.payload))
        } catch let error as AdmissionError {
            throw APIError.unprocessable(
                "release_expired",
                "\(error); it can no longer be approved: publish it again with a new serial (ferry-controller publish ... --expires-in)"
            )
        }
        let trust = try await currentTrust()
        let policy = trust.root.policy(for: .release)
        let existing = try Self.signers(of: record.envelope, under: policy)
        var added: [Envelope.Signature] = []
        var newKeys: [String] = []
        for (index, signature) in offered.enumerated() {
            let single = Envelope(payloadType: record.envelope.payloadType, payload: record.envelope.payload, signatures: [signature])
            let keyID: String
            do {
                guard let verified = try policy.verify(single, expecting: Release.payloadType, threshold: 1).keyIDs.first else { continue }
                keyID = verified
            } catch {
                throw Self.approvalSignatureError(error, index: index)
            }
            guard !existing.contains(keyID), !newKeys.contains(keyID) else {
                throw APIError(
                    .conflict,
                    "already_signed",
                    "signatures[\(index)]: key \(keyID.prefix(12)) already signed serial \(serial) of \(service); a key counts once, so a "
                        + "second approver signs with their own release key"
                )
            }
            newKeys.append(keyID)
            added.append(Envelope.Signature(keyid: keyID, sig: signature.sig))
        }
        var envelope = record.envelope
        envelope.signatures += added
        guard envelope.signatures.count <= Limits.signatures else {
            throw APIError.unprocessable(
                "too_many_signatures",
                "the release would carry \(envelope.signatures.count) signatures, the limit is \(Limits.signatures)"
            )
        }
        let signedBy = try Self.signers(of: envelope, under: policy).sorted()
        let required = trust.root.releaseRole.threshold

        let members = try await rolloutAgents(service: service).map(\.id)
        var machine = RolloutStateMachine(rollout)
        let decided: RolloutStateMachine.Action
        do {
            decided = try machine.approved(
                by: principal.name,
                newKeys: newKeys,
                signedBy: signedBy,
                required: required,
                agentOrder: members,
                at: core.now()
            )
        } catch {
            throw APIError(.conflict, "not_awaiting_approval", "\(error)")
        }
        guard case .persist(let transition) = decided else {
            throw APIError(.conflict, "not_awaiting_approval", "serial \(serial) of \(service) is not awaiting approval")
        }
        let approval = ReleaseApproval(
            service: service,
            serial: serial,
            envelope: envelope,
            signedBy: signedBy,
            previousSignedBy: record.signedBy,
            signaturesRequired: required,
            transition: transition
        )
        guard try await core.store.recordApproval(approval) else {
            throw APIError(
                .conflict,
                "approval_conflict",
                "serial \(serial) of \(service) changed while this approval was checked (another approval, a newer publish, an abort); "
                    + "run the command again"
            )
        }
        if transition.changesDesiredState { core.desiredStates.rolloutChanged(service: service) }
        core.logger.info(
            "Release approved",
            metadata: [
                "ferry.service": "\(service)", "ferry.serial": "\(serial)", "ferry.token": "\(principal.name)",
                "ferry.keys": "\(newKeys.map { String($0.prefix(12)) }.joined(separator: ","))",
                "ferry.signatures": "\(signedBy.count)/\(required)", "ferry.rollout.state": "\(transition.rollout.state.rawValue)",
            ]
        )
        var updated = record
        updated.envelope = envelope
        updated.signedBy = signedBy
        updated.signaturesRequired = required
        var body = Self.summary(updated)
        if case .object(var fields) = body {
            fields["approvedBy"] = .string(principal.name)
            fields["addedKeys"] = .array(newKeys.map { .string($0) })
            // As stored: its members are those still enrolled as the approval committed.
            let stored = try await core.store.rollout(service: service, serial: serial) ?? transition.rollout
            fields["rollout"] = try await RolloutView.load([stored], from: core.store).first?.json ?? .null
            body = .object(fields)
        }
        return JSONResponse.make(body)
    }

    /// The signatures of an approval body: `{"signatures": [...]}`, at least one.
    private static func approvalSignatures(_ bytes: [UInt8]) throws(DocumentError) -> [Envelope.Signature] {
        var reader = try ObjectReader(try JSONValue.parse(bytes), path: "")
        let items = try reader.required("signatures") { (value, path) throws(DocumentError) -> [JSONValue] in
            guard case .array(let items) = value else { throw .wrongType(field: path, expected: "array", got: value.typeName) }
            return items
        }
        try reader.rejectUnknownFields()
        guard !items.isEmpty else { throw .invalidValue(field: "signatures", reason: "at least one signature is required") }
        return try Envelope.signatures(items, path: "signatures")
    }

    /// The distinct release-role keys whose signatures of `envelope` verify (none is an empty list, not an error).
    private static func signers(of envelope: Envelope, under policy: TrustPolicy) throws -> [String] {
        do {
            return try policy.verify(envelope, expecting: Release.payloadType, threshold: 1).keyIDs
        } catch .thresholdNotMet {
            return []
        }
    }

    /// An offered signature that does not count: not by a release key, or not valid over the stored payload.
    private static func approvalSignatureError(_ error: TrustError, index: Int) -> APIError {
        switch error {
        case .thresholdNotMet(_, _, let failures, let untrusted) where failures.isEmpty && untrusted > 0:
            return .unprocessable(
                "untrusted_key",
                "signatures[\(index)] is not by a key of the trust root's release role; approvers sign with a release key"
            )
        case .thresholdNotMet:
            return .unprocessable(
                "bad_signature",
                "signatures[\(index)] does not verify over the stored release: sign the payload the controller lists for this serial"
            )
        default:
            return .unprocessable("bad_signature", "signatures[\(index)]: \(error)")
        }
    }
}
