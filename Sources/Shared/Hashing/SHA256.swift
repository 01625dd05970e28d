import COpenSSL

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

/// A SHA-256 digest, printed as 64 lowercase hex characters.
package struct SHA256Digest: Sendable, Hashable, CustomStringConvertible {
    /// The 32 raw bytes.
    package let bytes: [UInt8]

    package init(bytes: [UInt8]) {
        precondition(bytes.count == 32, "a SHA-256 digest has 32 bytes")
        self.bytes = bytes
    }

    /// Parses 64 lowercase hex characters; `nil` for anything else.
    package init?(hex: String) {
        guard Hex.isLowercaseHex(hex, count: 64) else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(32)
        var iterator = hex.utf8.makeIterator()
        while let high = iterator.next(), let low = iterator.next() {
            out.append(Self.nibble(high) << 4 | Self.nibble(low))
        }
        self.bytes = out
    }

    private static func nibble(_ c: UInt8) -> UInt8 {
        c <= 0x39 ? c - 0x30 : c - 0x61 + 10
    }

    /// The digest as 64 lowercase hex characters.
    package var hex: String { Hex.encode(bytes) }
    package var description: String { hex }
}

/// Failures of the OpenSSL primitives Ferry uses (digest, keys, signatures).
package struct OpenSSLError: Error, CustomStringConvertible {
    /// What Ferry was doing.
    package let operation: String
    /// OpenSSL's own error queue, oldest first.
    package let details: String

    package init(_ operation: String) {
        self.operation = operation
        var lines: [String] = []
        while true {
            let code = ERR_get_error()
            if code == 0 { break }
            var buffer = [CChar](repeating: 0, count: 256)
            ERR_error_string_n(code, &buffer, buffer.count)
            lines.append(String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        self.details = lines.joined(separator: "; ")
    }

    package var description: String {
        details.isEmpty ? "\(operation) failed" : "\(operation) failed: \(details)"
    }
}

/// Incremental SHA-256 over OpenSSL's EVP interface.
///
/// Feed bytes with `update`, then call `finalize()` once. Not thread-safe: one hasher per stream.
package final class SHA256Hasher {
    private let context: OpaquePointer
    private var finalized = false

    package init() {
        guard let context = EVP_MD_CTX_new(), EVP_DigestInit_ex(context, SHA256.algorithm.pointer, nil) == 1 else {
            // Allocation failure of a 200-byte context: nothing sensible to recover.
            fatalError("\(OpenSSLError("EVP_DigestInit_ex(sha256)"))")
        }
        self.context = context
    }

    deinit { EVP_MD_CTX_free(context) }

    /// Adds `buffer` to the digest.
    package func update(_ buffer: UnsafeRawBufferPointer) {
        precondition(!finalized, "SHA256Hasher.update after finalize")
        guard let base = buffer.baseAddress, buffer.count > 0 else { return }
        EVP_DigestUpdate(context, base, buffer.count)
    }

    /// Adds `bytes` to the digest.
    package func update<Bytes: ContiguousBytes>(_ bytes: Bytes) {
        bytes.withUnsafeBytes { update($0) }
    }

    /// Starts over, as a new hasher: for a stream read again from its start (a transaction retried on a new
    /// connection re-reads an artifact's chunks from the first).
    package func reset() {
        guard EVP_DigestInit_ex(context, SHA256.algorithm.pointer, nil) == 1 else {
            fatalError("\(OpenSSLError("EVP_DigestInit_ex(sha256)"))")
        }
        finalized = false
    }

    /// The digest of everything added so far. Call once (or `reset()` before adding again).
    package func finalize() -> SHA256Digest {
        precondition(!finalized, "SHA256Hasher.finalize called twice")
        finalized = true
        var out = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        EVP_DigestFinal_ex(context, &out, &length)
        return SHA256Digest(bytes: Array(out.prefix(Int(length))))
    }
}

/// One-shot and streaming SHA-256 helpers.
package enum SHA256 {
    /// OpenSSL's SHA-256, fetched once. `EVP_sha256()` makes OpenSSL 3 look the algorithm up in its providers on every
    /// `EVP_DigestInit_ex` (a lock and a table walk each time): for the controller, which digests the token of every
    /// request, that lookup cost more than the hash.
    struct Algorithm: @unchecked Sendable {
        /// Immutable once fetched; OpenSSL allows sharing it between threads.
        let pointer: OpaquePointer
    }

    static let algorithm: Algorithm = {
        guard let fetched = EVP_MD_fetch(nil, "SHA256", nil) else {
            // Without SHA-256 nothing Ferry does can be checked: the OpenSSL installation is broken.
            fatalError("\(OpenSSLError("EVP_MD_fetch(SHA256)"))")
        }
        return Algorithm(pointer: fetched)
    }()

    /// The digest of `bytes`.
    package static func hash<Bytes: ContiguousBytes>(_ bytes: Bytes) -> SHA256Digest {
        var out = [UInt8](repeating: 0, count: 32)
        var length: UInt32 = 0
        let done = bytes.withUnsafeBytes { input in
            out.withUnsafeMutableBufferPointer { output in
                // A null pointer with length 0 is what OpenSSL expects for empty input.
                EVP_Digest(input.baseAddress, input.count, output.baseAddress, &length, algorithm.pointer, nil)
            }
        }
        guard done == 1, length == 32 else { fatalError("\(OpenSSLError("EVP_Digest(SHA256)"))") }
        return SHA256Digest(bytes: out)
    }

    /// The digest and size of the file at `path`, read in 256 KiB chunks (never loaded whole).
    package static func hash(fileAt path: String) throws(FileHashError) -> (digest: SHA256Digest, size: Int64) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw FileHashError(path: path, errno: errno) }
        defer { close(fd) }
        let hasher = SHA256Hasher()
        let chunk = 256 * 1024
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 16)
        defer { buffer.deallocate() }
        var total: Int64 = 0
        while true {
            let n = read(fd, buffer.baseAddress, chunk)
            if n < 0 {
                if errno == EINTR { continue }
                throw FileHashError(path: path, errno: errno)
            }
            if n == 0 { break }
            hasher.update(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
            total += Int64(n)
        }
        return (hasher.finalize(), total)
    }

    /// The digest and byte count of an asynchronous stream of chunks.
    package static func hash<Chunks: AsyncSequence>(
        _ chunks: Chunks
    ) async throws -> (digest: SHA256Digest, size: Int64) where Chunks.Element: ContiguousBytes {
        let hasher = SHA256Hasher()
        var total: Int64 = 0
        for try await chunk in chunks {
            chunk.withUnsafeBytes { buffer in
                hasher.update(buffer)
                total += Int64(buffer.count)
            }
        }
        return (hasher.finalize(), total)
    }
}

/// A file could not be read while hashing it.
package struct FileHashError: Error, CustomStringConvertible {
    package let path: String
    package let errno: Int32
    package var description: String { "cannot read \(path): \(String(cString: strerror(errno)))" }
}
