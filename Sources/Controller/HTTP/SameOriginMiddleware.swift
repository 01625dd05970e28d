import HTTPTypes
import Hummingbird

/// Refuses state-changing requests a browser sends on behalf of another site (cross-site request forgery).
///
/// On every method but GET and HEAD: a request with an `Origin` header must come from the controller's own origin
/// (its host and port equal the request's `Host`); `Origin: null` (sandboxed frames, some redirects) is refused, and
/// so is `Sec-Fetch-Site: cross-site` or `same-site`. Requests without these headers (the CLI, agents, curl) are not
/// browsers acting for a page and pass. Routers answer 403 `cross_origin`.
struct SameOriginMiddleware<Context: RequestContext>: RouterMiddleware {
    static var secFetchSite: HTTPField.Name { HTTPField.Name("Sec-Fetch-Site")! }
    static var host: HTTPField.Name { HTTPField.Name("Host")! }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard !request.method.isSafe else { return try await next(request, context) }
        if let site = Self.otherSite(of: request) {
            throw Self.refusal("the browser says this request comes from another site (Sec-Fetch-Site: \(site.prefix(40)))")
        }
        if let origin = request.headers[.origin] {
            // HTTP/1's Host header is the request's authority in HTTPTypes.
            let host = request.head.authority ?? request.headers[Self.host]
            guard let host, Self.isSameOrigin(origin, host: host) else {
                throw Self.refusal("Origin \(origin.prefix(200)) is not this controller (\(host?.prefix(200) ?? "no Host header"))")
            }
        }
        return try await next(request, context)
    }

    /// The browser's `Sec-Fetch-Site` when it says the request comes from another site's page (`cross-site`,
    /// `same-site`); `nil` for the controller's own pages, a page the user opened (`none`), and clients that are not
    /// browsers.
    static func otherSite(of request: Request) -> String? {
        guard let site = request.headers[secFetchSite]?.lowercased(), site != "same-origin", site != "none" else { return nil }
        return site
    }

    private static func refusal(_ what: String) -> APIError {
        APIError(
            .forbidden,
            "cross_origin",
            "\(what): state-changing requests are accepted from the controller's own origin, or without an Origin header "
                + "(ferry-controller, ferry-agent, curl)"
        )
    }

    /// Whether `origin` (`scheme://host[:port]`) names the same host and port as `host` (`host[:port]`). Default
    /// ports are left out on both sides, so a controller behind a TLS-terminating proxy that passes `Host` on still
    /// matches its `https://` origin.
    static func isSameOrigin(_ origin: String, host: String) -> Bool {
        let lowered = origin.lowercased()
        guard lowered != "null", let separator = lowered.range(of: "://") else { return false }
        let scheme = lowered[..<separator.lowerBound]
        guard scheme == "http" || scheme == "https" else { return false }
        let authority = lowered[separator.upperBound...]
        guard !authority.isEmpty, !authority.contains("/"), !authority.contains("@") else { return false }
        guard let left = normalized(authority), let right = normalized(host.lowercased()[...]) else { return false }
        return left == right
    }

    /// `host` and `port` with a default port (80, 443) dropped, or `nil` when malformed.
    private static func normalized(_ authority: Substring) -> String? {
        var hostPart = authority
        var port: Substring?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { return nil }
            hostPart = authority[...close]
            let rest = authority[authority.index(after: close)...]
            if !rest.isEmpty {
                guard rest.hasPrefix(":") else { return nil }
                port = rest.dropFirst()
            }
        } else if let colon = authority.lastIndex(of: ":") {
            hostPart = authority[..<colon]
            port = authority[authority.index(after: colon)...]
        }
        guard !hostPart.isEmpty else { return nil }
        guard let port else { return String(hostPart) }
        // Digits only (no sign, no empty port), in range.
        guard (1...5).contains(port.utf8.count), port.utf8.allSatisfy({ (0x30...0x39).contains($0) }), let number = Int(port),
            (1...65535).contains(number)
        else { return nil }
        return number == 80 || number == 443 ? String(hostPart) : "\(hostPart):\(number)"
    }
}
