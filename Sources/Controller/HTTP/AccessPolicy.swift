/// Who may use a group of routes, and how they may present their token. One policy per route group, enforced by
/// `AuthenticationMiddleware`.
struct AccessPolicy: Sendable {
    /// Roles that may use the routes; any other valid token gets 403.
    var roles: Set<TokenRole>
    /// Whether HTTP Basic (any user name, the token as password) is accepted. It only ever is on GET and HEAD:
    /// browsers send Basic credentials on their own, also with requests another site makes them send, so every
    /// state-changing route needs `Authorization: Bearer`, which no other site can make a browser send.
    var basicOnReads: Bool
    /// How a 401 asks for credentials.
    var challenge: Authenticator.Challenge

    /// The dashboard page: viewer or operator, Basic for the browser's login prompt.
    static let dashboard = AccessPolicy(roles: [.viewer, .operator], basicOnReads: true, challenge: .basic)
    /// Read-only JSON the dashboard and operators read (fleet, services, rollouts, events): viewer or operator.
    static let fleetReaders = AccessPolicy(roles: [.viewer, .operator], basicOnReads: true, challenge: .bearer)
    /// Operator-only routes: publishing, rollout control, tokens, agents, release envelopes (with env values).
    static let operators = AccessPolicy(roles: [.operator], basicOnReads: false, challenge: .bearer)
    /// `POST /v1/agents`: an enrollment token, or an operator (who alone may replace an agent).
    static let enrollment = AccessPolicy(roles: [.enroll, .operator], basicOnReads: false, challenge: .bearer)
    /// An agent's own desired state and status.
    static let agents = AccessPolicy(roles: [.agent], basicOnReads: false, challenge: .bearer)
    /// The trust root chain: agents (which follow it), viewers and operators. Nothing in it is secret.
    static let rootReaders = AccessPolicy(roles: [.agent, .viewer, .operator], basicOnReads: true, challenge: .bearer)
    /// Artifact downloads: agents (their services' artifacts only) and operators.
    static let artifactReaders = AccessPolicy(roles: [.agent, .operator], basicOnReads: false, challenge: .bearer)

    /// `operator or viewer`, for messages.
    var rolesText: String {
        TokenRole.allCases.filter(roles.contains).map(\.rawValue).joined(separator: " or ")
    }
}
