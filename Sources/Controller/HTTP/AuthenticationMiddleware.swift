import HTTPTypes
import Hummingbird

/// Authenticates every request of its route group and puts the principal in the request context.
///
/// Refuses, before any handler runs: no token (401), a malformed or unknown one (401), a revoked or expired one (401
/// `token_revoked`, `token_expired`), HTTP Basic where the group or the method does not allow it (401
/// `bearer_required`), a token of a role the group does not allow (403).
struct AuthenticationMiddleware: RouterMiddleware {
    typealias Context = FerryRequestContext

    let authenticator: Authenticator
    let policy: AccessPolicy

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let challenge = policy.challenge.header
        guard let header = request.headers[.authorization] else {
            throw APIError.unauthorized("an Authorization header with a Ferry token is required", challenge: challenge)
        }
        guard let (scheme, token) = Authenticator.credentials(fromAuthorization: header) else {
            throw APIError.unauthorized(
                policy.basicOnReads
                    ? "the Authorization header must be \"Bearer <token>\" or HTTP Basic with the token as password"
                    : "the Authorization header must be \"Bearer <token>\"",
                challenge: challenge
            )
        }
        if scheme == .basic && !(policy.basicOnReads && request.method.isSafe) {
            throw APIError(
                .unauthorized,
                "bearer_required",
                "\(request.method.rawValue) \(context.endpointPath ?? request.uri.path) needs \"Authorization: Bearer <token>\"; HTTP Basic "
                    + "is accepted only on GET of the dashboard and of read-only JSON",
                headers: [.wwwAuthenticate: Authenticator.Challenge.bearer.header]
            )
        }
        if scheme == .basic, let refusal = Self.crossSiteRefusal(request) { throw refusal }
        let principal = try await authenticator.principal(forToken: token, challenge: policy.challenge)
        guard policy.roles.contains(principal.role) else {
            throw APIError.forbidden("this needs a token with role \(policy.rolesText); this token has role \(principal.role.rawValue)")
        }
        var context = context
        context.principal = principal
        context.credential = token
        return try await next(request, context)
    }

    /// HTTP Basic credentials a browser sent for another site's page: refused unless the request opens a page
    /// (`Sec-Fetch-Mode: navigate` to a `document`, a link followed from a chat or a ticket). A browser may send cached
    /// Basic credentials with another site's `<img>` or `<iframe>`: sixteen of them on a page an operator opened held all
    /// of the token's event streams. Requests without these headers (curl, scripts) are not browsers and pass.
    static func crossSiteRefusal(_ request: Request) -> APIError? {
        guard let site = SameOriginMiddleware<Context>.otherSite(of: request) else { return nil }
        let mode = request.headers[secFetchMode]?.lowercased()
        let destination = request.headers[secFetchDest]?.lowercased()
        if mode == "navigate", destination == "document" { return nil }
        return APIError(
            .forbidden,
            "cross_origin",
            "the browser sent this request for another site's page (Sec-Fetch-Site: \(site.prefix(40))): HTTP Basic credentials are "
                + "accepted from the controller's own pages, or to open one"
        )
    }

    static var secFetchMode: HTTPField.Name { HTTPField.Name("Sec-Fetch-Mode")! }
    static var secFetchDest: HTTPField.Name { HTTPField.Name("Sec-Fetch-Dest")! }
}

extension HTTPRequest.Method {
    /// GET and HEAD: the methods that change nothing on this controller.
    var isSafe: Bool { self == .get || self == .head }
}
