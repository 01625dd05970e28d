#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Why an HTTP exchange failed. Every message names the URL (credentials in it redacted, see `RedactedURL`);
/// bearer tokens and header values never appear.
package enum HTTPClientError: Error, CustomStringConvertible {
    /// The URL is not an absolute http(s) URL, or a header would corrupt the request.
    case invalidRequest(url: String, reason: String)
    /// DNS, TCP connect or proxy failure (curl code and curl's own message).
    case connectionFailed(url: String, code: Int32, message: String)
    /// The connect timeout, the total timeout or the low-speed limit was hit.
    case timedOut(url: String, message: String)
    /// TLS handshake or certificate verification failed.
    case tls(url: String, code: Int32, message: String)
    /// The body was larger than `limit` bytes; the transfer was aborted there.
    case responseTooLarge(url: String, limit: Int64)
    /// The calling task was cancelled; the transfer was aborted.
    case cancelled(url: String)
    /// The transfer broke after connecting (connection reset, truncated body, too many redirects, ...).
    case transferFailed(url: String, code: Int32, message: String)
    /// A download got a status it cannot store (anything but 200/206, or 416 on a resume).
    case unexpectedStatus(url: String, status: Int)
    /// A `206` whose `Content-Range` does not start where the download resumes.
    case invalidContentRange(url: String, expectedOffset: Int64, header: String)
    /// The download file could not be opened, written or truncated.
    case file(path: String, operation: String, errno: Int32)
    /// A resume offset beyond the end of the existing file.
    case resumeBeyondEnd(path: String, offset: Int64, fileSize: Int64)
    /// The download's event handler threw; the transfer was aborted.
    case handlerFailed(url: String, underlying: any Error)
    /// The file being uploaded got shorter than it was when the upload started.
    case uploadSourceChanged(path: String, expected: Int64, sent: Int64)

    /// The URL the error is about (redacted), if any.
    package var url: String? {
        switch self {
        case .invalidRequest(let url, _), .connectionFailed(let url, _, _), .timedOut(let url, _), .tls(let url, _, _),
            .responseTooLarge(let url, _), .cancelled(let url), .transferFailed(let url, _, _),
            .unexpectedStatus(let url, _), .invalidContentRange(let url, _, _), .handlerFailed(let url, _):
            url
        case .file, .resumeBeyondEnd, .uploadSourceChanged:
            nil
        }
    }

    /// Whether trying again later can help (network trouble, 5xx, 429), as opposed to a request that is wrong.
    package var isTransient: Bool {
        switch self {
        case .connectionFailed, .timedOut, .transferFailed: true
        case .unexpectedStatus(_, let status): status >= 500 || status == 429 || status == 408
        default: false
        }
    }

    /// Whether the server's certificate was refused — it does not verify (60), the CA file cannot be used (77), its
    /// issuer (83), pinned key (90) or stapled status (91) does not match — which trying again does not change until
    /// someone fixes it. A handshake cut short (35: a reset, a syscall error) may pass, and is not one.
    package var isCertificateRefusal: Bool {
        guard case .tls(_, let code, _) = self else { return false }
        return [60, 77, 83, 90, 91].contains(code)
    }

    package var description: String {
        switch self {
        case .invalidRequest(let url, let reason): "\(url): invalid request: \(reason)"
        case .connectionFailed(let url, let code, let message): "\(url): cannot connect: \(message) (curl \(code))"
        case .timedOut(let url, let message): "\(url): timed out: \(message)"
        case .tls(let url, let code, let message): "\(url): TLS failure: \(message) (curl \(code))"
        case .responseTooLarge(let url, let limit): "\(url): response body is larger than the limit of \(limit) bytes"
        case .cancelled(let url): "\(url): request cancelled"
        case .transferFailed(let url, let code, let message): "\(url): transfer failed: \(message) (curl \(code))"
        case .unexpectedStatus(let url, let status): "\(url): unexpected HTTP status \(status)"
        case .invalidContentRange(let url, let offset, let header):
            "\(url): asked for bytes from \(offset) but got Content-Range \"\(header)\""
        case .file(let path, let operation, let errno): "\(path): \(operation) failed: \(String(cString: strerror(errno)))"
        case .resumeBeyondEnd(let path, let offset, let size): "\(path): cannot resume at \(offset), the file has \(size) bytes"
        case .handlerFailed(let url, let underlying): "\(url): download aborted: \(underlying)"
        case .uploadSourceChanged(let path, let expected, let sent):
            "\(path): the file changed while it was uploaded (\(expected) bytes when it started, it ended after \(sent)); upload it again"
        }
    }
}
