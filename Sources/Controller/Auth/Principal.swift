import Foundation

/// Who a request is acting as, once its token was found: what the authentication middleware puts in the request
/// context for handlers to read.
struct Principal: Sendable, Equatable {
    var role: TokenRole
    /// The token's name (an operator's name is recorded as `published_by`); for agents, the agent's name.
    var name: String
    /// The agent an agent token is bound to.
    var agentID: String?
    /// The public id (`tok_…`) of an operator, enroll or viewer token; `nil` for agent tokens.
    var tokenID: String?
    /// What an enrollment token may enroll for; `nil` for every other role.
    var scope: ServiceScope?
    /// When the token stops working (`nil`: never). Checked at every use, also on cached principals.
    var expiresAt: Date?

    init(
        role: TokenRole,
        name: String,
        agentID: String? = nil,
        tokenID: String? = nil,
        scope: ServiceScope? = nil,
        expiresAt: Date? = nil
    ) {
        self.role = role
        self.name = name
        self.agentID = agentID
        self.tokenID = tokenID
        self.scope = scope
        self.expiresAt = expiresAt
    }
}
