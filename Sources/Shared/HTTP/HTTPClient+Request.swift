extension HTTPClient {
    /// One HTTP request for `HTTPClient.send` (nested so it never collides with swift-http-types' `HTTPRequest`).
    package struct Request: Sendable {
        /// The methods Ferry uses.
        package enum Method: String, Sendable {
            case get = "GET"
            case head = "HEAD"
            case post = "POST"
            case put = "PUT"
            case patch = "PATCH"
            case delete = "DELETE"
        }

        package var method: Method
        /// An absolute `http://` or `https://` URL.
        package var url: String
        package var headers: Headers
        /// Bytes to send (sent with `Content-Length`); `nil` sends no body.
        package var body: [UInt8]?
        /// Longest the whole exchange may take; `nil` uses `HTTPClient.Configuration.timeout`. A long poll that the
        /// server holds for `wait` needs `wait` plus a margin here.
        package var timeout: Duration?
        /// Follow up to `Configuration.maxRedirects` redirects. Honoured for `GET` only (an S3 presigned artifact URL
        /// may redirect); never for requests that change state.
        package var followRedirects: Bool
        /// Largest response body accepted; `nil` uses `HTTPClient.Configuration.maxResponseBytes`.
        package var maxResponseBytes: Int?

        package init(
            method: Method = .get,
            url: String,
            headers: Headers = [:],
            body: [UInt8]? = nil,
            timeout: Duration? = nil,
            followRedirects: Bool = false,
            maxResponseBytes: Int? = nil
        ) {
            self.method = method
            self.url = url
            self.headers = headers
            self.body = body
            self.timeout = timeout
            self.followRedirects = followRedirects
            self.maxResponseBytes = maxResponseBytes
        }

        /// Sets `Authorization: Bearer <token>`. The token never appears in errors or logs of the client.
        package mutating func setBearerToken(_ token: String) {
            headers["Authorization"] = "Bearer \(token)"
        }

        /// The request with `Authorization: Bearer <token>` set.
        package func withBearerToken(_ token: String) -> Request {
            var copy = self
            copy.setBearerToken(token)
            return copy
        }
    }
}
