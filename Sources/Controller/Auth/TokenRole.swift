/// What a token allows. Operator, enroll and viewer tokens are created by `ferry-controller token create`; agent
/// tokens are minted by enrollment and bound to one agent.
enum TokenRole: String, Sendable, CaseIterable, Equatable {
    /// Publish, roll back, and everything a viewer sees.
    case `operator`
    /// Trade for an agent token (`POST /v1/agents`).
    case enroll
    /// The dashboard and the fleet JSON.
    case viewer
    /// One agent's desired state, status and artifacts.
    case agent

    /// The roles `token create` may mint (agent tokens only come from enrollment).
    static let creatable: [TokenRole] = [.operator, .enroll, .viewer]
}
