import COpenSSL

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// An Ed25519 private key held by an operator. The controller and agents never hold one.
package struct SigningKey: Sendable {
    private let seed: [UInt8]
    /// The matching public key.
    package let publicKey: PublicKey

    /// A fresh key from OpenSSL's CSPRNG.
    package static func generate() throws -> SigningKey {
        guard let context = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, nil) else {
            throw KeyError.openSSL("\(OpenSSLError("EVP_PKEY_CTX_new_id(ED25519)"))")
        }
        defer { EVP_PKEY_CTX_free(context) }
        var key: OpaquePointer?
        guard EVP_PKEY_keygen_init(context) == 1, EVP_PKEY_keygen(context, &key) == 1, let key else {
            throw KeyError.openSSL("\(OpenSSLError("EVP_PKEY_keygen(ED25519)"))")
        }
        defer { EVP_PKEY_free(key) }
        return try SigningKey(seed: PKey.rawPrivate(key), publicRaw: PKey.rawPublic(key))
    }

    private init(seed: [UInt8], publicRaw: [UInt8]) throws {
        self.seed = seed
        self.publicKey = try PublicKey(rawRepresentation: publicRaw)
    }

    /// Wraps a raw 32-byte Ed25519 private key (seed).
    package init(rawRepresentation: [UInt8]) throws {
        guard rawRepresentation.count == 32 else { throw KeyError.badRawKeyLength(expected: 32, got: rawRepresentation.count) }
        let publicRaw = try PKey.withPrivateKey(raw: rawRepresentation) { try PKey.rawPublic($0) }
        try self.init(seed: rawRepresentation, publicRaw: publicRaw)
    }

    /// Parses an unencrypted PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), as `openssl genpkey -algorithm ed25519` writes.
    package init(pem: String, source: String = "private key") throws {
        let key = try PKey.parsePEM(pem, source: source, expected: "private key (PKCS#8, unencrypted)") {
            PEM_read_bio_PrivateKey($0, nil, nil, nil)
        }
        defer { EVP_PKEY_free(key) }
        try self.init(seed: PKey.rawPrivate(key), publicRaw: PKey.rawPublic(key))
    }

    /// Reads a PKCS#8 PEM file.
    package init(contentsOf path: String) throws {
        try self.init(pem: try KeyFile.read(path), source: path)
    }

    /// The PKCS#8 PEM text. Treat it as a secret.
    package func pemRepresentation() throws -> String {
        try PKey.withPrivateKey(raw: seed) { key in
            try PKey.writePEM("PEM_write_bio_PrivateKey") { PEM_write_bio_PrivateKey($0, key, nil, nil, 0, nil, nil) }
        }
    }

    /// An Ed25519 signature (64 bytes) of `message`.
    package func signature(for message: [UInt8]) throws -> [UInt8] {
        try PKey.withPrivateKey(raw: seed) { key in
            guard let context = EVP_MD_CTX_new() else { throw KeyError.openSSL("\(OpenSSLError("EVP_MD_CTX_new"))") }
            defer { EVP_MD_CTX_free(context) }
            guard EVP_DigestSignInit(context, nil, nil, nil, key) == 1 else {
                throw KeyError.openSSL("\(OpenSSLError("EVP_DigestSignInit"))")
            }
            var signature = [UInt8](repeating: 0, count: 64)
            var length = 64
            let ok = message.withUnsafeBufferPointer { msg in
                EVP_DigestSign(context, &signature, &length, msg.baseAddress, msg.count)
            }
            guard ok == 1, length == 64 else { throw KeyError.openSSL("\(OpenSSLError("EVP_DigestSign"))") }
            return signature
        }
    }
}
