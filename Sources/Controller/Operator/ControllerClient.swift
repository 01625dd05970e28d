import Foundation
import Shared
import Synchronization

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// The operator commands' HTTP client for the controller's API (URLSession).
struct ControllerClient: Sendable {
    /// The controller's base URL (`http://host:port`), without a trailing slash.
    let baseURL: String
    let token: String
    let session: URLSession

    /// Largest JSON answer read (a release listing of 500 envelopes fits).
    static let maximumResponseBytes = 256 << 20

    init(baseURL: String, token: String, timeout: Duration = .seconds(60)) {
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.token = token
        let configuration = URLSessionConfiguration.ephemeral
        configuration.timeoutIntervalForRequest = Double(timeout.components.seconds)
        configuration.httpMaximumConnectionsPerHost = 8
        configuration.requestCachePolicy = .reloadIgnoringLocalCacheData
        self.session = URLSession(configuration: configuration)
    }

    private func request(_ method: String, _ path: String) throws(ClientError) -> URLRequest {
        guard let url = URL(string: baseURL + path) else {
            throw .transport(method: method, url: baseURL + path, reason: "not a valid URL")
        }
        var request = URLRequest(url: url)
        request.httpMethod = method
        request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization")
        request.setValue("ferry-controller/\(FerryVersion.current)", forHTTPHeaderField: "User-Agent")
        return request
    }

    /// `GET path` as JSON.
    func getJSON(_ path: String) async throws(ClientError) -> JSONValue {
        let request = try request("GET", path)
        let (data, status) = try await perform(request)
        return try Self.decode(data, status: status, request: request, expecting: [200])
    }

    /// `DELETE path`; the JSON answer.
    func deleteJSON(_ path: String) async throws(ClientError) -> JSONValue {
        let request = try request("DELETE", path)
        let (data, status) = try await perform(request)
        return try Self.decode(data, status: status, request: request, expecting: [200])
    }

    /// `POST path` with a JSON body; the JSON answer.
    func postJSON(_ path: String, body: Data, expecting: Set<Int> = [200, 201]) async throws(ClientError) -> JSONValue {
        var request = try request("POST", path)
        request.httpBody = body
        request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        let (data, status) = try await perform(request)
        return try Self.decode(data, status: status, request: request, expecting: expecting)
    }

    /// Whether the controller already stores the artifact (`HEAD /v1/artifacts/<sha256>`).
    func hasArtifact(_ digest: SHA256Digest) async throws(ClientError) -> Bool {
        let request = try request("HEAD", ArtifactReference.controllerPath(for: digest))
        let (data, status) = try await perform(request)
        switch status {
        case 200: return true
        case 404: return false
        default:
            _ = try Self.decode(data, status: status, request: request, expecting: [200])
            return false
        }
    }

    /// Uploads a file as an artifact, streamed from disk, calling `progress` with the bytes sent so far.
    func uploadArtifact(
        file: String,
        digest: SHA256Digest,
        progress: @escaping @Sendable (Int64) -> Void
    ) async throws(ClientError) -> JSONValue {
        var uploadRequest = try request("POST", "/v1/artifacts")
        uploadRequest.setValue("application/octet-stream", forHTTPHeaderField: "Content-Type")
        uploadRequest.setValue(digest.hex, forHTTPHeaderField: "X-Ferry-SHA256")
        // An upload may take long; the per-request idle timeout of the session still applies.
        uploadRequest.timeoutInterval = 3600
        let request = uploadRequest
        let fileURL = URL(fileURLWithPath: file)
        let session = self.session
        let holder = TaskHolder()
        let result: Result<(Data, Int), ClientError> = await withTaskGroup(of: Result<(Data, Int), ClientError>?.self) { group in
            group.addTask {
                await withCheckedContinuation { continuation in
                    let task = session.uploadTask(with: request, fromFile: fileURL) { data, response, error in
                        continuation.resume(returning: Self.outcome(data, response, error, request: request))
                    }
                    holder.task.withLock { $0 = task }
                    task.resume()
                }
            }
            group.addTask {
                // Progress is sampled: cheap, and smooth enough for a bar.
                while !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(200))
                    if let task = holder.task.withLock({ $0 }) { progress(task.countOfBytesSent) }
                }
                return nil
            }
            var outcome: Result<(Data, Int), ClientError> = .failure(
                .transport(method: "POST", url: request.url?.absoluteString ?? "", reason: "upload did not finish")
            )
            if let first = await group.next(), let value = first { outcome = value }
            group.cancelAll()
            return outcome
        }
        let (data, status) = try result.get()
        return try Self.decode(data, status: status, request: request, expecting: [200, 201])
    }

    private func perform(_ request: URLRequest) async throws(ClientError) -> (Data, Int) {
        let session = self.session
        let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<(Data, Int), ClientError>, Never>) in
            let task = session.dataTask(with: request) { data, response, error in
                continuation.resume(returning: Self.outcome(data, response, error, request: request))
            }
            task.resume()
        }
        return try result.get()
    }

    private static func outcome(
        _ data: Data?,
        _ response: URLResponse?,
        _ error: (any Error)?,
        request: URLRequest
    ) -> Result<(Data, Int), ClientError> {
        let method = request.httpMethod ?? "GET"
        let url = request.url?.absoluteString ?? ""
        if let error { return .failure(.transport(method: method, url: url, reason: error.localizedDescription)) }
        guard let http = response as? HTTPURLResponse else {
            return .failure(.badResponse(method: method, url: url, reason: "not an HTTP response"))
        }
        return .success((data ?? Data(), http.statusCode))
    }

    private static func decode(_ data: Data, status: Int, request: URLRequest, expecting: Set<Int>) throws(ClientError) -> JSONValue {
        let method = request.httpMethod ?? "GET"
        let url = request.url?.absoluteString ?? ""
        guard data.count <= maximumResponseBytes else {
            throw .badResponse(method: method, url: url, reason: "answer of \(data.count) bytes is too large")
        }
        let json = data.isEmpty ? nil : try? JSONValue.parse(data)
        guard expecting.contains(status) else {
            if case .object(let fields)? = json, case .string(let code)? = fields["error"], case .string(let message)? = fields["message"] {
                throw .api(method: method, url: url, status: status, code: code, message: message)
            }
            let text = String(decoding: data.prefix(300), as: UTF8.self)
            throw .api(method: method, url: url, status: status, code: "http_\(status)", message: text.isEmpty ? "no details" : text)
        }
        guard let json else { throw .badResponse(method: method, url: url, reason: "status \(status) without a JSON body") }
        return json
    }
}

/// Hands the upload task to the progress sampler.
private final class TaskHolder: Sendable {
    let task = Mutex<URLSessionUploadTask?>(nil)
}
