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
    package init(rawRepresentation: [UInt8]) throws(KeyError) {
        guard rawRepresentation.count == 32 else { throw .badRawKeyLength(expected: 32, got: rawRepresentation.count) }
        self.rawRepresentation = rawRepresentation
    }

    /// Parses a SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`), as `openssl pkey -pubout` writes.
    /// - Parameter source: names the key in errors (usually its path).
    package init(pem: String, source: String = "public key") throws {
        let key = try PKey.parsePEM(pem, source: source, expected: "public key (SubjectPublicKeyInfo)") {
            PEM_read_bio_PUBKEY($0, nil, nil, nil)
        }
        defer { EVP_PKEY_free(key) }
        self.rawRepresentation = try PKey.rawPublic(key)
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
                guard let context = EVP_MD_CTX_new() else { return false }
                defer { EVP_MD_CTX_free(context) }
                guard EVP_DigestVerifyInit(context, nil, nil, nil, key) == 1 else { return false }
                let result = signature.withUnsafeBufferPointer { sig in
                    message.withUnsafeBufferPointer { msg in
                        EVP_DigestVerify(context, sig.baseAddress, sig.count, msg.baseAddress, msg.count)
                    }
                }
                ERR_clear_error()
                return result == 1
            }) ?? false
    }
}
