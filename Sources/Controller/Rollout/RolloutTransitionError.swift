/// An event a rollout's state does not allow (`RolloutStateMachine`); the rollout stays as it was.
enum RolloutTransitionError: Error, Equatable, CustomStringConvertible {
    /// An operator action the state does not allow (the API answers 409 `rollout_state_conflict`).
    case actionNotAllowed(action: RolloutAction, service: String, serial: Int64, state: RolloutState)
    /// An evaluation decision that does not apply to the state or wave (a stale or wrong decision).
    case decisionNotApplicable(decision: RolloutEvaluator.Decision, service: String, serial: Int64, state: RolloutState, wave: Int)
    /// A publish that is not newer than the rollout it would supersede.
    case notNewer(service: String, serial: Int64, by: Int64)
    /// An approval of a release that is not awaiting one.
    case notAwaitingApproval(service: String, serial: Int64, state: RolloutState)

    var description: String {
        switch self {
        case .actionNotAllowed(let action, let service, let serial, let state):
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
                let allowed = RolloutStateMachine.states(allowing: action).map(\.rawValue).sorted()
                hint = "\(action.rawValue) applies to a rollout that is \(allowed.joined(separator: " or "))"
            }
            return "cannot \(action.rawValue) the rollout of serial \(serial) of \(service): it is \(state.rawValue); \(hint)"
        case .decisionNotApplicable(let decision, let service, let serial, let state, let wave):
            let what: String
            switch decision {
            case .wait: what = "wait on the rollout of serial \(serial) of \(service)"
            case .advance(let target): what = "advance the rollout of serial \(serial) of \(service) to wave \(target + 1)"
            case .complete: what = "complete the rollout of serial \(serial) of \(service)"
            case .halt: what = "halt the rollout of serial \(serial) of \(service)"
            }
            return "cannot \(what): it is \(state.rawValue) at wave \(wave + 1)"
        case .notNewer(let service, let serial, let by):
            return "serial \(by) of \(service) cannot supersede the rollout of serial \(serial): it is not newer"
        case .notAwaitingApproval(let service, let serial, let state):
            let why =
                switch state {
                case .superseded: "a newer release of \(service) replaced it; approve that one"
                case .aborted: "its rollout was aborted; publish it again as a new serial"
                default: "it already met its signature threshold"
                }
            return "serial \(serial) of \(service) is not awaiting approval (its rollout is \(state.rawValue)): \(why)"
        }
    }
}
