import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Shared
import Synchronization

/// Finds the principal behind a token, with a cache that never serves a revoked, removed or expired token.
///
/// Found principals are cached by token digest: the desired-state poll of every agent must not cost a database read.
/// A cached principal is used only while the `TokenRevocations` file is unchanged since it was read (one `stat` per
/// request), and its expiry is checked at every use. Last-used times are noted in memory, at most once per
/// `lastUsedInterval` per token, and written by `flushUsage()` off the request path (`TokenUsageRecorder`).
final class Authenticator: Sendable {
    /// How the authenticator caches and records use.
    struct Configuration: Sendable {
        /// How often at most a token's last-used time is recorded. Default 60 s.
        var lastUsedInterval: Duration = .seconds(60)
        /// Bound on cached principals; beyond it the cache starts over (a fleet has far fewer tokens). Default 100 000.
        var cacheLimit = 100_000

        init() {}
    }

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

    /// How the token arrived.
    enum Scheme: Sendable, Equatable {
        case bearer
        case basic
    }

    private struct CacheEntry: Sendable {
        let digest: String
        let principal: Principal
        /// The revocation file as it was before the principal was read from the database.
        let stamp: TokenRevocations.Stamp
    }

    private struct Cache: Sendable {
        var entries: [String: CacheEntry] = [:]
        var stamp: TokenRevocations.Stamp?
    }

    private struct Usage: Sendable {
        /// When each token's use was last noted (pending or written).
        var noted: [String: Date] = [:]
        /// Uses not yet written.
        var pending: [String: Date] = [:]
    }

    let configuration: Configuration
    private let store: any ControllerStore
    private let revocations: TokenRevocations
    private let now: @Sendable () -> Date
    private let cache = Mutex(Cache())
    private let usage = Mutex(Usage())

    init(
        _ configuration: Configuration = .init(),
        store: any ControllerStore,
        revocations: TokenRevocations,
        now: @escaping @Sendable () -> Date = { Date() }
    ) {
        self.configuration = configuration
        self.store = store
        self.revocations = revocations
        self.now = now
    }

    /// Checks that `token` still stands for `principal`, which it was found for when a request began: a request whose
    /// body or wait outlasts its token (revoked, its agent removed or replaced meanwhile) acts no more. Costs a cache
    /// lookup unless some token stopped working since; then it reads the store.
    /// - Throws: what `principal(forToken:challenge:)` throws (401 for a token that stopped working), or a 401 when the
    ///   token now stands for another principal.
    func confirm(_ principal: Principal, token: Substring, challenge: Challenge) async throws {
        let current = try await self.principal(forToken: token, challenge: challenge)
        guard current.role == principal.role, current.agentID == principal.agentID, current.tokenID == principal.tokenID else {
            throw APIError.unauthorized("the token no longer stands for who began this request", challenge: challenge.header)
        }
    }

    /// The principal of `token`.
    /// - Throws: `APIError` 401: not a Ferry token, unknown (never created, or its agent was removed), revoked,
    ///   expired.
    func principal(forToken token: Substring, challenge: Challenge) async throws -> Principal {
        guard Token.isWellFormed(token) else {
            throw APIError.unauthorized("the token is not a Ferry token (fyt_...)", challenge: challenge.header)
        }
        let digest = Token.digest(token)
        // Taken before the database read: a revocation committed after this point changes the file, so whatever is
        // read below is never served from the cache once the revocation is visible.
        var stamp = revocations.stamp()
        if stamp == nil, !revocations.othersAreUnheard {
            // Deleted under a running server: a new file is a new inode, so nothing cached before can match it. (Not
            // while other controllers are unheard, when there is no stamp whatever the file is: every request, each
            // agent's poll too, opened, chmodded and closed the file then.)
            try? revocations.prepare()
            stamp = revocations.stamp()
        }
        // The cache is keyed by a prefix of the digest and the full digests compared in constant time, so the lookup's
        // timing says nothing about a stored token. (The database lookup is by full digest: its timing can only leak a
        // digest prefix, which does not help find a 192-bit token.)
        let key = String(digest.prefix(16))
        if let stamp, let entry = cache.withLock({ $0.entries[key] }), entry.stamp == stamp, Token.constantTimeEquals(entry.digest, digest) {
            try checkExpiry(entry.principal, challenge: challenge)
            noteUse(of: entry.principal)
            return entry.principal
        }
        guard let credential = try await store.credential(forTokenHash: digest) else {
            throw APIError.unauthorized(
                "the token is not known to this controller (never created here, or its agent was removed)",
                challenge: challenge.header
            )
        }
        let principal = credential.principal
        if let revokedAt = credential.revokedAt {
            throw APIError(
                .unauthorized,
                "token_revoked",
                "token \(principal.tokenID ?? "") (\(principal.name)) was revoked at \(Timestamp.format(revokedAt)); ask an operator for a new one",
                headers: [.wwwAuthenticate: challenge.header]
            )
        }
        try checkExpiry(principal, challenge: challenge)
        if let stamp {
            cache.withLock { cache in
                if cache.stamp != stamp || cache.entries.count >= configuration.cacheLimit {
                    cache.entries.removeAll(keepingCapacity: true)
                    cache.stamp = stamp
                }
                cache.entries[key] = CacheEntry(digest: digest, principal: principal, stamp: stamp)
            }
        }
        noteUse(of: principal)
        return principal
    }

    /// The principal of `token` when it can be answered from the cache alone: found before, the revocation file
    /// unchanged since, not expired. `nil` otherwise — then `principal(forToken:challenge:)` decides (and gives the
    /// error). What the desired-state poll handler checks on every request without leaving the event loop.
    func cachedPrincipal(forToken token: Substring) -> Principal? {
        guard Token.isWellFormed(token), let stamp = revocations.stamp() else { return nil }
        let digest = Token.digest(token)
        guard let entry = cache.withLock({ $0.entries[String(digest.prefix(16))] }), entry.stamp == stamp,
            Token.constantTimeEquals(entry.digest, digest)
        else { return nil }
        if let expiresAt = entry.principal.expiresAt, expiresAt <= now() { return nil }
        noteUse(of: entry.principal)
        return entry.principal
    }

    private func checkExpiry(_ principal: Principal, challenge: Challenge) throws {
        guard let expiresAt = principal.expiresAt, expiresAt <= now() else { return }
        throw APIError(
            .unauthorized,
            "token_expired",
            "token \(principal.tokenID ?? "") (\(principal.name)) expired at \(Timestamp.format(expiresAt)); ask an operator for a new one",
            headers: [.wwwAuthenticate: challenge.header]
        )
    }

    /// Drops every cached principal (after a revocation in this process, in addition to the revocation file).
    func forgetAll() {
        cache.withLock { $0 = Cache() }
    }

    // MARK: Last use

    private func noteUse(of principal: Principal) {
        guard let id = principal.tokenID else { return }  // agent tokens: the agent's last-seen time says it.
        let instant = now()
        let interval = Double(configuration.lastUsedInterval.components.seconds)
        usage.withLock { usage in
            if let noted = usage.noted[id], instant.timeIntervalSince(noted) < interval { return }
            usage.noted[id] = instant
            usage.pending[id] = instant
        }
    }

    /// Writes the noted last-used times (one transaction). On failure they are kept for the next flush. Notes older
    /// than the interval are forgotten (a use now would be noted again anyway): tokens created and dropped over months
    /// (a pipeline's token per run) do not pile up here.
    func flushUsage() async throws {
        let instant = now()
        let interval = Double(configuration.lastUsedInterval.components.seconds)
        let pending = usage.withLock { usage in
            let pending = usage.pending
            usage.pending.removeAll()
            usage.noted = usage.noted.filter { _, noted in instant.timeIntervalSince(noted) < interval }
            return pending
        }
        guard !pending.isEmpty else { return }
        do {
            try await store.recordTokenUse(pending)
        } catch {
            usage.withLock { usage in usage.pending.merge(pending) { newer, _ in newer } }
            throw error
        }
    }

    /// How many tokens' last use is remembered (noted within the interval, or not written yet).
    var notedTokens: Int { usage.withLock { $0.noted.count } }

    // MARK: Headers

    /// The token in a `Bearer` or `Basic` authorization header, and which scheme carried it.
    static func credentials(fromAuthorization header: String) -> (scheme: Scheme, token: Substring)? {
        // Every agent request: `Bearer <token>`, read without splitting and lowercasing (same result as below).
        if header.utf8.count > bearerPrefix.count, header.utf8.starts(with: bearerPrefix) {
            return (.bearer, Substring(header.utf8.dropFirst(bearerPrefix.count).drop(while: { $0 == UInt8(ascii: " ") })))
        }
        let parts = header.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
        guard parts.count == 2 else { return nil }
        let scheme = parts[0].lowercased()
        let credentials = parts[1].drop(while: { $0 == " " })
        switch scheme {
        case "bearer":
            return (.bearer, credentials)
        case "basic":
            guard credentials.utf8.count <= 1024, let decoded = Data(base64Encoded: String(credentials)),
                let text = String(data: decoded, encoding: .utf8), let colon = text.firstIndex(of: ":")
            else { return nil }
            return (.basic, Substring(text[text.index(after: colon)...]))
        default:
            return nil
        }
    }

    private static let bearerPrefix = Array("Bearer ".utf8)

    /// The token in a `Bearer` or `Basic` authorization header.
    static func token(fromAuthorization header: String) -> Substring? {
        credentials(fromAuthorization: header)?.token
    }
}
