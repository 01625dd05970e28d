#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A DSSE envelope (secure-systems-lab/dsse): a typed payload and the Ed25519 signatures over its PAE.
package struct Envelope: Sendable, Equatable {
    package var payloadType: String
    /// The raw payload bytes (base64 only in the JSON form).
    package var payload: [UInt8]
    package var signatures: [Signature]

    /// One signature. `keyid` is a hint naming the key; verification never trusts it on its own.
    package struct Signature: Sendable, Equatable {
        package var keyid: String
        package var sig: [UInt8]

        package init(keyid: String, sig: [UInt8]) {
            self.keyid = keyid
            self.sig = sig
        }
    }

    package init(payloadType: String, payload: [UInt8], signatures: [Signature]) {
        self.payloadType = payloadType
        self.payload = payload
        self.signatures = signatures
    }

    /// The DSSE pre-authentication encoding: `"DSSEv1" SP len(type) SP type SP len(payload) SP payload`.
    package static func pae(payloadType: String, payload: [UInt8]) -> [UInt8] {
        let type = Array(payloadType.utf8)
        var out = Array("DSSEv1 \(type.count) ".utf8)
        out.reserveCapacity(out.count + type.count + payload.count + 24)
        out += type
        out += Array(" \(payload.count) ".utf8)
        out += payload
        return out
    }

    /// Signs `payload` with every key in `keys` (one signature each, in order).
    package static func sign(payload: [UInt8], payloadType: String, with keys: [SigningKey]) throws -> Envelope {
        let message = pae(payloadType: payloadType, payload: payload)
        let signatures = try keys.map { Signature(keyid: $0.publicKey.keyID, sig: try $0.signature(for: message)) }
        return Envelope(payloadType: payloadType, payload: payload, signatures: signatures)
    }

    /// Adds one more signature (for a second operator's key).
    package mutating func addSignature(with key: SigningKey) throws {
        let message = Self.pae(payloadType: payloadType, payload: payload)
        signatures.append(Signature(keyid: key.publicKey.keyID, sig: try key.signature(for: message)))
    }

    /// Decodes an envelope's JSON form, strictly (unknown fields, bad base64 and size limits are errors).
    /// - Parameter requiringSignatures: `false` accepts an envelope without signatures yet (an unsigned root that
    ///   operators are about to sign); everything else requires at least one.
    package static func decode<Bytes: Collection>(
        _ bytes: Bytes,
        requiringSignatures: Bool = true
    ) throws(DocumentError) -> Envelope where Bytes.Element == UInt8 {
        guard bytes.count <= Limits.envelopeBytes else {
            throw .tooLarge(field: "envelope", limit: Limits.envelopeBytes, actual: bytes.count)
        }
        return try Envelope(json: JSONValue.parse(bytes), path: "", requiringSignatures: requiringSignatures)
    }

    /// Validates an already-parsed envelope (for example, one element of a desired-state document).
    package init(json: JSONValue, path: String) throws(DocumentError) {
        try self.init(json: json, path: path, requiringSignatures: true)
    }

    /// Validates an already-parsed envelope; `requiringSignatures: false` accepts one without signatures yet.
    package init(json: JSONValue, path: String, requiringSignatures: Bool) throws(DocumentError) {
        var reader = try ObjectReader(json, path: path)
        let payloadType = try reader.required("payloadType", Field.string(maxLength: 128))
        guard !payloadType.isEmpty else { throw .invalidValue(field: reader.path(of: "payloadType"), reason: "must not be empty") }
        let payloadText = try reader.required("payload", Field.string(maxLength: Limits.envelopeBytes))
        guard let payload = Data(base64Encoded: payloadText) else {
            throw .invalidValue(field: reader.path(of: "payload"), reason: "not valid base64")
        }
        guard payload.count <= Limits.releasePayloadBytes else {
            throw .tooLarge(field: reader.path(of: "payload"), limit: Limits.releasePayloadBytes, actual: payload.count)
        }
        let signaturesPath = reader.path(of: "signatures")
        let items = try reader.required("signatures") { (value, path) throws(DocumentError) -> [JSONValue] in
            guard case .array(let items) = value else { throw .wrongType(field: path, expected: "array", got: value.typeName) }
            return items
        }
        try reader.rejectUnknownFields()
        guard !items.isEmpty || !requiringSignatures else {
            throw .invalidValue(field: signaturesPath, reason: "at least one signature is required")
        }
        let signatures = try Self.signatures(items, path: signaturesPath)
        self.init(payloadType: payloadType, payload: Array(payload), signatures: signatures)
    }

    /// Validates a list of signature objects (`{"keyid": "...", "sig": "<base64>"}`), at most `Limits.signatures`.
    /// - Parameter path: the list's field path, for errors (`signatures[1].sig`).
    package static func signatures(_ items: [JSONValue], path signaturesPath: String) throws(DocumentError) -> [Signature] {
        guard items.count <= Limits.signatures else {
            throw .tooMany(field: signaturesPath, limit: Limits.signatures, actual: items.count)
        }
        var signatures: [Signature] = []
        for (index, item) in items.enumerated() {
            var sigReader = try ObjectReader(item, path: "\(signaturesPath)[\(index)]")
            let keyid = try sigReader.optional("keyid", Field.string(maxLength: 128)) ?? ""
            let sigText = try sigReader.required("sig", Field.string(maxLength: 256))
            try sigReader.rejectUnknownFields()
            guard let sig = Data(base64Encoded: sigText) else {
                throw .invalidValue(field: sigReader.path(of: "sig"), reason: "not valid base64")
            }
            guard sig.count == 64 else {
                throw .invalidValue(field: sigReader.path(of: "sig"), reason: "an Ed25519 signature is 64 bytes, got \(sig.count)")
            }
            signatures.append(Signature(keyid: keyid, sig: Array(sig)))
        }
        return signatures
    }

    /// The JSON form of one signature.
    package static func json(of signature: Signature) -> JSONValue {
        .object(["keyid": .string(signature.keyid), "sig": .string(Data(signature.sig).base64EncodedString())])
    }

    /// The envelope as a JSON value.
    package var json: JSONValue {
        .object([
            "payloadType": .string(payloadType),
            "payload": .string(Data(payload).base64EncodedString()),
            "signatures": .array(signatures.map(Self.json(of:))),
        ])
    }

    /// The envelope's JSON text.
    package func encoded() -> Data { json.encoded() }
}
