import Foundation
import Shared

/// The trust root the controller checks what operators send against: the pinned root (`--trust-root FILE`, or one built
/// from the `--trusted-key` flags) followed through the chain operators published (`POST /v1/roots`).
///
/// Nothing is cached: every check reads the chain from the store (a few rows) and verifies it from the pin, so replicas
/// sharing a database agree at once after a publish, and a chain that no longer follows from the pin (the flags were
/// changed under it) is reported instead of being used.
struct ControllerTrust: Sendable {
    /// Where the controller's trust starts.
    let pinned: TrustedRoot
    /// How far a clock may lag the signer's before a root counts as expired (the agents' default). 5 minutes.
    var clockSkewGrace: Duration = .seconds(300)

    /// A controller trusting `--trusted-key` flags: root 1 is those keys with `threshold`.
    init(trustedKeys: TrustPolicy) throws(RootError) {
        pinned = try TrustedRoot.fromTrustedKeys(Array(trustedKeys.trustedKeys.values), threshold: trustedKeys.threshold)
    }

    /// A controller pinning an operator's root file.
    init(pinned: TrustedRoot) {
        self.pinned = pinned
    }

    /// The newest accepted root: the pin followed through the stored chain.
    /// - Throws: `ControllerTrustError.chainBroken` when a stored root does not follow from the pin.
    func current(in store: any ControllerStore) async throws -> TrustedRoot {
        try follow(try await store.trustRoots())
    }

    /// The pin followed through `chain` (oldest first).
    func follow(_ chain: [TrustRootRecord]) throws(ControllerTrustError) -> TrustedRoot {
        do {
            return try pinned.following(chain.map(\.envelope))
        } catch {
            throw .chainBroken(error)
        }
    }

    /// What publishing `envelope` as a trust root does, given the stored `chain`.
    enum Admission: Sendable, Equatable {
        /// Store it: it is the next root (or the pinned version itself, stored so agents can be pointed at it).
        case store(TrustedRoot)
        /// The same root is stored already (a retried publish).
        case alreadyStored(version: Int64)
    }

    /// Checks `envelope` as the next trust root: TUF's rotation rules from the newest accepted root, not expired. The
    /// pinned version itself may be stored once (as the chain's first root): from a root file it must be that file's
    /// root; built from `--trusted-key` flags, its two roles must be exactly those keys and threshold — agents pinned by
    /// the same flags verify root 2 against them.
    /// - Throws: `ControllerTrustError`.
    func admit(_ envelope: Envelope, chain: [TrustRootRecord], now: Date) throws(ControllerTrustError) -> Admission {
        let current = try follow(chain)
        let candidate: Root
        do {
            candidate = try TrustedRoot.decode(envelope)
        } catch {
            throw .refused(error)
        }
        if let stored = chain.first(where: { $0.version == candidate.version }) {
            guard stored.envelope.payload == envelope.payload else { throw .refused(.notNewer(version: candidate.version, current: current.version)) }
            return .alreadyStored(version: candidate.version)
        }
        let accepted: TrustedRoot
        if candidate.version == pinned.version, chain.isEmpty {
            accepted = try pinnedVersion(envelope, candidate: candidate)
        } else {
            do {
                accepted = try current.accepting(envelope)
            } catch {
                throw .refused(error)
            }
            try requireEveryFlagKey(envelope, after: current)
        }
        guard !accepted.root.isExpired(at: now, grace: clockSkewGrace) else {
            throw .expired(version: accepted.version, expiresAt: accepted.root.expiresAt)
        }
        return .store(accepted)
    }

    /// Root 2 after a root built from `--trusted-key` flags must carry the signature of every flag key. Those keys are
    /// root 1's root keys only because there were no roots when they were given: they are release keys (CI's, each
    /// approver's), and with the flags' threshold any one of them (at threshold 1) could sign a root 2 naming only
    /// itself in both roles, shutting every other key out of the fleet for good. Agents pinned by the flags accept the
    /// flags' threshold (a root 2 stored before this check must stay acceptable to them), so the controller, through
    /// which every root reaches them, is where this is held.
    private func requireEveryFlagKey(_ envelope: Envelope, after current: TrustedRoot) throws(ControllerTrustError) {
        guard current.isFromTrustedKeys else { return }
        let flags = current.root.policy(for: .root)
        do {
            _ = try flags.verify(envelope, expecting: Root.payloadType, threshold: flags.trustedKeys.count)
        } catch {
            throw .needsEveryFlagKey(
                "root \(current.version + 1) of a fleet configured with --trusted-key must be signed by every one of those "
                    + "\(flags.trustedKeys.count) keys (\(RolloutStateMachine.keyList(flags.trustedKeys.keys.sorted()))), not only "
                    + "\(flags.threshold): they sign releases too, and one of them alone must not decide which keys the fleet trusts "
                    + "(\(error)); a flag key that is lost is taken out of the flags (the controller restarted without it) first"
            )
        }
    }

    /// The pinned version, offered as the chain's first root.
    private func pinnedVersion(_ envelope: Envelope, candidate: Root) throws(ControllerTrustError) -> TrustedRoot {
        let signed: TrustedRoot
        do {
            signed = try TrustedRoot.pinning(envelope)
        } catch {
            throw .refused(error)
        }
        if let pinnedEnvelope = pinned.envelope {
            guard pinnedEnvelope.payload == envelope.payload else {
                throw .doesNotMatchPin("it differs from the root this controller pins with --trust-root (same version \(candidate.version))")
            }
        } else {
            guard candidate.rootRole == pinned.root.rootRole, candidate.releaseRole == pinned.root.releaseRole else {
                throw .doesNotMatchPin(
                    "root \(candidate.version) of a fleet configured with --trusted-key must have exactly those keys as its root and "
                        + "release roles, with the same threshold (\(pinned.root.rootRole.threshold) of "
                        + "\(RolloutStateMachine.keyList(pinned.root.rootRole.keyIDs))): agents enrolled with the same flags check "
                        + "root \(candidate.version + 1) against them. Change keys in the next root (`ferry-controller root rotate`)"
                )
            }
        }
        return signed
    }

    /// Counts the release-role signatures of `envelope` under `root`: at least one must verify (below the role's
    /// threshold the release waits for approval).
    /// - Returns: the verified payload (its `keyIDs` are the distinct release keys that signed).
    /// - Throws: `TrustError` when no release-role key signed it validly.
    static func releaseSignatures(of envelope: Envelope, under root: TrustedRoot) throws(TrustError) -> VerifiedPayload {
        try root.root.policy(for: .release).verify(envelope, expecting: Release.payloadType, threshold: 1)
    }
}

/// Why the controller refused a trust root, or cannot use its chain.
enum ControllerTrustError: Error, Equatable, CustomStringConvertible {
    /// The root breaks a rotation rule or is not a valid root.
    case refused(RootError)
    /// The root expired already.
    case expired(version: Int64, expiresAt: Date)
    /// The pinned version offered as the first root is not the pinned root.
    case doesNotMatchPin(String)
    /// A stored root does not follow from the pin (the pin changed after roots were published).
    case chainBroken(RootError)
    /// Root 2 after `--trusted-key` flags lacks the signature of one of the flag keys.
    case needsEveryFlagKey(String)

    var description: String {
        switch self {
        case .refused(let error):
            "\(error)"
        case .expired(let version, let expiresAt):
            "root version \(version) expired at \(Timestamp.format(expiresAt)); make a new one with a later --expires"
        case .doesNotMatchPin(let reason):
            "this root is not the one this controller pins: \(reason)"
        case .needsEveryFlagKey(let reason):
            "this root is refused: \(reason)"
        case .chainBroken(let error):
            "the trust roots stored by this controller do not follow from the root it pins (--trusted-key or --trust-root "
                + "changed after roots were published?): \(error)"
        }
    }
}
