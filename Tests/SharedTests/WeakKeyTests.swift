import Foundation
import TestSupport
import Testing

@testable import Shared

/// Ed25519 public keys that accept forged signatures (small order, or non-canonical encodings of them) are refused
/// wherever a key is taken in: raw (trust roots), PEM (`--trusted-key`). OpenSSL's verification alone accepts the
/// forgery, which `theRefusedKeysAcceptAForgeryUnderOpenSSL` shows for each canonical one.
@Suite struct WeakKeyTests {
    static func bytes(_ first: UInt8, _ fill: UInt8, _ last: UInt8) -> [UInt8] { [first] + [UInt8](repeating: fill, count: 30) + [last] }

    struct Weak: Sendable, CustomTestStringConvertible {
        let name: String
        let raw: [UInt8]
        /// A canonical encoding OpenSSL decodes: a forgery verifies for some messages.
        let forgeable: Bool
        var testDescription: String { name }
    }

    static let weak: [Weak] = [
        Weak(name: "the identity (order 1)", raw: bytes(1, 0, 0), forgeable: true),
        Weak(name: "the identity with the sign bit set", raw: bytes(1, 0, 0x80), forgeable: false),
        Weak(name: "y = 0 (order 4)", raw: bytes(0, 0, 0), forgeable: true),
        Weak(name: "y = p - 1 (order 2)", raw: bytes(0xec, 0xff, 0x7f), forgeable: true),
        Weak(name: "y = p, non-canonical 0", raw: bytes(0xed, 0xff, 0x7f), forgeable: false),
        Weak(name: "y = p + 1, non-canonical identity", raw: bytes(0xee, 0xff, 0x7f), forgeable: false),
        Weak(name: "y = 2^255 - 1, non-canonical", raw: bytes(0xff, 0xff, 0xff), forgeable: false),
        Weak(name: "order 8", raw: PublicKey.smallOrderPoints[2], forgeable: true),
        Weak(name: "order 8, the other", raw: PublicKey.smallOrderPoints[3], forgeable: true),
        Weak(name: "order 8 with the sign bit flipped", raw: Array(PublicKey.smallOrderPoints[2].dropLast()) + [0x85], forgeable: true),
    ]

    /// A SubjectPublicKeyInfo PEM of a raw Ed25519 key.
    static func pem(_ raw: [UInt8]) -> String {
        let der: [UInt8] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00] + raw
        return "-----BEGIN PUBLIC KEY-----\n\(Data(der).base64EncodedString())\n-----END PUBLIC KEY-----\n"
    }

    @Test(arguments: weak)
    func aWeakKeyIsRefused(_ key: Weak) throws {
        #expect(throws: KeyError.weakKey(source: "public key")) { try PublicKey(rawRepresentation: key.raw) }
        #expect(throws: KeyError.weakKey(source: "release.pub")) { try PublicKey(pem: Self.pem(key.raw), source: "release.pub") }
    }

    /// Why: with `R` = the identity and `s` = 0, OpenSSL verifies `[0]B = R + [k]A`, true whenever `[k]A` is the
    /// identity (every message for the identity key, one in two, four or eight for the others).
    @Test(arguments: weak.filter(\.forgeable))
    func theRefusedKeysAcceptAForgeryUnderOpenSSL(_ key: Weak) {
        let unchecked = PublicKey(unchecked: key.raw)
        let forged = [1] + [UInt8](repeating: 0, count: 63)
        let accepted = (0..<64).filter { unchecked.isValidSignature(forged, for: Array("release \($0)".utf8)) }
        #expect(!accepted.isEmpty, "no forged signature verified: not a weak key")
    }

    @Test func generatedKeysAreNeverRefused() throws {
        for _ in 0..<200 {
            let key = try SigningKey.generate()
            #expect(try PublicKey(rawRepresentation: key.publicKey.rawRepresentation) == key.publicKey)
            #expect(try PublicKey(pem: key.publicKey.pemRepresentation()) == key.publicKey)
        }
    }

    @Test func aThresholdBelowOneIsRefused() throws {
        let key = try SigningKey.generate()
        let policy = try TrustPolicy(trustedKeys: [key.publicKey])
        let unsigned = Envelope(payloadType: Release.payloadType, payload: Array("{}".utf8), signatures: [])
        for threshold in [0, -1] {
            #expect(throws: TrustError.invalidThreshold(threshold: threshold, distinctKeys: 1)) {
                try policy.verify(unsigned, expecting: Release.payloadType, threshold: threshold)
            }
        }
    }
}
