import Shared

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The agent's side of the controller API (DESIGN §2): enrollment, desired state with ETag and long-poll, status.
///
/// With `connections`, polls go one after the other over one kept-open connection and reports over another (one TCP
/// connection and TLS session each for the agent's whole life, while the controller keeps them): a report must not
/// wait behind a parked long-poll, which holds its connection for up to a minute. Without, each request is a one-off
/// `HTTPClient.send` (enrolment, `ferry-agent once`).
struct AgentControllerClient: Sendable, CustomStringConvertible {
    /// Base URL without a trailing slash, e.g. `https://ferry.internal:8443`.
    let baseURL: String
    let token: String
    let http: HTTPClient
    /// The kept-open connections polls and reports use, when the agent runs.
    let connections: (polls: HTTPConnection, reports: HTTPConnection)?

    init(baseURL: String, token: String, http: HTTPClient, connections: (polls: HTTPConnection, reports: HTTPConnection)? = nil) {
        self.baseURL = Self.trimmed(baseURL)
        self.token = token
        self.http = http
        self.connections = connections
    }

    /// The answer to a desired-state poll.
    enum Poll: Sendable, Equatable {
        case changed(DesiredState, etag: String?)
        case notModified
    }

    /// `GET /v1/agents/{id}/desired-state`, with `If-None-Match` and, when `wait > 0`, a long-poll; sent `after` the
    /// given pause (the poll interval of a loop), which the kept-open connection's own thread waits out.
    func desiredState(agentID: String, etag: String?, wait: Int, after pause: Duration = .zero) async throws(ControllerError) -> Poll {
        var url = "\(baseURL)/v1/agents/\(Self.escape(agentID))/desired-state"
        if wait > 0 { url += "?wait=\(wait)" }
        var headers = authorization
        if let etag { headers["If-None-Match"] = etag }
        let response = try await send(
            HTTPClient.Request(method: .get, url: url, headers: headers, timeout: .seconds(wait + 20)),
            over: connections?.polls,
            after: pause
        )
        if response.status == 304 { return .notModified }
        try Self.check(response, url: url)
        do {
            let state = try DesiredState(json: JSONValue.parse(response.body))
            return .changed(state, etag: Self.usableETag(response.headers["ETag"]))
        } catch {
            throw .invalid(url: url, error)
        }
    }

    /// `GET /v1/roots/{version}`: one trust root's envelope (verified by the caller, never here).
    func root(version: Int64) async throws(ControllerError) -> Envelope {
        let url = "\(baseURL)/v1/roots/\(version)"
        let response = try await send(
            HTTPClient.Request(method: .get, url: url, headers: authorization, timeout: .seconds(30)),
            over: connections?.polls
        )
        try Self.check(response, url: url)
        do {
            return try Envelope.decode(response.body)
        } catch {
            throw .invalid(url: url, error)
        }
    }

    /// `POST /v1/agents/{id}/status`.
    func report(_ report: StatusReport, agentID: String) async throws(ControllerError) {
        let url = "\(baseURL)/v1/agents/\(Self.escape(agentID))/status"
        var headers = authorization
        headers["Content-Type"] = "application/json"
        let response = try await send(
            HTTPClient.Request(method: .post, url: url, headers: headers, body: Array(report.json.encoded())),
            over: connections?.reports
        )
        try Self.check(response, url: url)
    }

    /// `POST /v1/agents` with an enrollment token: trades it for this agent's id, and its token unless the agent chose
    /// one (`chosenToken`, sent as its digest: the controller answers with the id alone, and answers a retry after a
    /// lost answer again).
    static func enroll(
        baseURL: String,
        enrollToken: String,
        request: EnrollRequest,
        chosenToken: String? = nil,
        http: HTTPClient
    ) async throws(ControllerError) -> EnrollResponse {
        let client = AgentControllerClient(baseURL: baseURL, token: enrollToken, http: http)
        let url = "\(client.baseURL)/v1/agents"
        var headers = client.authorization
        headers["Content-Type"] = "application/json"
        var request = request
        request.tokenSHA256 = chosenToken.map { SHA256.hash(Array($0.utf8)) }
        let response = try await client.send(
            HTTPClient.Request(method: .post, url: url, headers: headers, body: Array(request.json.encoded())),
            over: nil
        )
        try check(response, url: url)
        do {
            let document = try JSONValue.parse(response.body)
            guard let chosenToken else { return try EnrollResponse(json: document) }
            return EnrollResponse(agentID: try EnrollAcknowledgement(json: document).agentID, token: chosenToken)
        } catch {
            throw .invalid(url: url, error)
        }
    }

    /// Never shows the token.
    var description: String { "AgentControllerClient(\(RedactedURL.redact(baseURL)))" }

    private var authorization: HTTPClient.Headers { ["Authorization": "Bearer \(token)"] }

    private func send(
        _ request: HTTPClient.Request,
        over connection: HTTPConnection?,
        after pause: Duration = .zero
    ) async throws(ControllerError) -> HTTPClient.Response {
        if connection == nil, pause > .zero, (try? await Task.sleep(for: pause)) == nil {
            throw .unreachable(.cancelled(url: RedactedURL.redact(request.url)))
        }
        do {
            if let connection { return try await connection.send(request, notBefore: pause > .zero ? .now + pause : nil) }
            return try await http.send(request)
        } catch {
            throw .unreachable(error)
        }
    }

    /// Throws `.rejected` for an error status, with the error body's code and message cut to `maximumErrorCodeBytes`
    /// and `maximumErrorMessageBytes` on one line: the text goes into every log line of a failed poll and into the
    /// agent's state file (`controllerProblem`), and an error body of megabytes (a compromised controller, a proxy's
    /// page) made that file larger than the agent reads back, so it would not start again.
    static func check(_ response: HTTPClient.Response, url: String) throws(ControllerError) {
        guard !response.isSuccess else { return }
        let body =
            response.body.count <= maximumErrorBodyBytes ? try? JSONDecoder().decode(APIErrorBody.self, from: Data(response.body)) : nil
        throw .rejected(
            url: url,
            status: response.status,
            code: body.map { Self.oneLine($0.error, maximumBytes: maximumErrorCodeBytes) } ?? "http_\(response.status)",
            message: body.map { Self.oneLine($0.message, maximumBytes: maximumErrorMessageBytes) } ?? ""
        )
    }

    /// Longest error body read for its code and message (the controller's are under 1 KiB).
    static let maximumErrorBodyBytes = 64 * 1024
    static let maximumErrorCodeBytes = 64
    static let maximumErrorMessageBytes = 1024

    static func oneLine(_ text: String, maximumBytes: Int) -> String {
        var scalars = String.UnicodeScalarView()
        scalars.append(contentsOf: ReportText.freeText(text, maximumBytes: maximumBytes).unicodeScalars.map { $0 == "\n" ? " " : $0 })
        return String(scalars)
    }

    static func trimmed(_ url: String) -> String {
        var url = url
        while url.hasSuffix("/") { url.removeLast() }
        return url
    }

    /// The controller's `ETag` when a request can carry it back as `If-None-Match`, `nil` otherwise (the next poll is
    /// then unconditional). A value with a control character — a bare CR passes through libcurl — would fail every
    /// later poll before it is sent (`HTTPClient.validate`), and the agent would never fetch anything again.
    static func usableETag(_ value: String?) -> String? {
        guard let value, !value.isEmpty, value.utf8.count <= maximumETagBytes, value.utf8.allSatisfy({ (0x20...0x7e).contains($0) }) else {
            return nil
        }
        return value
    }

    /// The longest `ETag` kept (Ferry's are 66 bytes).
    static let maximumETagBytes = 1024

    /// Percent-escapes a path segment (agent ids are opaque to the agent).
    static func escape(_ segment: String) -> String { PercentEncoding.encode(segment) }
}

/// Why a controller call failed.
enum ControllerError: Error, CustomStringConvertible {
    /// The controller could not be reached (network, TLS, timeout): keep running what is applied and retry later.
    case unreachable(HTTPClientError)
    /// The controller answered with an error status.
    case rejected(url: String, status: Int, code: String, message: String)
    /// The controller answered something that is not a valid document.
    case invalidResponse(url: String, reason: String)

    /// `.invalidResponse` for a document `error` refused, its text cut to
    /// `AgentControllerClient.maximumErrorMessageBytes` on one line. A parse error quotes what it refuses (an unknown
    /// field's name is as long as the controller sends it, up to the whole 16 MiB body), and the text goes into every
    /// log line of a failed poll, into the agent's state file (`controllerProblem`) and, through a trust root that
    /// could not be fetched, into the message and failures of every service: a state file larger than the agent reads
    /// back, so it would not start again.
    static func invalid(url: String, _ error: any Error) -> ControllerError {
        .invalidResponse(url: url, reason: AgentControllerClient.oneLine("\(error)", maximumBytes: AgentControllerClient.maximumErrorMessageBytes))
    }

    var description: String {
        switch self {
        case .unreachable(let error): "controller unreachable: \(error)"
        case .rejected(let url, let status, let code, let message):
            "controller refused \(RedactedURL.redact(url)): HTTP \(status) \(code)\(message.isEmpty ? "" : ": \(message)")"
        case .invalidResponse(let url, let reason): "invalid answer from \(RedactedURL.redact(url)): \(reason)"
        }
    }
}
