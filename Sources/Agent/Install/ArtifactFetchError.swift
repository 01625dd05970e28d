import Shared

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Why an artifact could not be fetched into the cache. URLs in messages are redacted (`RedactedURL`).
enum ArtifactFetchError: Error, CustomStringConvertible {
    /// The release's URL cannot be fetched (relative without a controller URL, unsupported scheme).
    case invalidURL(url: String, reason: String)
    /// The HTTP exchange failed; a `.part` with the bytes so far is kept for a resume.
    case download(sha256: SHA256Digest, HTTPClientError)
    /// The server sent more bytes than the release signs; the `.part` was deleted.
    case tooLarge(sha256: SHA256Digest, url: String, expected: Int64)
    /// The server had fewer bytes than the release signs; the `.part` was deleted.
    case sizeMismatch(sha256: SHA256Digest, url: String, expected: Int64, received: Int64)
    /// The bytes do not hash to the signed digest; the `.part` was deleted.
    case digestMismatch(url: String, expected: SHA256Digest, actual: SHA256Digest)
    /// Not enough free space for the rest of the artifact plus the configured margin: found before downloading (the
    /// `.part` is kept for a resume once space is freed), or the disk filled up while writing (the `.part` was deleted,
    /// which gives back what it took). `needed` counts the margin.
    case insufficientSpace(path: String, needed: Int64, available: Int64)
    /// A file operation in the cache failed.
    case fileSystem(path: String, operation: String, errno: Int32)
    /// The calling task was cancelled; a `.part` is kept for a resume.
    case cancelled(sha256: SHA256Digest)

    var description: String {
        switch self {
        case .invalidURL(let url, let reason): "artifact URL \(url): \(reason)"
        case .download(let digest, let error): "artifact \(digest): \(error)"
        case .tooLarge(let digest, let url, let expected):
            "artifact \(digest) from \(url): the server sent more than the signed size of \(expected) bytes"
        case .sizeMismatch(let digest, let url, let expected, let received):
            "artifact \(digest) from \(url): the signed size is \(expected) bytes but the server had \(received)"
        case .digestMismatch(let url, let expected, let actual):
            "artifact from \(url): SHA-256 is \(actual) but the release signs \(expected)"
        case .insufficientSpace(let path, let needed, let available):
            DiskSpace.message(
                path: path,
                needed: needed,
                available: available,
                detail: "\(needed) bytes: the rest of the artifact plus the free-space margin; \(available) bytes are free"
            )
        case .fileSystem(let path, let operation, let errno): "\(path): \(operation) failed: \(String(cString: strerror(errno)))"
        case .cancelled(let digest): "artifact \(digest): download cancelled"
        }
    }
}
