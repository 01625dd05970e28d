import COpenSSL

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// An Ed25519 public key: what agents and the controller pin to decide which signatures count.
package struct PublicKey: Sendable, Hashable {
    /// The raw 32-byte key.
    package let rawRepresentation: [UInt8]

    /// Wraps a raw 32-byte Ed25519 public key.
    /// - Throws: `KeyError.badRawKeyLength`; `KeyError.weakKey` for a key that would accept forged signatures.
    package init(rawRepresentation: [UInt8], source: String = "public key") throws(KeyError) {
        guard rawRepresentation.count == 32 else { throw .badRawKeyLength(expected: 32, got: rawRepresentation.count) }
        guard !Self.isWeak(rawRepresentation) else { throw .weakKey(source: source) }
        self.rawRepresentation = rawRepresentation
    }

    /// Wraps 32 bytes without any check: for tests that show what OpenSSL makes of a key `init(rawRepresentation:)`
    /// refuses.
    init(unchecked rawRepresentation: [UInt8]) {
        self.rawRepresentation = rawRepresentation
    }

    /// Parses a SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`), as `openssl pkey -pubout` writes.
    /// - Parameter source: names the key in errors (usually its path).
    package init(pem: String, source: String = "public key") throws {
        let key = try PKey.parsePEM(pem, source: source, expected: "public key (SubjectPublicKeyInfo)") {
            PEM_read_bio_PUBKEY($0, nil, nil, nil)
        }
        defer { EVP_PKEY_free(key) }
        self = try PublicKey(rawRepresentation: try PKey.rawPublic(key), source: source)
    }

    /// Reads a SubjectPublicKeyInfo PEM file.
    package init(contentsOf path: String) throws {
        try self.init(pem: try KeyFile.read(path), source: path)
    }

    /// The key id: lowercase hex SHA-256 of the raw key (DESIGN §2). Only a hint in envelopes.
    package var keyID: String { SHA256.hash(rawRepresentation).hex }

    /// The SubjectPublicKeyInfo PEM text.
    package func pemRepresentation() throws -> String {
        try PKey.withPublicKey(raw: rawRepresentation) { key in
            try PKey.writePEM("PEM_write_bio_PUBKEY") { PEM_write_bio_PUBKEY($0, key) }
        }
    }

    /// Whether `signature` is a valid Ed25519 signature of `message` by this key.
    package func isValidSignature(_ signature: [UInt8], for message: [UInt8]) -> Bool {
        guard signature.count == 64 else { return false }
        return
            (try? PKey.withPublicKey(raw: rawRepresentation) { key -> Bool in
                // Whatever fails below leaves its reason on this thread's OpenSSL error queue, where a later, unrelated
                // call would find it.
                defer { ERR_clear_error() }
                guard let context = EVP_MD_CTX_new() else { return false }
                defer { EVP_MD_CTX_free(context) }
                guard EVP_DigestVerifyInit(context, nil, nil, nil, key) == 1 else { return false }
                let result = signature.withUnsafeBufferPointer { sig in
                    message.withUnsafeBufferPointer { msg in
                        EVP_DigestVerify(context, sig.baseAddress, sig.count, msg.baseAddress, msg.count)
                    }
                }
                return result == 1
            }) ?? false
    }

    /// The encodings of Ed25519's points of small order (1, 2, 4 and 8; libsodium's `has_small_order` list), compared
    /// without the sign bit of x (the top bit), which gives the same points' other encodings.
    ///
    /// OpenSSL's verification (RFC 8032's, without the cofactor check) accepts a signature `(R, s)` when
    /// `[s]B = R + [k]A`. For such a key A, `[k]A` is the identity for many messages (all of them for the identity
    /// point): `R` = the identity, `s` = 0 then verifies without any private key. A trust root or a `--trusted-key`
    /// naming one would let anyone sign releases; under three encodings (three key ids) it alone meets a threshold of 3.
    static let smallOrderPoints: [[UInt8]] = [
        // 0 (order 4)
        [UInt8](repeating: 0, count: 32),
        // 1, the identity (order 1)
        [1] + [UInt8](repeating: 0, count: 31),
        // order 8
        [
            0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98, 0xf0,
            0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53, 0xfc, 0x05,
        ],
        // order 8
        [
            0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67, 0x0f,
            0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac, 0x03, 0x7a,
        ],
        // p - 1 (order 2)
        [0xec] + [UInt8](repeating: 0xff, count: 30) + [0x7f],
    ]

    /// Whether `raw` (32 bytes) is a point of small order, or a non-canonical encoding (y ≥ p = 2^255 - 19: another
    /// spelling of a point with y < 19, among them the small-order ones, under another key id).
    static func isWeak(_ raw: [UInt8]) -> Bool {
        guard raw.count == 32 else { return false }
        let nonCanonical = raw[31] & 0x7f == 0x7f && raw[1..<31].allSatisfy { $0 == 0xff } && raw[0] >= 0xed
        if nonCanonical { return true }
        return smallOrderPoints.contains { point in
            raw[0..<31].elementsEqual(point[0..<31]) && raw[31] & 0x7f == point[31] & 0x7f
        }
    }
}
