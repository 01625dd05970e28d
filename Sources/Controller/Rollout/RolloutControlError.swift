/// Why a rollout action (`pause`, `resume`, `abort`) was refused.
enum RolloutControlError: Error, Equatable, CustomStringConvertible {
    /// The service has no rollout (nothing was published since rollouts exist, or the service is unknown).
    case noRollout(service: String)
    /// The rollout's state does not allow the action; the machine's error says why.
    case refused(RolloutTransitionError)
    /// The rollout kept changing under the action (another controller replica or an evaluation); try again.
    case contended(service: String)

    var description: String {
        switch self {
        case .noRollout(let service):
            return "service \(service) has no rollout"
        case .refused(let error):
            return "\(error)"
        case .contended(let service):
            return "the rollout of \(service) changed while acting on it; try again"
        }
    }
}
