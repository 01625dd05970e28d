import CCurl

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// An HTTP/1.1 and HTTP/2 client over libcurl: bounded in-memory exchanges (`send`) and resumable streaming
/// downloads to a file (`download`).
///
/// Every transfer runs `curl_easy_perform` on its own OS thread (never on the cooperative pool) and is aborted
/// when the calling task is cancelled. TLS peer and host verification are always on. Only `http` and `https`
/// are allowed, also across redirects.
package struct HTTPClient: Sendable {
    package struct Configuration: Sendable {
        /// Longest wait for TCP connect plus TLS handshake. Default 10 s.
        package var connectTimeout: Duration = .seconds(10)
        /// Longest a whole `send` may take when the request sets no `timeout`. Default 60 s.
        package var timeout: Duration = .seconds(60)
        /// Downloads slower than this many bytes per second for `lowSpeedTime` are aborted. Default 1024. (Not
        /// applied to `send`, whose long polls are legitimately silent; its total timeout bounds it instead.)
        package var lowSpeedLimit: Int = 1024
        /// See `lowSpeedLimit`. Default 30 s.
        package var lowSpeedTime: Duration = .seconds(30)
        /// An `upload` fails when nothing was sent or received for this long (the server may legitimately be quiet
        /// while it stores a large body). Default 120 s.
        package var uploadStallTimeout: Duration = .seconds(120)
        /// PEM bundle of CA certificates to trust instead of the system store (a private controller CA). Default
        /// `nil`: the system store.
        package var caFile: String?
        /// Sent as `User-Agent`. Default `ferry/<version>`.
        package var userAgent: String = "ferry/\(FerryVersion.current)"
        /// Largest body `send` keeps in memory when the request sets no limit. Default 16 MiB.
        package var maxResponseBytes: Int = 16 << 20
        /// Redirects followed when a GET asks for it. Default 5.
        package var maxRedirects: Int = 5
        /// Connect directly even when `http_proxy`/`https_proxy` name a proxy (libcurl honours them by default): for
        /// link-local endpoints such as the EC2 instance metadata service, which no proxy can reach. Default `false`.
        package var bypassProxy = false
        /// `send` keeps the first `maxResponseBytes` of a longer body and ends the transfer there, instead of failing
        /// with `.responseTooLarge`: for health probes, which judge the status (a verbose status page is no failure).
        /// Default `false`.
        package var truncatesResponses = false

        package init() {}
    }

    package let configuration: Configuration

    package init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
    }

    /// Performs `request` and returns the whole response, whatever its status.
    ///
    /// - Throws: `HTTPClientError` for everything that is not a complete HTTP response: connection, TLS, timeout,
    ///   a body over the limit (`.responseTooLarge`), cancellation.
    package func send(_ request: Request) async throws(HTTPClientError) -> Response {
        let url = RedactedURL.redact(request.url)
        try Self.validate(request.url, headers: request.headers)
        if Task.isCancelled { throw .cancelled(url: url) }
        let configuration = self.configuration
        let flag = CancellationFlag()
        let result = await DedicatedThread.run(cancellation: flag) {
            CurlTransfer.send(request, configuration: configuration, cancellation: flag)
        }
        return try result.get()
    }

    /// Performs `request` (a POST; its `body` is ignored) with the contents of the file at `path` as the body, streamed
    /// from disk, and returns the whole response, whatever its status.
    ///
    /// `progress` is called on the transfer's thread with the bytes sent so far (often, cheaply) and once with the
    /// file's size at the end. The total time limit is the request's `timeout` (or `Configuration.timeout`); a
    /// transfer that moves nothing for `Configuration.uploadStallTimeout` fails sooner.
    /// - Throws: as `send`, plus `.file` when the file cannot be read and `.uploadSourceChanged` when it got shorter
    ///   while being sent.
    package func upload(
        _ request: Request,
        file path: String,
        progress: @escaping @Sendable (Int64) -> Void = { _ in }
    ) async throws(HTTPClientError) -> Response {
        let url = RedactedURL.redact(request.url)
        try Self.validate(request.url, headers: request.headers)
        guard request.method == .post else { throw .invalidRequest(url: url, reason: "uploads are POST requests") }
        if Task.isCancelled { throw .cancelled(url: url) }
        let configuration = self.configuration
        let flag = CancellationFlag()
        let result = await DedicatedThread.run(cancellation: flag) {
            CurlTransfer.upload(request, file: path, configuration: configuration, cancellation: flag, progress: progress)
        }
        return try result.get()
    }

    /// Performs `request` and hands a 2xx answer's body to `onChunk` as it arrives, until the server ends it, the
    /// calling task is cancelled, `onChunk` throws, or nothing at all arrives for `idleTimeout` (a stream of
    /// server-sent events whose keep-alive comments stopped). There is no total time limit unless the request sets
    /// one. Returns the response: for a 2xx answer its body is empty (it went to `onChunk`); any other answer's body
    /// is kept (up to the response limit) and `onChunk` is never called.
    ///
    /// `onChunk` runs on the transfer's thread; throwing ends the transfer with `.handlerFailed`.
    /// - Throws: as `send`; `.timedOut` after `idleTimeout` of silence.
    package func stream(
        _ request: Request,
        idleTimeout: Duration,
        onChunk: sending @escaping ([UInt8]) throws -> Void
    ) async throws(HTTPClientError) -> Response {
        let url = RedactedURL.redact(request.url)
        try Self.validate(request.url, headers: request.headers)
        if Task.isCancelled { throw .cancelled(url: url) }
        let configuration = self.configuration
        let flag = CancellationFlag()
        let result = await DedicatedThread.run(cancellation: flag) {
            CurlTransfer.stream(request, idleTimeout: idleTimeout, configuration: configuration, cancellation: flag, onChunk: onChunk)
        }
        return try result.get()
    }

    /// Streams the body of a GET of `url` into the file at `path`, resuming at `offset`.
    ///
    /// With `offset > 0` the file is cut to `offset` bytes and `Range: bytes=<offset>-` is sent: a `206` appends;
    /// a `200` (server ignoring ranges) truncates the file and starts from 0 (the handler sees `.began(offset: 0)`);
    /// a `416` means the file already holds everything the server has (`alreadyComplete`, nothing written).
    /// Writing stops before the file would exceed `maxBytes` (`.responseTooLarge`). The file is not fsynced.
    ///
    /// - Parameters:
    ///   - headers: extra request headers (a bearer token for the controller).
    ///   - followRedirects: follow up to `Configuration.maxRedirects` redirects (presigned object-store URLs).
    ///   - timeout: total time limit; `nil` (default) relies on the connect timeout and the low-speed limit.
    ///   - onEvent: called on the transfer's thread for the start of the body and after every chunk is written;
    ///     throwing aborts the transfer with `.handlerFailed`.
    package func download(
        from url: String,
        to path: String,
        resumeFrom offset: Int64 = 0,
        maxBytes: Int64,
        headers: Headers = [:],
        followRedirects: Bool = false,
        timeout: Duration? = nil,
        onEvent: sending @escaping (DownloadEvent) throws -> Void = { _ in }
    ) async throws(HTTPClientError) -> DownloadResult {
        let redacted = RedactedURL.redact(url)
        try Self.validate(url, headers: headers)
        guard offset >= 0, maxBytes >= 0 else {
            throw .invalidRequest(url: redacted, reason: "negative offset or size limit")
        }
        if Task.isCancelled { throw .cancelled(url: redacted) }
        var requestHeaders = headers
        requestHeaders["Range"] = offset > 0 ? "bytes=\(offset)-" : nil
        let request = Request(method: .get, url: url, headers: requestHeaders, timeout: timeout, followRedirects: followRedirects)
        let target = CurlTransfer.DownloadTarget(path: path, offset: offset, maxBytes: maxBytes)
        let configuration = self.configuration
        let flag = CancellationFlag()
        let result = await DedicatedThread.run(cancellation: flag) {
            CurlTransfer.download(request, to: target, configuration: configuration, cancellation: flag, onEvent: onEvent)
        }
        return try result.get()
    }

    /// Hosts reached without the proxy `http_proxy`/`https_proxy` name: the environment's `no_proxy` (or `NO_PROXY`),
    /// plus the loopback addresses. libcurl makes no exception for loopback: with `http_proxy` set (an instance behind a
    /// proxy, as docs/agent.md describes) a controller on `http://127.0.0.1` was asked through the proxy, its agent token
    /// in clear in every request.
    package static func noProxy(environment: [String: String]) -> String {
        let configured = String((environment["no_proxy"] ?? environment["NO_PROXY"] ?? "").filter { $0 != " " && $0 != "\t" })
        if configured == "*" { return "*" }
        let loopback = "localhost,127.0.0.0/8,::1"
        return configured.isEmpty ? loopback : configured + "," + loopback
    }

    /// `noProxy` of this process's environment, read once.
    static let noProxyOfThisProcess = noProxy(environment: ProcessInfo.processInfo.environment)

    package static func validate(_ url: String, headers: Headers) throws(HTTPClientError) {
        let lower = url.lowercased()
        guard lower.hasPrefix("http://") || lower.hasPrefix("https://") else {
            throw .invalidRequest(url: RedactedURL.redact(url), reason: "only absolute http:// and https:// URLs are supported")
        }
        guard !url.utf8.contains(where: { $0 <= 0x20 || $0 == 0x7f }) else {
            throw .invalidRequest(url: RedactedURL.redact(url), reason: "the URL contains spaces or control characters")
        }
        for field in headers.fields {
            let tokenOK = !field.name.isEmpty && field.name.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7f && $0 != UInt8(ascii: ":") }
            guard tokenOK, !field.value.utf8.contains(where: { $0 == 0x0d || $0 == 0x0a || $0 == 0 }) else {
                throw .invalidRequest(url: RedactedURL.redact(url), reason: "header \"\(field.name)\" has an invalid name or value")
            }
        }
    }
}
