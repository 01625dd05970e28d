import CCurl

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `curl_global_init` is not thread-safe on every libcurl build: run it once, lazily, before the first handle.
private let curlInitialized: Bool = curl_global_init(Int(CURL_GLOBAL_ALL)) == CURLE_OK

/// One libcurl easy transfer. Lives entirely on the dedicated thread that performs it; callbacks reach it through
/// an unretained pointer, which is valid because `perform` keeps `self` alive until curl returns.
final class CurlTransfer {
    /// Where a download goes.
    struct DownloadTarget: Sendable {
        var path: String
        var offset: Int64
        var maxBytes: Int64
    }

    /// Mutable state of a download into a file.
    private final class DownloadState {
        let target: DownloadTarget
        let fd: Int32
        let onEvent: (HTTPClient.DownloadEvent) throws -> Void
        var fileSize: Int64
        var startOffset: Int64
        var written: Int64 = 0
        var began = false
        var alreadyComplete = false
        /// Bytes of a 416's body read and dropped (an error page; `maximumDiscardedBytes` at most).
        var discarded = 0
        var status = 0

        init(target: DownloadTarget, fd: Int32, onEvent: @escaping (HTTPClient.DownloadEvent) throws -> Void) {
            self.target = target
            self.fd = fd
            self.onEvent = onEvent
            self.fileSize = target.offset
            self.startOffset = target.offset
        }
    }

    private let handle: UnsafeMutableRawPointer
    /// Whether `deinit` cleans the handle up (`false`: borrowed from an `HTTPConnection`, which keeps it).
    private let ownsHandle: Bool
    /// The redacted URL, for errors.
    private let url: String
    private let cancellation: CancellationFlag
    private let errorBuffer: UnsafeMutablePointer<CChar>
    private var headerList: UnsafeMutablePointer<curl_slist>?
    private var responseHeaders = HTTPClient.Headers()
    /// Set by a callback that aborts the transfer; wins over curl's own (less precise) result code.
    private var failure: HTTPClientError?
    private var body: [UInt8] = []
    private var bodyLimit = 0
    /// The body stopped at `bodyLimit` and the transfer ended there on purpose (`truncatesResponses`).
    private var truncatesBody = false
    private var truncated = false
    private var download: DownloadState?
    private var upload: UploadSource?
    private var stream: StreamState?
    /// The owner's multi handle, when the transfer runs through one (`HTTPConnection`).
    private var driver: CurlMultiDriver?

    /// A response body handed to a handler as it arrives (`HTTPClient.stream`).
    private final class StreamState {
        let onChunk: ([UInt8]) throws -> Void
        var began = false
        /// Whether the body goes to the handler (a 2xx answer) rather than into `body` (an error answer).
        var streaming = false

        init(onChunk: @escaping ([UInt8]) throws -> Void) {
            self.onChunk = onChunk
        }
    }

    /// A file streamed as the request body.
    private final class UploadSource {
        let path: String
        let fd: Int32
        let size: Int64
        let progress: @Sendable (Int64) -> Void
        var sent: Int64 = 0
        var reported: Int64 = -1

        init(path: String, fd: Int32, size: Int64, progress: @escaping @Sendable (Int64) -> Void) {
            self.path = path
            self.fd = fd
            self.size = size
            self.progress = progress
        }
    }

    private init?(url: String, cancellation: CancellationFlag, reusing borrowed: UnsafeMutableRawPointer? = nil) {
        if let borrowed {
            // Options back to their defaults; the handle's open connections and TLS session cache stay.
            curl_easy_reset(borrowed)
            self.handle = borrowed
            self.ownsHandle = false
        } else {
            guard let handle = Self.makeHandle() else { return nil }
            self.handle = handle
            self.ownsHandle = true
        }
        self.url = url
        self.cancellation = cancellation
        self.errorBuffer = .allocate(capacity: Int(CURL_ERROR_SIZE) + 1)
        self.errorBuffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
    }

    deinit {
        if ownsHandle {
            curl_easy_cleanup(handle)
        } else {
            // The options point at this transfer (callbacks' user data, the header list freed below): clear them before
            // the handle is used again or cleaned up.
            curl_easy_reset(handle)
        }
        curl_slist_free_all(headerList)
        errorBuffer.deallocate()
    }

    /// A new easy handle (`nil` when libcurl cannot make one).
    static func makeHandle() -> UnsafeMutableRawPointer? {
        guard curlInitialized else { return nil }
        return curl_easy_init()
    }

    /// A new multi handle (`nil` when libcurl cannot make one), for `CurlMultiDriver`.
    static func makeMultiHandle() -> UnsafeMutableRawPointer? {
        guard curlInitialized else { return nil }
        return curl_multi_init()
    }

    // MARK: Entry points (called on the dedicated thread)

    /// Performs `request` on a new handle, or on `handle` (kept open by its owner, reset here) when given; through
    /// `driver` (the owner's multi handle) when given, else with `curl_easy_perform`.
    static func send(
        _ request: HTTPClient.Request,
        configuration: HTTPClient.Configuration,
        cancellation: CancellationFlag,
        reusing handle: UnsafeMutableRawPointer? = nil,
        driver: CurlMultiDriver? = nil
    ) -> Result<HTTPClient.Response, HTTPClientError> {
        let url = RedactedURL.redact(request.url)
        guard let transfer = CurlTransfer(url: url, cancellation: cancellation, reusing: handle) else {
            return .failure(.transferFailed(url: url, code: Int32(CURLE_FAILED_INIT.rawValue), message: "curl_easy_init failed"))
        }
        transfer.driver = driver
        do throws(HTTPClientError) {
            transfer.bodyLimit = request.maxResponseBytes ?? configuration.maxResponseBytes
            transfer.truncatesBody = configuration.truncatesResponses
            try transfer.configure(request, configuration: configuration, isDownload: false)
            if !transfer.truncatesBody { try transfer.setOff(CURLOPT_MAXFILESIZE_LARGE, Int64(transfer.bodyLimit)) }
            try transfer.perform()
            return .success(HTTPClient.Response(status: transfer.responseStatus(), headers: transfer.responseHeaders, body: transfer.body))
        } catch {
            guard transfer.truncated else { return .failure(error) }
            return .success(HTTPClient.Response(status: transfer.responseStatus(), headers: transfer.responseHeaders, body: transfer.body))
        }
    }

    static func upload(
        _ request: HTTPClient.Request,
        file path: String,
        configuration: HTTPClient.Configuration,
        cancellation: CancellationFlag,
        progress: @escaping @Sendable (Int64) -> Void
    ) -> Result<HTTPClient.Response, HTTPClientError> {
        let url = RedactedURL.redact(request.url)
        guard let transfer = CurlTransfer(url: url, cancellation: cancellation) else {
            return .failure(.transferFailed(url: url, code: Int32(CURLE_FAILED_INIT.rawValue), message: "curl_easy_init failed"))
        }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return .failure(.file(path: path, operation: "open", errno: errno)) }
        defer { close(fd) }
        do throws(HTTPClientError) {
            var info = stat()
            guard fstat(fd, &info) == 0 else { throw .file(path: path, operation: "fstat", errno: errno) }
            guard info.st_mode & S_IFMT == S_IFREG else { throw .file(path: path, operation: "upload (not a regular file)", errno: EINVAL) }
            let source = UploadSource(path: path, fd: fd, size: Int64(info.st_size), progress: progress)
            transfer.upload = source
            transfer.bodyLimit = request.maxResponseBytes ?? configuration.maxResponseBytes
            try transfer.configure(request, configuration: configuration, isDownload: false)
            try transfer.setOff(CURLOPT_MAXFILESIZE_LARGE, Int64(transfer.bodyLimit))
            // A stalled upload (nothing sent or received for this long) fails instead of waiting for the total timeout.
            try transfer.setLong(CURLOPT_LOW_SPEED_LIMIT, 1)
            try transfer.setLong(CURLOPT_LOW_SPEED_TIME, max(1, Self.milliseconds(configuration.uploadStallTimeout) / 1000))
            try transfer.perform()
            guard source.sent == source.size else { throw .uploadSourceChanged(path: path, expected: source.size, sent: source.sent) }
            source.progress(source.size)
            return .success(HTTPClient.Response(status: transfer.responseStatus(), headers: transfer.responseHeaders, body: transfer.body))
        } catch {
            return .failure(error)
        }
    }

    static func stream(
        _ request: HTTPClient.Request,
        idleTimeout: Duration,
        configuration: HTTPClient.Configuration,
        cancellation: CancellationFlag,
        onChunk: @escaping ([UInt8]) throws -> Void
    ) -> Result<HTTPClient.Response, HTTPClientError> {
        let url = RedactedURL.redact(request.url)
        guard let transfer = CurlTransfer(url: url, cancellation: cancellation) else {
            return .failure(.transferFailed(url: url, code: Int32(CURLE_FAILED_INIT.rawValue), message: "curl_easy_init failed"))
        }
        do throws(HTTPClientError) {
            transfer.stream = StreamState(onChunk: onChunk)
            transfer.bodyLimit = request.maxResponseBytes ?? configuration.maxResponseBytes
            try transfer.configure(request, configuration: configuration, isDownload: false, streamIdleTimeout: idleTimeout)
            try transfer.perform()
            return .success(HTTPClient.Response(status: transfer.responseStatus(), headers: transfer.responseHeaders, body: transfer.body))
        } catch {
            return .failure(error)
        }
    }

    static func download(
        _ request: HTTPClient.Request,
        to target: DownloadTarget,
        configuration: HTTPClient.Configuration,
        cancellation: CancellationFlag,
        onEvent: @escaping (HTTPClient.DownloadEvent) throws -> Void
    ) -> Result<HTTPClient.DownloadResult, HTTPClientError> {
        let url = RedactedURL.redact(request.url)
        guard let transfer = CurlTransfer(url: url, cancellation: cancellation) else {
            return .failure(.transferFailed(url: url, code: Int32(CURLE_FAILED_INIT.rawValue), message: "curl_easy_init failed"))
        }
        // Never through a symbolic link: the caller checked (and locked) the file at the path.
        let fd = open(target.path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { return .failure(.file(path: target.path, operation: "open", errno: errno)) }
        defer { close(fd) }
        do throws(HTTPClientError) {
            var info = stat()
            guard fstat(fd, &info) == 0 else { throw .file(path: target.path, operation: "fstat", errno: errno) }
            guard Int64(info.st_size) >= target.offset else {
                throw .resumeBeyondEnd(path: target.path, offset: target.offset, fileSize: Int64(info.st_size))
            }
            if Int64(info.st_size) > target.offset, ftruncate(fd, off_t(target.offset)) != 0 {
                throw .file(path: target.path, operation: "ftruncate", errno: errno)
            }
            guard lseek(fd, off_t(target.offset), SEEK_SET) >= 0 else { throw .file(path: target.path, operation: "lseek", errno: errno) }
            let state = DownloadState(target: target, fd: fd, onEvent: onEvent)
            transfer.download = state
            try transfer.configure(request, configuration: configuration, isDownload: true)
            try transfer.perform()
            if !state.began, !transfer.beginDownload(state) {
                throw transfer.failure ?? .unexpectedStatus(url: url, status: state.status)
            }
            return .success(
                HTTPClient.DownloadResult(
                    status: state.status,
                    startOffset: state.startOffset,
                    bytesWritten: state.written,
                    fileSize: state.fileSize,
                    alreadyComplete: state.alreadyComplete
                )
            )
        } catch {
            return .failure(error)
        }
    }

    // MARK: Setup

    private func configure(
        _ request: HTTPClient.Request,
        configuration: HTTPClient.Configuration,
        isDownload: Bool,
        streamIdleTimeout: Duration? = nil
    ) throws(HTTPClientError) {
        try setString(CURLOPT_URL, request.url)
        try setLong(CURLOPT_NOSIGNAL, 1)
        try setString(CURLOPT_PROTOCOLS_STR, "http,https")
        try setString(CURLOPT_REDIR_PROTOCOLS_STR, "http,https")
        if request.followRedirects, request.method == .get {
            try setLong(CURLOPT_FOLLOWLOCATION, 1)
            try setLong(CURLOPT_MAXREDIRS, configuration.maxRedirects)
        } else {
            try setLong(CURLOPT_FOLLOWLOCATION, 0)
        }
        try setLong(CURLOPT_CONNECTTIMEOUT_MS, Self.milliseconds(configuration.connectTimeout))
        if let timeout = request.timeout ?? (isDownload || streamIdleTimeout != nil ? nil : configuration.timeout) {
            try setLong(CURLOPT_TIMEOUT_MS, Self.milliseconds(timeout))
        }
        if let streamIdleTimeout {
            // A stream may last for ever; one that brings nothing (not even a keep-alive) for this long is dead.
            try setLong(CURLOPT_LOW_SPEED_LIMIT, 1)
            try setLong(CURLOPT_LOW_SPEED_TIME, max(1, Self.milliseconds(streamIdleTimeout) / 1000))
        }
        if isDownload {
            // 256 KiB receive buffer instead of 16 KiB: 16x fewer write(2) calls and handler rounds on big artifacts.
            try setLong(CURLOPT_BUFFERSIZE, 256 * 1024)
            try setLong(CURLOPT_LOW_SPEED_LIMIT, configuration.lowSpeedLimit)
            try setLong(CURLOPT_LOW_SPEED_TIME, max(1, Self.milliseconds(configuration.lowSpeedTime) / 1000))
        }
        try setLong(CURLOPT_SSL_VERIFYPEER, 1)
        try setLong(CURLOPT_SSL_VERIFYHOST, 2)
        if let caFile = configuration.caFile {
            try setString(CURLOPT_CAINFO, caFile)
            // Instead of the system's CAs, not beside them: libcurl also loads its built-in CA directory
            // (`/etc/ssl/certs` on Debian) unless told not to, and every public CA there stayed trusted for a controller
            // whose operator pinned a private one.
            try check(ferry_curl_setopt_pointer(handle, CURLOPT_CAPATH, nil))
        }
        try setString(CURLOPT_USERAGENT, configuration.userAgent)
        try setString(CURLOPT_NOPROXY, configuration.bypassProxy ? "*" : HTTPClient.noProxyOfThisProcess)
        try check(ferry_curl_setopt_pointer(handle, CURLOPT_ERRORBUFFER, errorBuffer))

        let context = Unmanaged.passUnretained(self).toOpaque()
        try check(ferry_curl_setopt_write_callback(handle, curlWrite))
        try check(ferry_curl_setopt_pointer(handle, CURLOPT_WRITEDATA, context))
        try check(ferry_curl_setopt_header_callback(handle, curlHeader))
        try check(ferry_curl_setopt_pointer(handle, CURLOPT_HEADERDATA, context))
        try check(ferry_curl_setopt_xferinfo_callback(handle, curlProgress))
        try check(ferry_curl_setopt_pointer(handle, CURLOPT_XFERINFODATA, context))
        try setLong(CURLOPT_NOPROGRESS, 0)

        var headers = request.headers
        switch request.method {
        case .get:
            try setLong(CURLOPT_HTTPGET, 1)
        case .head:
            try setLong(CURLOPT_NOBODY, 1)
        case .post, .put, .patch, .delete:
            if request.method != .post { try setString(CURLOPT_CUSTOMREQUEST, request.method.rawValue) }
            if let upload {
                // The body comes from the read callback: POST with a known size (CURLOPT_POSTFIELDS stays unset).
                try setLong(CURLOPT_POST, 1)
                try setOff(CURLOPT_POSTFIELDSIZE_LARGE, upload.size)
                try check(ferry_curl_setopt_read_callback(handle, curlRead))
                try check(ferry_curl_setopt_pointer(handle, CURLOPT_READDATA, Unmanaged.passUnretained(self).toOpaque()))
                if !headers.contains("Content-Type") { headers["Content-Type"] = "application/octet-stream" }
            } else if request.body != nil || request.method != .delete {
                try setBody(request.body ?? [])
                // curl would label the body as a form otherwise.
                if !headers.contains("Content-Type") { headers["Content-Type"] = "application/octet-stream" }
            }
        }
        // No `Expect: 100-continue` round trip: Ferry's bodies are small.
        headers["Expect"] = ""
        for field in headers.fields {
            // "Name:" tells curl to drop a header; "Name;" sends it empty.
            let line = field.value.isEmpty ? (field.name == "Expect" ? "Expect:" : "\(field.name);") : "\(field.name): \(field.value)"
            guard let list = curl_slist_append(headerList, line) else {
                throw .transferFailed(url: url, code: Int32(CURLE_OUT_OF_MEMORY.rawValue), message: "curl_slist_append failed")
            }
            headerList = list
        }
        try check(ferry_curl_setopt_slist(handle, CURLOPT_HTTPHEADER, headerList))
    }

    private func setBody(_ bytes: [UInt8]) throws(HTTPClientError) {
        try setOff(CURLOPT_POSTFIELDSIZE_LARGE, Int64(bytes.count))
        // COPYPOSTFIELDS copies, so the array need not outlive this call; a non-null pointer even when empty.
        var copy = bytes
        copy.append(0)
        let code = copy.withUnsafeMutableBytes { ferry_curl_setopt_pointer(handle, CURLOPT_COPYPOSTFIELDS, $0.baseAddress) }
        try check(code)
    }

    private func setLong(_ option: CURLoption, _ value: Int) throws(HTTPClientError) {
        try check(ferry_curl_setopt_long(handle, option, value))
    }

    private func setOff(_ option: CURLoption, _ value: Int64) throws(HTTPClientError) {
        try check(ferry_curl_setopt_off(handle, option, curl_off_t(value)))
    }

    private func setString(_ option: CURLoption, _ value: String) throws(HTTPClientError) {
        try check(ferry_curl_setopt_string(handle, option, value))
    }

    private func check(_ code: CURLcode) throws(HTTPClientError) {
        guard code == CURLE_OK else { throw map(code) }
    }

    // MARK: Running

    private func perform() throws(HTTPClientError) {
        let code = withExtendedLifetime(self) {
            guard let driver else { return curl_easy_perform(handle) }
            return driver.perform(handle) { cancellation.isCancelled }
        }
        if let failure { throw failure }
        guard code == CURLE_OK else { throw map(code) }
    }

    private func responseStatus() -> Int {
        var status = 0
        _ = ferry_curl_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &status)
        return status
    }

    private func map(_ code: CURLcode) -> HTTPClientError {
        let buffered = String(cString: errorBuffer)
        let message = buffered.isEmpty ? String(cString: curl_easy_strerror(code)) : buffered
        let number = Int32(bitPattern: code.rawValue)
        switch code {
        case CURLE_UNSUPPORTED_PROTOCOL, CURLE_URL_MALFORMAT:
            return .invalidRequest(url: url, reason: message)
        case CURLE_COULDNT_RESOLVE_HOST, CURLE_COULDNT_RESOLVE_PROXY, CURLE_COULDNT_CONNECT:
            return .connectionFailed(url: url, code: number, message: message)
        case CURLE_OPERATION_TIMEDOUT:
            return .timedOut(url: url, message: message)
        case CURLE_SSL_CONNECT_ERROR, CURLE_PEER_FAILED_VERIFICATION, CURLE_SSL_CERTPROBLEM, CURLE_SSL_CIPHER,
            CURLE_SSL_CACERT_BADFILE, CURLE_SSL_ISSUER_ERROR, CURLE_SSL_PINNEDPUBKEYNOTMATCH, CURLE_SSL_INVALIDCERTSTATUS,
            CURLE_SSL_CRL_BADFILE, CURLE_SSL_ENGINE_NOTFOUND, CURLE_SSL_ENGINE_SETFAILED, CURLE_SSL_ENGINE_INITFAILED,
            CURLE_USE_SSL_FAILED, CURLE_SSL_SHUTDOWN_FAILED, CURLE_SSL_CLIENTCERT:
            var verifyResult = 0
            _ = ferry_curl_getinfo_long(handle, CURLINFO_SSL_VERIFYRESULT, &verifyResult)
            let plain = TLSFailure.explain(curlCode: Int(number), verifyResult: verifyResult, curlMessage: message)
            return .tls(url: url, code: number, message: "\(plain) (curl: \(message))")
        case CURLE_FILESIZE_EXCEEDED:
            return .responseTooLarge(url: url, limit: Int64(bodyLimit))
        case CURLE_ABORTED_BY_CALLBACK:
            return .cancelled(url: url)
        default:
            return .transferFailed(url: url, code: number, message: message)
        }
    }

    // MARK: Callbacks

    fileprivate func receiveBody(_ buffer: UnsafeRawBufferPointer) -> Int {
        if cancellation.isCancelled {
            failure = .cancelled(url: url)
            return 0
        }
        if let stream {
            if !stream.began {
                stream.began = true
                stream.streaming = (200..<300).contains(responseStatus())
            }
            if stream.streaming {
                do {
                    try stream.onChunk(Array(buffer))
                } catch {
                    failure = .handlerFailed(url: url, underlying: error)
                    return 0
                }
                return buffer.count
            }
        }
        guard let download else {
            guard body.count + buffer.count <= bodyLimit else {
                if truncatesBody {
                    body.append(contentsOf: buffer.prefix(bodyLimit - body.count))
                    truncated = true
                }
                failure = .responseTooLarge(url: url, limit: Int64(bodyLimit))
                return 0
            }
            body.append(contentsOf: buffer)
            return buffer.count
        }
        if !download.began, !beginDownload(download) { return 0 }
        if download.alreadyComplete {
            // The 416 body is an error page: a few hundred bytes. One that goes on (a server that never ends it) would
            // hold the transfer, and the agent's pass, for as long as it trickles.
            download.discarded += buffer.count
            guard download.discarded <= Self.maximumDiscardedBytes else {
                failure = .responseTooLarge(url: url, limit: Int64(Self.maximumDiscardedBytes))
                return 0
            }
            return buffer.count
        }
        guard download.fileSize + Int64(buffer.count) <= download.target.maxBytes else {
            failure = .responseTooLarge(url: url, limit: download.target.maxBytes)
            return 0
        }
        var remaining = buffer
        while let base = remaining.baseAddress, !remaining.isEmpty {
            let n = write(download.fd, base, remaining.count)
            if n < 0 {
                if errno == EINTR { continue }
                failure = .file(path: download.target.path, operation: "write", errno: errno)
                return 0
            }
            remaining = UnsafeRawBufferPointer(rebasing: remaining[n...])
        }
        download.fileSize += Int64(buffer.count)
        download.written += Int64(buffer.count)
        do {
            try download.onEvent(.chunk(buffer))
        } catch {
            failure = .handlerFailed(url: url, underlying: error)
            return 0
        }
        return buffer.count
    }

    /// Most bytes of a `416 Range Not Satisfiable` body read (and dropped) before the download fails.
    static let maximumDiscardedBytes = 64 * 1024

    /// Decides what the response means for the file, once its headers are in. `false` aborts with `failure` set.
    private func beginDownload(_ download: DownloadState) -> Bool {
        download.began = true
        let status = responseStatus()
        download.status = status
        let offset = download.target.offset
        switch status {
        case 206:
            let header = responseHeaders["Content-Range"] ?? ""
            guard Self.contentRangeStart(header) == offset else {
                failure = .invalidContentRange(url: url, expectedOffset: offset, header: header)
                return false
            }
        case 200:
            if offset > 0 {
                // The server ignored the Range: start the file over.
                guard ftruncate(download.fd, 0) == 0, lseek(download.fd, 0, SEEK_SET) == 0 else {
                    failure = .file(path: download.target.path, operation: "ftruncate", errno: errno)
                    return false
                }
                download.fileSize = 0
                download.startOffset = 0
            }
        case 416 where offset > 0:
            download.alreadyComplete = true
            return true
        default:
            failure = .unexpectedStatus(url: url, status: status)
            return false
        }
        do {
            try download.onEvent(.began(status: status, offset: download.startOffset))
        } catch {
            failure = .handlerFailed(url: url, underlying: error)
            return false
        }
        return true
    }

    fileprivate func receiveHeader(_ buffer: UnsafeRawBufferPointer) {
        // Read as bytes: the header block of every poll and report comes through here, and trimming `Character`s
        // (grapheme breaking) was 5 % of an idle agent's CPU.
        var end = buffer.count
        while end > 0, buffer[end - 1] == 0x0d || buffer[end - 1] == 0x0a { end -= 1 }
        let line = UnsafeRawBufferPointer(rebasing: buffer[0..<end])
        if line.starts(with: "HTTP/".utf8) {
            // A new response (after a redirect or a 100 Continue): only the last one's headers count.
            responseHeaders = HTTPClient.Headers()
        } else if let colon = line.firstIndex(of: UInt8(ascii: ":")) {
            let name = Self.trimmed(UnsafeRawBufferPointer(rebasing: line[..<colon]))
            let value = Self.trimmed(UnsafeRawBufferPointer(rebasing: line[(colon + 1)...]))
            if !name.isEmpty { responseHeaders.add(name: name, value: value) }
        }
    }

    fileprivate var isCancelled: Bool { cancellation.isCancelled }

    /// Fills curl's buffer from the upload file; never more than the size announced in `Content-Length`.
    fileprivate func readUpload(_ buffer: UnsafeMutableRawBufferPointer) -> Int {
        guard let upload, let base = buffer.baseAddress else { return Int(CURL_READFUNC_ABORT) }
        if cancellation.isCancelled {
            failure = .cancelled(url: url)
            return Int(CURL_READFUNC_ABORT)
        }
        let wanted = Int(min(Int64(buffer.count), upload.size - upload.sent))
        guard wanted > 0 else { return 0 }
        while true {
            let count = read(upload.fd, base, wanted)
            if count < 0 {
                if errno == EINTR { continue }
                failure = .file(path: upload.path, operation: "read", errno: errno)
                return Int(CURL_READFUNC_ABORT)
            }
            if count == 0 {
                failure = .uploadSourceChanged(path: upload.path, expected: upload.size, sent: upload.sent)
                return Int(CURL_READFUNC_ABORT)
            }
            upload.sent += Int64(count)
            return count
        }
    }

    /// Reports upload progress (from curl's progress callback, on the transfer's thread).
    fileprivate func reportProgress(uploaded: Int64) {
        guard let upload, uploaded != upload.reported else { return }
        upload.reported = uploaded
        upload.progress(uploaded)
    }

    /// The first byte of `bytes <first>-<last>/<total>`.
    private static func contentRangeStart(_ header: String) -> Int64? {
        let trimmed = Self.trimmed(Substring(header))
        guard trimmed.lowercased().hasPrefix("bytes ") else { return nil }
        let spec = trimmed.dropFirst("bytes ".count)
        guard let dash = spec.firstIndex(of: "-") else { return nil }
        return Int64(Self.trimmed(spec[..<dash]))
    }

    /// `text` without leading and trailing spaces and tabs.
    private static func trimmed(_ text: Substring) -> String {
        Array(text.utf8).withUnsafeBytes { trimmed($0) }
    }

    /// `bytes` without leading and trailing spaces and tabs, as text.
    private static func trimmed(_ bytes: UnsafeRawBufferPointer) -> String {
        var start = 0
        var end = bytes.count
        while start < end, bytes[start] == 0x20 || bytes[start] == 0x09 { start += 1 }
        while end > start, bytes[end - 1] == 0x20 || bytes[end - 1] == 0x09 { end -= 1 }
        return String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<end]), as: UTF8.self)
    }

    private static func milliseconds(_ duration: Duration) -> Int {
        let (seconds, attoseconds) = duration.components
        let total = Double(seconds) * 1000 + Double(attoseconds) / 1e15
        return max(1, Int(min(total, Double(Int32.max))))
    }
}

// Non-capturing closures so they convert to C function pointers; the transfer arrives as `userdata`.

private let curlWrite: ferry_curl_data_callback = { pointer, size, count, userdata in
    guard let userdata else { return 0 }
    let transfer = Unmanaged<CurlTransfer>.fromOpaque(userdata).takeUnretainedValue()
    return transfer.receiveBody(UnsafeRawBufferPointer(start: pointer, count: size * count))
}

private let curlHeader: ferry_curl_data_callback = { pointer, size, count, userdata in
    guard let userdata else { return 0 }
    Unmanaged<CurlTransfer>.fromOpaque(userdata).takeUnretainedValue()
        .receiveHeader(UnsafeRawBufferPointer(start: pointer, count: size * count))
    return size * count
}

private let curlProgress: ferry_curl_xferinfo_callback = { userdata, _, _, _, uploaded in
    guard let userdata else { return 1 }
    let transfer = Unmanaged<CurlTransfer>.fromOpaque(userdata).takeUnretainedValue()
    transfer.reportProgress(uploaded: Int64(uploaded))
    return transfer.isCancelled ? 1 : 0
}

private let curlRead: ferry_curl_read_callback = { buffer, size, count, userdata in
    guard let userdata, let buffer else { return Int(CURL_READFUNC_ABORT) }
    return Unmanaged<CurlTransfer>.fromOpaque(userdata).takeUnretainedValue()
        .readUpload(UnsafeMutableRawBufferPointer(start: buffer, count: size * count))
}
