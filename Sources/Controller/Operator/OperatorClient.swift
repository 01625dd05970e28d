import Foundation
import Shared

/// The operator commands' HTTP client for the controller's API.
///
/// It runs on Shared's libcurl `HTTPClient`, like the agent: TLS peer and host verification always on, against the
/// system trust store or a CA bundle given with `--ca-file`. (URLSession on Linux cannot be given a CA file: the
/// `URLSessionCertificateAuthorityInfoFile` switch of swift-corelibs-foundation is read on Android only.)
struct OperatorClient: Sendable {
    /// The controller's base URL (`https://host:port`), without a trailing slash.
    let baseURL: String
    let token: String
    let http: HTTPClient
    /// Longest an exchange other than an upload may take.
    let timeout: Duration

    /// Largest JSON answer read (a release listing of 500 envelopes fits).
    static let maximumResponseBytes = 256 << 20
    /// Longest an artifact upload may take in all, at least (a stall fails sooner, see `HTTPClient.Configuration`).
    static let uploadTimeout: Duration = .seconds(3600)
    /// The slowest average an upload longer than `uploadTimeout` may keep: 100 KiB/s. A fixed hour refused any artifact
    /// of 4 GiB (the server's default limit) over an uplink below 9.5 Mbit/s, which no retry could help.
    static let slowestUploadRate: Int64 = 100 << 10

    /// How long an upload of `size` bytes may take in all.
    static func uploadTimeout(forSize size: Int64) -> Duration {
        max(uploadTimeout, .seconds(max(0, size) / slowestUploadRate))
    }

    /// - Parameter caFile: PEM CA bundle to verify the controller's certificate against instead of the system store.
    init(baseURL: String, token: String, caFile: String? = nil, timeout: Duration = .seconds(60)) {
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.token = token
        self.timeout = timeout
        var configuration = HTTPClient.Configuration()
        configuration.caFile = caFile
        configuration.timeout = timeout
        configuration.maxResponseBytes = Self.maximumResponseBytes
        configuration.userAgent = "ferry-controller/\(FerryVersion.current)"
        self.http = HTTPClient(configuration: configuration)
    }

    private func request(_ method: HTTPClient.Request.Method, _ path: String) -> HTTPClient.Request {
        var request = HTTPClient.Request(method: method, url: baseURL + path)
        request.setBearerToken(token)
        return request
    }

    /// `GET path` as JSON.
    func getJSON(_ path: String) async throws(ClientError) -> JSONValue {
        let request = request(.get, path)
        return try Self.decode(try await perform(request), request: request, expecting: [200])
    }

    /// `DELETE path`; the JSON answer.
    func deleteJSON(_ path: String) async throws(ClientError) -> JSONValue {
        let request = request(.delete, path)
        return try Self.decode(try await perform(request), request: request, expecting: [200])
    }

    /// `POST path` with a JSON body; the JSON answer.
    func postJSON(_ path: String, body: Data, expecting: Set<Int> = [200, 201]) async throws(ClientError) -> JSONValue {
        var request = request(.post, path)
        request.body = Array(body)
        request.headers["Content-Type"] = "application/json"
        return try Self.decode(try await perform(request), request: request, expecting: expecting)
    }

    /// Whether the controller already stores the artifact (`HEAD /v1/artifacts/<sha256>`): `publish`'s first request.
    /// - Parameter service: the service being published, named in the error when the token may not publish it.
    /// - Throws: `ClientError.api`; for a refused token (401, 403) with a message saying why (`refusedToken`), since
    ///   the answer to a HEAD has no body to carry the controller's own.
    func hasArtifact(_ digest: SHA256Digest, publishing service: String? = nil) async throws(ClientError) -> Bool {
        try await storedArtifactSize(digest, publishing: service) != nil
    }

    /// The size of the controller's copy of the artifact (`HEAD /v1/artifacts/<sha256>`, its `Content-Length`), or `nil`
    /// when it has none. A copy whose size is not the artifact's is damaged (a partial restore, a disk error): `publish`
    /// uploads the artifact again, which replaces it.
    /// - Throws: as `hasArtifact`.
    func storedArtifactSize(_ digest: SHA256Digest, publishing service: String? = nil) async throws(ClientError) -> Int64? {
        let request = request(.head, ArtifactReference.controllerPath(for: digest))
        let response = try await perform(request)
        switch response.status {
        case 200:
            // A controller that says nothing of the size (a proxy that drops the header) is taken at its word.
            return response.headers["content-length"].flatMap { Int64($0) } ?? -1
        case 404: return nil
        case 401, 403: throw Self.refusedToken(status: response.status, request: request, publishing: service)
        default:
            _ = try Self.decode(response, request: request, expecting: [200])
            return nil
        }
    }

    /// The error for a token the controller refused to publish with, by what the operator can do about it: 401, a token
    /// the controller does not accept (mistyped, expired, revoked); 403, one whose role or scope does not cover
    /// publishing (a viewer or enroll token).
    static func refusedToken(status: Int, request: HTTPClient.Request, publishing service: String?) -> ClientError {
        let code: String
        let message: String
        if status == 401 {
            code = "unauthorized"
            message =
                "the controller refused the token given with --token or FERRY_TOKEN: it is not one this controller knows, "
                + "or it has expired or been revoked; ask an operator for a new one"
        } else {
            code = "forbidden"
            let what = service.map { "publishing service \($0)" } ?? "publishing"
            message = "the token's role or scope does not allow \(what): that needs an operator token"
        }
        return .api(method: request.method.rawValue, url: RedactedURL.redact(request.url), status: status, code: code, message: message)
    }

    /// Uploads a file as an artifact, streamed from disk, calling `progress` with the bytes sent so far.
    func uploadArtifact(
        file: String,
        digest: SHA256Digest,
        size: Int64,
        progress: @escaping @Sendable (Int64) -> Void
    ) async throws(ClientError) -> JSONValue {
        var request = request(.post, "/v1/artifacts")
        request.headers["Content-Type"] = "application/octet-stream"
        request.headers["X-Ferry-SHA256"] = digest.hex
        request.timeout = Self.uploadTimeout(forSize: size)
        let response: HTTPClient.Response
        do {
            response = try await http.upload(request, file: file, progress: progress)
        } catch {
            throw Self.transportError(error, request: request)
        }
        return try Self.decode(response, request: request, expecting: [200, 201])
    }

    private func perform(_ request: HTTPClient.Request) async throws(ClientError) -> HTTPClient.Response {
        do {
            return try await http.send(request)
        } catch {
            throw Self.transportError(error, request: request)
        }
    }

    static func transportError(_ error: HTTPClientError, request: HTTPClient.Request) -> ClientError {
        let url = RedactedURL.redact(request.url)
        switch error {
        case .tls(_, let code, let message):
            // `message` starts with the plain-language reading (TLSFailure) and keeps curl's own words.
            return .transport(method: request.method.rawValue, url: url, reason: "TLS failure: \(message) (curl \(code))", mayPass: false)
        case .responseTooLarge(_, let limit):
            return .badResponse(method: request.method.rawValue, url: url, reason: "answer larger than \(limit) bytes")
        case .timedOut, .transferFailed:
            return .transport(method: request.method.rawValue, url: url, reason: Self.reason(error), mayHaveArrived: true)
        case .connectionFailed:
            return .transport(method: request.method.rawValue, url: url, reason: Self.reason(error))
        case .file, .uploadSourceChanged:
            // The file being uploaded, not the way to the controller: "cannot reach the controller" would send the
            // operator after the network.
            return .local(method: request.method.rawValue, url: url, reason: "\(error)")
        default:
            return .transport(method: request.method.rawValue, url: url, reason: Self.reason(error), mayPass: false)
        }
    }

    /// The error's message without the URL it starts with (the `ClientError` names it already).
    private static func reason(_ error: HTTPClientError) -> String {
        let text = "\(error)"
        if let url = error.url, text.hasPrefix(url + ": ") { return String(text.dropFirst(url.count + 2)) }
        return text
    }

    static func decode(_ response: HTTPClient.Response, request: HTTPClient.Request, expecting: Set<Int>) throws(ClientError) -> JSONValue {
        let method = request.method.rawValue
        let url = RedactedURL.redact(request.url)
        let status = response.status
        let json = response.body.isEmpty ? nil : try? JSONValue.parse(response.body)
        guard expecting.contains(status) else {
            if case .object(let fields)? = json, case .string(let code)? = fields["error"], case .string(let message)? = fields["message"] {
                throw .api(method: method, url: url, status: status, code: code, message: message)
            }
            let text = String(decoding: response.body.prefix(300), as: UTF8.self)
            throw .api(method: method, url: url, status: status, code: "http_\(status)", message: text.isEmpty ? "no details" : text)
        }
        guard let json else { throw .badResponse(method: method, url: url, reason: "status \(status) without a JSON body") }
        return json
    }
}
