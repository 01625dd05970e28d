import COpenSSL

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Scoped access to OpenSSL `EVP_PKEY` objects and memory BIOs.
///
/// Keys are kept as raw bytes in Swift values (so they are `Sendable` without ceremony) and turned into an
/// `EVP_PKEY` only for the duration of one operation.
enum PKey {
    static func withPublicKey<R>(raw: [UInt8], _ body: (OpaquePointer) throws -> R) throws -> R {
        guard let key = raw.withUnsafeBufferPointer({ EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nil, $0.baseAddress, $0.count) })
        else { throw KeyError.openSSL("\(OpenSSLError("EVP_PKEY_new_raw_public_key"))") }
        defer { EVP_PKEY_free(key) }
        return try body(key)
    }

    static func withPrivateKey<R>(raw: [UInt8], _ body: (OpaquePointer) throws -> R) throws -> R {
        guard let key = raw.withUnsafeBufferPointer({ EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nil, $0.baseAddress, $0.count) })
        else { throw KeyError.openSSL("\(OpenSSLError("EVP_PKEY_new_raw_private_key"))") }
        defer { EVP_PKEY_free(key) }
        return try body(key)
    }

    static func rawPublic(_ key: OpaquePointer) throws -> [UInt8] {
        var length = 32
        var out = [UInt8](repeating: 0, count: 32)
        guard EVP_PKEY_get_raw_public_key(key, &out, &length) == 1, length == 32 else {
            throw KeyError.openSSL("\(OpenSSLError("EVP_PKEY_get_raw_public_key"))")
        }
        return out
    }

    static func rawPrivate(_ key: OpaquePointer) throws -> [UInt8] {
        var length = 32
        var out = [UInt8](repeating: 0, count: 32)
        guard EVP_PKEY_get_raw_private_key(key, &out, &length) == 1, length == 32 else {
            throw KeyError.openSSL("\(OpenSSLError("EVP_PKEY_get_raw_private_key"))")
        }
        return out
    }

    /// Parses a PEM text with `read` (one of OpenSSL's `PEM_read_bio_*`), checks the key is Ed25519, returns it.
    static func parsePEM(
        _ pem: String,
        source: String,
        expected: String,
        read: (OpaquePointer) -> OpaquePointer?
    ) throws -> OpaquePointer {
        let bytes = Array(pem.utf8)
        guard let bio = bytes.withUnsafeBytes({ BIO_new_mem_buf($0.baseAddress, Int32($0.count)) }) else {
            throw KeyError.openSSL("\(OpenSSLError("BIO_new_mem_buf"))")
        }
        defer { BIO_free(bio) }
        guard let key = read(bio) else {
            ERR_clear_error()
            throw KeyError.notPEM(source: source, expected: expected)
        }
        guard EVP_PKEY_get_base_id(key) == EVP_PKEY_ED25519 else {
            EVP_PKEY_free(key)
            throw KeyError.wrongAlgorithm(source: source)
        }
        return key
    }

    /// Runs `write` (one of OpenSSL's `PEM_write_bio_*`) into a memory BIO and returns the text.
    static func writePEM(_ operation: String, _ write: (OpaquePointer) -> Int32) throws -> String {
        guard let bio = BIO_new(BIO_s_mem()) else { throw KeyError.openSSL("\(OpenSSLError("BIO_new"))") }
        defer { BIO_free(bio) }
        guard write(bio) == 1 else { throw KeyError.openSSL("\(OpenSSLError(operation))") }
        var pointer: UnsafeMutablePointer<CChar>?
        let length = ferry_BIO_get_mem_data(bio, &pointer)
        guard let pointer, length > 0 else { throw KeyError.openSSL("\(operation) produced nothing") }
        return String(decoding: UnsafeRawBufferPointer(start: pointer, count: length), as: UTF8.self)
    }
}
