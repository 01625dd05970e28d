/// What an operator can do to a rollout: `POST /v1/services/{service}/rollout/{action}`. Which states allow which
/// action is decided by `RolloutStateMachine.requested(_:by:agentsOnSerial:at:)`.
enum RolloutAction: String, Sendable, Equatable, CaseIterable {
    /// Stop advancing.
    case pause
    /// Advance again.
    case resume
    /// Give up: agents that did not install the serial go back to the stable one.
    case abort
}
