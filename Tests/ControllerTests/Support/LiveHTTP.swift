import Foundation
import Shared

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Real HTTP over loopback sockets for live tests (URLSession, the same stack the operator CLI uses).
struct LiveHTTP: Sendable {
    struct Response: Sendable {
        var status: Int
        var headers: [String: String]
        var body: Data

        func header(_ name: String) -> String? {
            headers.first { $0.key.lowercased() == name.lowercased() }?.value
        }
    }

    let session: URLSession

    init(maximumConnections: Int = 8, timeout: TimeInterval = 90) {
        let configuration = URLSessionConfiguration.ephemeral
        configuration.httpMaximumConnectionsPerHost = maximumConnections
        configuration.timeoutIntervalForRequest = timeout
        configuration.requestCachePolicy = .reloadIgnoringLocalCacheData
        session = URLSession(configuration: configuration)
    }

    func send(_ method: String, _ url: String, token: String? = nil, headers: [String: String] = [:], body: Data? = nil) async throws -> Response {
        guard let target = URL(string: url) else { throw FixtureError("bad URL \(url)") }
        var request = URLRequest(url: target)
        request.httpMethod = method
        request.httpBody = body
        if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        for (name, value) in headers { request.setValue(value, forHTTPHeaderField: name) }
        let session = self.session
        return try await withCheckedThrowingContinuation { continuation in
            session.dataTask(with: request) { data, response, error in
                if let error {
                    continuation.resume(throwing: error)
                    return
                }
                guard let http = response as? HTTPURLResponse else {
                    continuation.resume(throwing: FixtureError("not an HTTP response"))
                    return
                }
                var headers: [String: String] = [:]
                for (key, value) in http.allHeaderFields {
                    if let key = key as? String, let value = value as? String { headers[key] = value }
                }
                continuation.resume(returning: Response(status: http.statusCode, headers: headers, body: data ?? Data()))
            }.resume()
        }
    }
}

extension LiveHTTP {
    /// Enrolls an agent named `name` (its hostname too) for `services` at the controller `baseURL` with `token`.
    func enroll(_ baseURL: String, token: String, name: String, services: [String] = ["api"]) async throws -> EnrollResponse {
        let enrolled = try await send(
            "POST",
            baseURL + "/v1/agents",
            token: token,
            body: Data(EnrollRequest(name: name, hostname: name, services: services, replace: false).json.encoded())
        )
        guard enrolled.status == 201 else {
            throw FixtureError("enrolling \(name): \(enrolled.status) \(String(decoding: enrolled.body, as: UTF8.self))")
        }
        return try EnrollResponse(json: JSONValue.parse(Array(enrolled.body)))
    }
}
