#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A root accepted here: the pinned one (an operator's root file, or one built from `--trusted-key` flags), or one
/// reached from it by verified rotation steps (TUF's rules, `accepting(_:)`).
///
/// Releases are checked against the `release` role of the newest accepted root, so a key removed from the root stops
/// counting as soon as that root is accepted.
package struct TrustedRoot: Sendable, Equatable {
    /// The root document.
    package let root: Root
    /// The signed envelope it came in, or `nil` for a root built from trusted-key flags (nothing signed it).
    package let envelope: Envelope?

    /// The root's version.
    package var version: Int64 { root.version }

    /// Whether the root was built from trusted-key flags rather than signed by operators.
    package var isFromTrustedKeys: Bool { envelope == nil }

    private init(root: Root, envelope: Envelope?) {
        self.root = root
        self.envelope = envelope
    }

    /// Expiry of a root built from trusted-key flags: such a root has no signer who could renew it, so it does not
    /// expire (as the flags never did).
    package static let trustedKeysExpiry = Timestamp.latest

    /// Pins a root an operator placed here out of band (`--trust-root FILE`): any version, signed by a threshold of its
    /// own root keys.
    /// - Throws: `RootError` naming what is wrong (payload type, a document field, missing signatures).
    package static func pinning(_ envelope: Envelope) throws(RootError) -> TrustedRoot {
        let root = try decode(envelope)
        do {
            _ = try root.policy(for: .root).verify(envelope, expecting: Root.payloadType)
        } catch {
            throw .notSignedByItself(version: root.version, error)
        }
        return TrustedRoot(root: root, envelope: envelope)
    }

    /// The root of a configuration that names trusted keys instead of a root file (how Ferry was configured before
    /// roots existed): version 1, the keys in both roles with `threshold`, never expiring. Root 2 must then be signed by
    /// `threshold` of these keys (and by its own root keys) to be accepted here; the controller admits it only with every one
    /// of them (`ControllerTrust.requireEveryFlagKey`).
    /// - Throws: `RootError.document` when the keys or the threshold cannot make a root (no key, threshold too high).
    package static func fromTrustedKeys(_ keys: [PublicKey], threshold: Int) throws(RootError) -> TrustedRoot {
        var distinct: [PublicKey] = []
        for key in keys where !distinct.contains(key) { distinct.append(key) }
        do {
            let root = try Root.make(
                version: 1,
                expiresAt: trustedKeysExpiry,
                rootKeys: distinct,
                rootThreshold: threshold,
                releaseKeys: distinct,
                releaseThreshold: threshold
            )
            return TrustedRoot(root: root, envelope: nil)
        } catch {
            throw .document(error)
        }
    }

    /// TUF's rotation step: accepts root N+1 when it is exactly one version above this root, signed by a threshold of
    /// this root's `root` keys **and** by a threshold of its own `root` keys. An expired root may still be followed
    /// (only the newest accepted root's expiry matters, for releases); this one is not changed.
    /// - Throws: `RootError.notNewer` (the same or an older version: a rollback), `.skipsVersions`, `.notSignedByPrevious`,
    ///   `.notSignedByItself`, or a document error.
    package func accepting(_ next: Envelope) throws(RootError) -> TrustedRoot {
        let candidate = try Self.decode(next)
        guard candidate.version > root.version else {
            throw .notNewer(version: candidate.version, current: root.version)
        }
        // Both are at most 2^53: the subtraction cannot overflow.
        guard candidate.version - root.version == 1 else {
            throw .skipsVersions(version: candidate.version, expected: root.version + 1)
        }
        do {
            _ = try root.policy(for: .root).verify(next, expecting: Root.payloadType)
        } catch {
            throw .notSignedByPrevious(version: candidate.version, previous: root.version, error)
        }
        do {
            _ = try candidate.policy(for: .root).verify(next, expecting: Root.payloadType)
        } catch {
            throw .notSignedByItself(version: candidate.version, error)
        }
        return TrustedRoot(root: candidate, envelope: next)
    }

    /// Follows `chain` from this root: envelopes at or below this version are skipped (already accepted, or the
    /// controller's own copy of the pinned version), every later one must be the next step.
    /// - Throws: the first step's `RootError`.
    package func following(_ chain: [Envelope]) throws(RootError) -> TrustedRoot {
        var current = self
        for envelope in chain {
            // A version this root already has is not a step; anything unreadable is reported by `accepting`.
            if let version = try? Self.decode(envelope).version, version <= current.version { continue }
            current = try current.accepting(envelope)
        }
        return current
    }

    /// Verifies a release envelope against this root's `release` role.
    package func verifyRelease(_ envelope: Envelope) throws(TrustError) -> VerifiedPayload {
        try root.policy(for: .release).verify(envelope, expecting: Release.payloadType)
    }

    /// The root inside `envelope`, after checking its payload type. Signatures are not checked here.
    package static func decode(_ envelope: Envelope) throws(RootError) -> Root {
        guard envelope.payloadType == Root.payloadType else {
            throw .wrongPayloadType(got: envelope.payloadType)
        }
        do {
            return try Root.decode(envelope.payload)
        } catch {
            throw .document(error)
        }
    }
}

/// Why a root was not accepted.
package enum RootError: Error, Equatable, CustomStringConvertible {
    /// The payload is not a valid root document.
    case document(DocumentError)
    /// The envelope does not carry a root.
    case wrongPayloadType(got: String)
    /// The same or an older version than the accepted one: a rollback of the trust root.
    case notNewer(version: Int64, current: Int64)
    /// More than one version above the accepted one: each root must be signed by the one just before it.
    case skipsVersions(version: Int64, expected: Int64)
    /// Not signed by a threshold of the previous root's `root` keys.
    case notSignedByPrevious(version: Int64, previous: Int64, TrustError)
    /// Not signed by a threshold of its own `root` keys.
    case notSignedByItself(version: Int64, TrustError)

    /// A stable machine-readable name of the case (the controller's API error code).
    package var code: String {
        switch self {
        case .document: "invalid_root"
        case .wrongPayloadType: "wrong_payload_type"
        case .notNewer: "root_not_newer"
        case .skipsVersions: "root_skips_versions"
        case .notSignedByPrevious: "root_not_signed_by_previous"
        case .notSignedByItself: "root_not_signed_by_itself"
        }
    }

    package var description: String {
        switch self {
        case .document(let error):
            "root document: \(error)"
        case .wrongPayloadType(let got):
            "payloadType is \"\(got)\", expected \"\(Root.payloadType)\" (a trust root)"
        case .notNewer(let version, let current):
            "root version \(version) is not newer than version \(current), accepted here: a rollback of the trust root is refused"
        case .skipsVersions(let version, let expected):
            "root version \(version) skips versions: the next root must be version \(expected), each one signed by the one before it"
        case .notSignedByPrevious(let version, let previous, let error):
            "root version \(version) is not signed by enough root keys of version \(previous): \(error)"
        case .notSignedByItself(let version, let error):
            "root version \(version) is not signed by enough of its own root keys: \(error)"
        }
    }
}
