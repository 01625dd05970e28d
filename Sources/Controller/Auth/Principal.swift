/// Who a request is acting as, once its token was found.
struct Principal: Sendable, Equatable {
    var role: TokenRole
    /// The token's name (an operator's name is recorded as `published_by`); for agents, the agent's name.
    var name: String
    /// The agent an agent token is bound to.
    var agentID: String?
}
