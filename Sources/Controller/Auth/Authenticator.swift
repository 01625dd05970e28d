import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Synchronization

/// Finds the principal behind a request's token and enforces which roles a route allows.
///
/// Accepts `Authorization: Bearer <token>` and, so a browser can log in to the dashboard, HTTP Basic with any user
/// name and the token as password. Found principals are cached by token digest: the desired-state poll of every
/// agent must not cost a database read.
final class Authenticator: Sendable {
    /// How a 401 asks the client to authenticate.
    enum Challenge: Sendable {
        /// API routes: `WWW-Authenticate: Bearer`.
        case bearer
        /// The dashboard: `WWW-Authenticate: Basic`, so the browser shows its login prompt.
        case basic

        var header: String {
            switch self {
            case .bearer: #"Bearer realm="ferry""#
            case .basic: #"Basic realm="ferry", charset="UTF-8""#
            }
        }
    }

    private struct CacheEntry: Sendable {
        let digest: String
        let principal: Principal
    }

    private let store: any ControllerStore
    private let cache = Mutex<[String: CacheEntry]>([:])
    /// Bound on cached principals; beyond it the cache starts over (a fleet has far fewer tokens).
    private let cacheLimit = 100_000

    init(store: any ControllerStore) {
        self.store = store
    }

    /// The principal of `request`, which must hold one of `roles`.
    /// - Throws: `APIError` 401 (no or unknown token) or 403 (a valid token of another role).
    func require(_ roles: Set<TokenRole>, for request: Request, challenge: Challenge = .bearer) async throws -> Principal {
        let principal = try await authenticate(request, challenge: challenge)
        guard roles.contains(principal.role) else {
            let allowed = TokenRole.allCases.filter(roles.contains).map(\.rawValue).joined(separator: " or ")
            throw APIError.forbidden("this needs a token with role \(allowed); this token has role \(principal.role.rawValue)")
        }
        return principal
    }

    /// The principal of `request`.
    /// - Throws: `APIError` 401.
    func authenticate(_ request: Request, challenge: Challenge = .bearer) async throws -> Principal {
        guard let header = request.headers[.authorization] else {
            throw APIError.unauthorized("an Authorization header with a Ferry token is required", challenge: challenge.header)
        }
        guard let token = Self.token(fromAuthorization: header) else {
            throw APIError.unauthorized(
                "the Authorization header must be \"Bearer <token>\" or HTTP Basic with the token as password",
                challenge: challenge.header
            )
        }
        guard Token.isWellFormed(token) else {
            throw APIError.unauthorized("the token is not a Ferry token (fyt_...)", challenge: challenge.header)
        }
        let digest = Token.digest(token)
        // The cache is keyed by a prefix of the digest and the full digests compared in constant time, so the lookup's
        // timing says nothing about a stored token. (The database lookup is by full digest: its timing can only leak a
        // digest prefix, which does not help find a 192-bit token.)
        let key = String(digest.prefix(16))
        if let entry = cache.withLock({ $0[key] }), Token.constantTimeEquals(entry.digest, digest) {
            return entry.principal
        }
        guard let principal = try await store.principal(forTokenHash: digest) else {
            throw APIError.unauthorized("the token is not known to this controller", challenge: challenge.header)
        }
        cache.withLock { entries in
            if entries.count >= cacheLimit { entries.removeAll(keepingCapacity: true) }
            entries[key] = CacheEntry(digest: digest, principal: principal)
        }
        return principal
    }

    /// Drops cached tokens of an agent (after re-enrolment rotated its token).
    func forgetAgent(id: String) {
        cache.withLock { entries in entries = entries.filter { $0.value.principal.agentID != id } }
    }

    /// The token in a `Bearer` or `Basic` authorization header.
    static func token(fromAuthorization header: String) -> Substring? {
        let parts = header.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
        guard parts.count == 2 else { return nil }
        let scheme = parts[0].lowercased()
        let credentials = parts[1].drop(while: { $0 == " " })
        switch scheme {
        case "bearer":
            return credentials
        case "basic":
            guard credentials.utf8.count <= 1024, let decoded = Data(base64Encoded: String(credentials)),
                let text = String(data: decoded, encoding: .utf8), let colon = text.firstIndex(of: ":")
            else { return nil }
            return Substring(text[text.index(after: colon)...])
        default:
            return nil
        }
    }
}
