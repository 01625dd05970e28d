import Foundation

/// An operator, enroll or viewer token as `token list` and `GET /v1/tokens` show it: never the secret, never its hash.
struct TokenRecord: Sendable, Equatable {
    /// The public id, `tok_` and 16 hex characters.
    var id: String
    var name: String
    var role: TokenRole
    /// What an enrollment token may enroll for; `nil` for the other roles.
    var scope: ServiceScope?
    var createdAt: Date
    /// When it stops working; `nil`: never.
    var expiresAt: Date?
    /// How many enrolments it allows; `nil`: no limit (enroll tokens only).
    var maxUses: Int?
    /// Enrolments made with it (enroll tokens only).
    var uses: Int
    /// Last authenticated use, recorded at most about once a minute.
    var lastUsedAt: Date?
    /// When it was revoked; a revoked token is refused on every route.
    var revokedAt: Date?

    init(
        id: String,
        name: String,
        role: TokenRole,
        scope: ServiceScope? = nil,
        createdAt: Date,
        expiresAt: Date? = nil,
        maxUses: Int? = nil,
        uses: Int = 0,
        lastUsedAt: Date? = nil,
        revokedAt: Date? = nil
    ) {
        self.id = id
        self.name = name
        self.role = role
        self.scope = scope
        self.createdAt = createdAt
        self.expiresAt = expiresAt
        self.maxUses = maxUses
        self.uses = uses
        self.lastUsedAt = lastUsedAt
        self.revokedAt = revokedAt
    }

    /// Whether it has expired at `instant`.
    func isExpired(at instant: Date) -> Bool { expiresAt.map { $0 <= instant } ?? false }
}

/// A token hash as found in the store: its principal, and whether it was revoked.
struct StoredCredential: Sendable, Equatable {
    var principal: Principal
    var revokedAt: Date?
}

/// How an agent is enrolled.
enum EnrollmentMode: Sendable, Equatable {
    /// A new agent; a name that exists is `StoreError.agentExists`. With a token id, one use of that enrollment token
    /// is consumed in the same transaction (refused when revoked, expired or used up).
    case create(consumingToken: String?)
    /// The agent of the same name keeps its id and gets the new token and services (created when missing). An
    /// operator's choice only.
    case replace
}
