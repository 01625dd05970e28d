/// Why a request to the controller failed, as the operator should read it.
enum ClientError: Error, CustomStringConvertible, Equatable {
    /// The controller answered with an API error.
    case api(method: String, url: String, status: Int, code: String, message: String)
    /// No answer (connection refused, DNS, TLS, timeout). `mayHaveArrived`: the request may have reached the controller
    /// (a timeout, a transfer that broke), so its effect is unknown. `mayPass`: the same request may get through later
    /// (a connection refused, a timeout), not one that fails the same way every time (a certificate that does not
    /// verify, a request the client cannot send).
    case transport(method: String, url: String, reason: String, mayHaveArrived: Bool = false, mayPass: Bool = true)
    /// An answer that is not what the API promises.
    case badResponse(method: String, url: String, reason: String)
    /// The request could not be sent for a reason on this machine (the file to upload changed, vanished or cannot be
    /// read): nothing to do with the network or the controller.
    case local(method: String, url: String, reason: String)

    var description: String {
        switch self {
        case .api(let method, let url, let status, let code, let message):
            "\(method) \(url): \(status) \(code): \(message)"
        case .transport(let method, let url, let reason, _, _):
            "\(method) \(url): cannot reach the controller: \(reason)"
        case .badResponse(let method, let url, let reason):
            "\(method) \(url): unexpected answer: \(reason)"
        case .local(let method, let url, let reason):
            "\(method) \(url): not sent: \(reason)"
        }
    }

    /// Whether trying again later may succeed: no answer (but a TLS failure), or one a controller restarting, a database failover or a load
    /// balancer gives (429, 502, 503, 504). Not an answer that will stay the same (401, 403, 404, a bad document).
    var isTransient: Bool {
        switch self {
        case .transport(_, _, _, _, let mayPass): mayPass
        case .api(_, _, let status, _, _): [429, 502, 503, 504].contains(status)
        case .badResponse, .local: false
        }
    }

    /// The API error code, when the controller gave one.
    var code: String? {
        if case .api(_, _, _, let code, _) = self { return code }
        return nil
    }
}
