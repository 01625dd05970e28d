/// Which keys an agent or controller trusts, and how many distinct ones must sign.
package struct TrustPolicy: Sendable {
    /// The pinned operator keys, by key id.
    package let trustedKeys: [String: PublicKey]
    /// How many distinct trusted keys must have signed.
    package let threshold: Int

    /// - Throws: `TrustError.invalidThreshold` unless `1 <= threshold <= distinct keys`.
    package init(trustedKeys: [PublicKey], threshold: Int = 1) throws(TrustError) {
        var byID: [String: PublicKey] = [:]
        for key in trustedKeys { byID[key.keyID] = key }
        guard threshold >= 1, threshold <= byID.count else {
            throw .invalidThreshold(threshold: threshold, distinctKeys: byID.count)
        }
        self.trustedKeys = byID
        self.threshold = threshold
    }

    /// Verifies `envelope` and returns its payload with the ids of the distinct trusted keys that signed it.
    ///
    /// A signature whose key id names no trusted key is ignored (it may be another team's key); a signature with no
    /// key id is tried against every trusted key. The same key signing twice counts once.
    package func verify(_ envelope: Envelope, expecting payloadType: String) throws(TrustError) -> VerifiedPayload {
        try verify(envelope, expecting: payloadType, threshold: threshold)
    }

    /// Verifies `envelope` as `verify(_:expecting:)` does, but requiring `threshold` distinct trusted keys instead of
    /// the policy's own (the controller stores a release signed by fewer keys than the policy requires, to await
    /// approval).
    package func verify(_ envelope: Envelope, expecting payloadType: String, threshold: Int) throws(TrustError) -> VerifiedPayload {
        // No signature at all would meet a threshold of 0.
        guard threshold >= 1 else { throw .invalidThreshold(threshold: threshold, distinctKeys: trustedKeys.count) }
        guard envelope.payloadType == payloadType else {
            throw .unexpectedPayloadType(expected: payloadType, got: envelope.payloadType)
        }
        let message = Envelope.pae(payloadType: envelope.payloadType, payload: envelope.payload)
        var verified: Set<String> = []
        var failures: [String] = []
        var ignored = 0
        for (index, signature) in envelope.signatures.enumerated() {
            let candidates: [PublicKey]
            if signature.keyid.isEmpty {
                candidates = Array(trustedKeys.values)
            } else if let key = trustedKeys[signature.keyid] {
                candidates = [key]
            } else {
                ignored += 1
                continue
            }
            if let key = candidates.first(where: { $0.isValidSignature(signature.sig, for: message) }) {
                verified.insert(key.keyID)
            } else {
                let who = signature.keyid.isEmpty ? "without a key id" : "by key \(signature.keyid)"
                failures.append("signature \(index) \(who) does not verify")
            }
        }
        guard verified.count >= threshold else {
            throw .thresholdNotMet(
                required: threshold,
                verifiedKeyIDs: verified.sorted(),
                failures: failures,
                untrustedSignatures: ignored
            )
        }
        return VerifiedPayload(payloadType: envelope.payloadType, payload: envelope.payload, keyIDs: verified.sorted())
    }
}

/// A payload whose signatures met the trust policy.
package struct VerifiedPayload: Sendable, Equatable {
    package let payloadType: String
    package let payload: [UInt8]
    /// The distinct trusted keys that signed, sorted.
    package let keyIDs: [String]
}

/// Why an envelope was not trusted.
package enum TrustError: Error, Equatable, CustomStringConvertible {
    case invalidThreshold(threshold: Int, distinctKeys: Int)
    case unexpectedPayloadType(expected: String, got: String)
    case thresholdNotMet(required: Int, verifiedKeyIDs: [String], failures: [String], untrustedSignatures: Int)

    package var description: String {
        switch self {
        case .invalidThreshold(let threshold, let keys):
            return "threshold \(threshold) is impossible with \(keys) distinct trusted key(s); it must be between 1 and \(keys)"
        case .unexpectedPayloadType(let expected, let got):
            return "payloadType is \"\(got)\", expected \"\(expected)\""
        case .thresholdNotMet(let required, let verified, let failures, let untrusted):
            var parts = ["\(verified.count) distinct trusted key(s) signed, \(required) required"]
            if !verified.isEmpty { parts.append("verified: \(verified.joined(separator: ", "))") }
            parts += failures
            if untrusted > 0 { parts.append("\(untrusted) signature(s) by keys that are not trusted here") }
            return parts.joined(separator: "; ")
        }
    }
}
