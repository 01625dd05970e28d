import Shared

/// What the agent should do about one service's entry in the desired state.
enum ServiceDecision: Sendable, Equatable {
    /// A newer, verified, admitted release to install.
    case install(Release, payload: [UInt8])
    /// The desired release is the one applied (or being recovered): nothing new.
    case keep
    /// The desired serial already failed its health gate here; it is not retried until a newer serial arrives.
    case skipFailed(serial: Int64)
    /// Refused: bad signature, invalid document, expired, replayed older serial.
    case refuse(serial: Int64?, reason: String)
}

/// A release refused for a service this instance does not run (or whose service could not be read at all).
struct ForeignRefusal: Sendable, Equatable {
    var service: String?
    var serial: Int64?
    var reason: String
}

/// Turns a desired-state document into per-service decisions: signature threshold, document validity, service
/// membership, serial order and expiry. Pure: the clock is injected through `ReleaseAdmission`.
struct DesiredStateEvaluator: Sendable {
    /// The `release` role of the newest accepted trust root (`AgentTrust`).
    var policy: TrustPolicy
    var admission: ReleaseAdmission
    /// The services this instance runs.
    var services: Set<String>
    /// Why no new release may be installed (the trust root expired, or a newer one could not be fetched or verified),
    /// or `nil`. The applied release is kept and an interrupted install resumed (both were admitted before); any other
    /// release is refused with this reason.
    var trustProblem: String? = nil

    struct Result: Sendable, Equatable {
        /// The best decision per service: an install or keep wins over a refusal of another envelope.
        var decisions: [String: ServiceDecision] = [:]
        /// Every refusal per service (a tampered newer envelope is reported even when an older one is kept).
        var refusals: [String: [Refusal]] = [:]
        var foreign: [ForeignRefusal] = []
    }

    struct Refusal: Sendable, Equatable {
        var serial: Int64?
        var reason: String
    }

    func evaluate(_ desired: DesiredState, state: AgentState) -> Result {
        var result = Result()
        // Highest serial first, so a duplicate entry for a service cannot shadow a newer one.
        let candidates = desired.releases.map { (envelope: $0, claim: Self.claim(of: $0)) }
            .sorted { ($0.claim?.serial ?? 0) > ($1.claim?.serial ?? 0) }
        for (envelope, claim) in candidates {
            let (service, decision) = evaluate(envelope, claim: claim, state: state)
            guard let service, services.contains(service) else {
                let reason: String
                if case .refuse(_, let why) = decision { reason = why } else { reason = "not a service this instance runs" }
                result.foreign.append(ForeignRefusal(service: service ?? claim?.service, serial: claim?.serial, reason: reason))
                continue
            }
            if case .refuse(let serial, let reason) = decision {
                result.refusals[service, default: []].append(Refusal(serial: serial, reason: reason))
            }
            // Keep the first (highest-serial) decision that is not a refusal; a refusal only when nothing better exists.
            if let existing = result.decisions[service], !Self.isRefusal(existing) { continue }
            result.decisions[service] = decision
        }
        return result
    }

    private func evaluate(_ envelope: Envelope, claim: Claim?, state: AgentState) -> (String?, ServiceDecision) {
        let verified: VerifiedPayload
        do {
            verified = try policy.verify(envelope, expecting: Release.payloadType)
        } catch {
            return (claim?.service, .refuse(serial: claim?.serial, reason: "signature check failed: \(error)"))
        }
        let release: Release
        do {
            release = try Release.decode(verified.payload)
        } catch {
            return (claim?.service, .refuse(serial: claim?.serial, reason: "invalid release document: \(error)"))
        }
        guard services.contains(release.service) else {
            return (release.service, .refuse(serial: release.serial, reason: "service \(release.service) is not one this instance runs"))
        }
        let serviceState = state[release.service]
        if release.serial == serviceState.applied?.serial { return (release.service, .keep) }
        if serviceState.hasFailed(release.serial) { return (release.service, .skipFailed(serial: release.serial)) }
        if release.serial == serviceState.pending?.serial {
            // An install interrupted by a crash: resume it (the serial was accepted before the crash).
            return (release.service, .install(release, payload: verified.payload))
        }
        if let trustProblem { return (release.service, .refuse(serial: release.serial, reason: trustProblem)) }
        do {
            try admission.check(release, lastAcceptedSerial: serviceState.highestAcceptedSerial)
        } catch {
            return (release.service, .refuse(serial: release.serial, reason: "\(error)"))
        }
        return (release.service, .install(release, payload: verified.payload))
    }

    private static func isRefusal(_ decision: ServiceDecision) -> Bool {
        if case .refuse = decision { return true }
        return false
    }

    /// What an envelope claims before it is verified — used only to attribute a refusal in reports.
    struct Claim: Sendable, Equatable {
        var service: String
        /// `nil` when the payload gives none a release could have: the refusal is recorded and reported without one.
        var serial: Int64?
    }

    static func claim(of envelope: Envelope) -> Claim? {
        guard case .object(let fields)? = try? JSONValue.parse(envelope.payload),
            case .string(let service)? = fields["service"], Release.isValidServiceName(service)
        else { return nil }
        guard case .integer(let serial)? = fields["serial"], (1...Release.maximumSerial).contains(serial) else {
            return Claim(service: service, serial: nil)
        }
        return Claim(service: service, serial: serial)
    }
}
