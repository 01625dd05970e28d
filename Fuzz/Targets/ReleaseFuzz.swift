import Shared

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Envelope and release parsing and admission, as an agent does them on every desired state
/// (`Envelope`, `DesiredState`, `TrustPolicy`, `Release`, `ReleaseAdmission`, `DesiredStateEvaluator`).
///
/// The first byte picks how the rest is read (seeds for each mode are in `Fuzz/Corpus/release`):
/// - 0: an envelope's JSON text, verified against the harness's trusted key;
/// - 1: a desired-state document;
/// - 2: a release payload, signed here with the trusted key so that it gets past the signature check and its content
///   reaches the document checks and admission.
///
/// Oracles: every accepted envelope, desired state and release survives a round trip through its encoding; an install
/// decision is made only for a payload `Release.decode` accepts, for a service this instance runs, with a serial above
/// the one accepted here and not expired at the injected time; everything refused carries a reason.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRelease(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = fuzzBytes(data, size)
    guard let mode = bytes.first else { return 0 }
    let rest = Array(bytes.dropFirst())
    switch mode % 3 {
    case 0: envelopeText(rest)
    case 1: desiredStateText(rest)
    default: releasePayload(rest)
    }
    return 0
}

/// Keys and states shared by every run (built once).
private enum Fixture {
    /// A fixed key (seed bytes 1...32), so the seed corpus can carry envelopes it signed.
    static let key: SigningKey = {
        do {
            return try SigningKey(rawRepresentation: Array(1...32))
        } catch {
            FuzzCheck.require(false, "the harness key cannot be made: \(error)")
            fatalError()
        }
    }()
    static let policy: TrustPolicy = {
        do {
            return try TrustPolicy(trustedKeys: [key.publicKey], threshold: 1)
        } catch {
            FuzzCheck.require(false, "the harness policy cannot be made: \(error)")
            fatalError()
        }
    }()
    /// 2027-01-10T00:00:00Z: inside the validity of the seed releases.
    static let now = Date(timeIntervalSince1970: 1_799_539_200)
    static let admission = ReleaseAdmission(clockSkewGrace: .seconds(300), now: { now })
    static let services: Set<String> = ["api", "web"]
    static let evaluator = DesiredStateEvaluator(policy: policy, admission: admission, services: services)
    /// A fresh agent, and one that accepted serial 8 of `api` and applied 7 (`Tests/AgentTests/Fixtures/state-v1.json`).
    static let states: [AgentState] = [
        AgentState(),
        AgentState(services: [
            "api": ServiceState(
                highestAcceptedSerial: 8,
                failures: [ServiceState.Failure(serial: 5, reason: "not healthy", kind: .rolledBack)],
                phase: .running,
                message: "serial 7 is running"
            )
        ]),
    ]
}

private func envelopeText(_ bytes: [UInt8]) {
    let envelope: Envelope
    do {
        envelope = try Envelope.decode(bytes)
    } catch {
        FuzzCheck.require(!"\(error)".isEmpty, "an envelope refused without a reason")
        return
    }
    roundTrip(envelope)
    _ = DesiredStateEvaluator.claim(of: envelope)
    if let verified = try? Fixture.policy.verify(envelope, expecting: Release.payloadType) {
        FuzzCheck.require(verified.payload == envelope.payload, "verification changed the payload")
    }
    evaluate(DesiredState(agentID: "fuzz", pollSeconds: 15, releases: [envelope]))
}

private func desiredStateText(_ bytes: [UInt8]) {
    let desired: DesiredState
    do {
        desired = try DesiredState(json: JSONValue.parse(bytes))
    } catch {
        FuzzCheck.require(!"\(error)".isEmpty, "a desired state refused without a reason")
        return
    }
    let again = try? DesiredState(json: JSONValue.parse(Array(desired.json.encoded())))
    FuzzCheck.require(again == desired, "a desired state changed through its encoding")
    evaluate(desired)
}

private func releasePayload(_ bytes: [UInt8]) {
    guard bytes.count <= Limits.releasePayloadBytes else { return }
    let envelope: Envelope
    do {
        envelope = try Envelope.sign(payload: bytes, payloadType: Release.payloadType, with: [Fixture.key])
    } catch {
        FuzzCheck.require(false, "signing failed: \(error)")
        return
    }
    roundTrip(envelope)
    if let release = try? Release.decode(bytes) {
        let again = try? Release.decode(release.payload())
        FuzzCheck.require(again == release, "a release changed through its encoding: \(release) became \(String(describing: again))")
    }
    evaluate(DesiredState(agentID: "fuzz", pollSeconds: 15, releases: [envelope]))
}

private func roundTrip(_ envelope: Envelope) {
    let again = try? Envelope.decode(Array(envelope.encoded()))
    FuzzCheck.require(again == envelope, "an envelope changed through its encoding")
}

/// Runs the agent's evaluation against each fixture state and checks every decision against the documents.
private func evaluate(_ desired: DesiredState) {
    for state in Fixture.states {
        let result = Fixture.evaluator.evaluate(desired, state: state)
        for (service, decision) in result.decisions {
            FuzzCheck.require(Fixture.services.contains(service), "a decision for \(service), which this instance does not run")
            switch decision {
            case .install(let release, let payload):
                let decoded = try? Release.decode(payload)
                FuzzCheck.require(decoded == release, "an install of a release its payload does not decode to")
                FuzzCheck.require(release.service == service, "an install of \(release.service) filed under \(service)")
                FuzzCheck.require(
                    desired.releases.contains { $0.payload == payload && (try? Fixture.policy.verify($0, expecting: Release.payloadType)) != nil },
                    "an install of a payload no trusted signature covers"
                )
                let serviceState = state[service]
                if release.serial != serviceState.pending?.serial {
                    FuzzCheck.require(
                        release.serial > (serviceState.highestAcceptedSerial ?? 0),
                        "serial \(release.serial) installed although \(serviceState.highestAcceptedSerial ?? 0) was accepted"
                    )
                    FuzzCheck.require(
                        Fixture.now.timeIntervalSince(release.expiresAt) <= 300,
                        "an expired release (\(release.expiresAt)) admitted"
                    )
                }
            case .refuse(_, let reason):
                FuzzCheck.require(!reason.isEmpty, "a refusal without a reason")
            case .keep, .skipFailed:
                break
            }
        }
        for refusal in result.foreign { FuzzCheck.require(!refusal.reason.isEmpty, "a foreign refusal without a reason") }
    }
}
