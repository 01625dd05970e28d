import Synchronization

/// The instance env values of every service this agent runs, as a `SecretMask`, shared by the reconciler (which reads
/// the env files on every pass and updates it) and by everything that writes text leaving the agent: the log handler,
/// the status report, the state file's messages.
final class InstanceSecrets: Sendable {
    private struct State {
        var environments: [String: [String: String]] = [:]
        /// Values a rotation replaced, by service, oldest first (at most `retiredLimit` each).
        var retired: [String: [(name: String, value: String)]] = [:]
        var mask = SecretMask()
    }

    /// How many replaced values of one service stay masked. A rotated value is still in the app's log files (under
    /// PM2 they append across restarts and releases until rotated), and a later failure's log tail ships them; the
    /// limit keeps a credential refreshed every few minutes from growing the mask without end.
    static let retiredLimit = 32

    private let state = Mutex(State())

    init() {}

    /// Records the current env file values of `service`; the mask follows at once. A value that changed or went away
    /// stays masked (under its name) for the life of the agent, up to `retiredLimit` of them per service.
    func update(service: String, values: [String: String]) {
        state.withLock { state in
            guard state.environments[service] != values else { return }
            let current = Set(values.values)
            // Values the mask would not look for (`true`, `3000`) take no place; in name order, so which stay does not
            // depend on hashing when more than the limit retire at once.
            let replaced = (state.environments[service] ?? [:]).filter {
                $0.value.utf8.count >= SecretMask.minimumLength && !current.contains($0.value)
            }
            for (name, value) in replaced.sorted(by: { $0.key < $1.key }) {
                var retired = state.retired[service, default: []]
                retired.removeAll { $0.value == value }
                retired.append((name, value))
                if retired.count > Self.retiredLimit { retired.removeFirst(retired.count - Self.retiredLimit) }
                state.retired[service] = retired
            }
            state.environments[service] = values
            // Each retired value on its own: one name may have retired several.
            let retired = state.retired.values.flatMap { $0.map { [$0.name: $0.value] } }
            state.mask = SecretMask(Array(state.environments.values) + retired)
        }
    }

    /// The mask for the values recorded so far.
    var mask: SecretMask { state.withLock { $0.mask } }

    /// `text` with every recorded secret value masked.
    func apply(_ text: String) -> String { mask.apply(text) }
}
