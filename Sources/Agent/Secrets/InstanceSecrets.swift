import Synchronization

/// The instance env values of every service this agent runs, as a `SecretMask`, shared by the reconciler (which reads
/// the env files on every pass and updates it) and by everything that writes text leaving the agent: the log handler,
/// the status report, the state file's messages.
final class InstanceSecrets: Sendable {
    private struct State {
        var environments: [String: [String: String]] = [:]
        var mask = SecretMask()
    }

    private let state = Mutex(State())

    init() {}

    /// Records the current env file values of `service`; the mask follows at once.
    func update(service: String, values: [String: String]) {
        state.withLock { state in
            guard state.environments[service] != values else { return }
            state.environments[service] = values
            state.mask = SecretMask(state.environments.values)
        }
    }

    /// The mask for the values recorded so far.
    var mask: SecretMask { state.withLock { $0.mask } }

    /// `text` with every recorded secret value masked.
    func apply(_ text: String) -> String { mask.apply(text) }
}
