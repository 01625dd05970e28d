/// What an operator can do to a rollout: `POST /v1/services/{service}/rollout/{action}`.
enum RolloutAction: String, Sendable, Equatable, CaseIterable {
    /// Stop advancing (rolling → paused).
    case pause
    /// Advance again (paused → rolling).
    case resume
    /// Give up (rolling, paused or halted → aborted): agents that did not install the serial go back to the stable one.
    case abort

    /// The states the action applies to.
    var allowedFrom: Set<RolloutState> {
        switch self {
        case .pause: [.rolling]
        case .resume: [.paused]
        case .abort: [.rolling, .paused, .halted]
        }
    }
}
