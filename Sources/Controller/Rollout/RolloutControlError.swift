/// Why a rollout action (`pause`, `resume`, `abort`) was refused.
enum RolloutControlError: Error, Equatable, CustomStringConvertible {
    /// The service has no rollout (nothing was published since rollouts exist, or the service is unknown).
    case noRollout(service: String)
    /// The action does not apply to the rollout's state.
    case notAllowed(action: RolloutAction, service: String, serial: Int64, state: RolloutState)
    /// The rollout kept changing under the action (another controller replica or an evaluation); try again.
    case contended(service: String)

    var description: String {
        switch self {
        case .noRollout(let service):
            return "service \(service) has no rollout"
        case .notAllowed(let action, let service, let serial, let state):
            let hint: String
            switch (action, state) {
            case (.resume, .halted):
                hint = "a halted rollout does not resume: publish a fixed release (a new serial) or abort it"
            case (_, .completed):
                hint = "it already reached every agent"
            case (_, .superseded):
                hint = "a newer release of \(service) replaced it"
            case (.pause, .paused):
                hint = "it is already paused"
            case (.resume, .rolling):
                hint = "it is not paused"
            default:
                hint = "\(action.rawValue) applies to a rollout that is \(action.allowedFrom.map(\.rawValue).sorted().joined(separator: " or "))"
            }
            return "cannot \(action.rawValue) the rollout of serial \(serial) of \(service): it is \(state.rawValue); \(hint)"
        case .contended(let service):
            return "the rollout of \(service) changed while acting on it; try again"
        }
    }
}
