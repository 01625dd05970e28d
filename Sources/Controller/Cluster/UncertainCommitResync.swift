import Synchronization

/// Resynchronizes this controller after a write whose COMMIT failed once it was sent
/// (`PostgresStoreBackend.whenACommitIsUncertain`): at once, for a commit that landed before its answer was lost (its
/// notification came back and was ignored as this controller's own), and once more `delay` later, for one that lands
/// late (a COMMIT waiting for a synchronous standby outlives the client's deadline).
///
/// Requests while a round runs make one more round, not one each: during a database outage every write can fail so,
/// and each resynchronization drops every cached token and state and wakes every parked agent, which then read the
/// database that is failing.
final class UncertainCommitResync: Sendable {
    private let state = Mutex<(running: Bool, again: Bool, lastRequest: ContinuousClock.Instant?)>((false, false, nil))
    /// How long after an uncertain commit this controller also applies the notifications its own commits send
    /// (`appliesOwnChanges`).
    static let ownChangesWindow: Duration = .seconds(600)
    private let delay: Duration
    private let resync: @Sendable () async -> Void

    /// - Parameters:
    ///   - delay: between a round's two resynchronizations (the store's statement deadline).
    ///   - resync: what resynchronizes (`ControllerCore.apply(remote: .resync)`).
    init(delay: Duration, resync: @escaping @Sendable () async -> Void) {
        self.delay = delay
        self.resync = resync
    }

    /// Asks for a round; returns at once.
    func request() {
        let starts = state.withLock { state in
            state.lastRequest = .now
            if state.running {
                state.again = true
                return false
            }
            state.running = true
            return true
        }
        guard starts else { return }
        Task {
            while true {
                await resync()
                try? await Task.sleep(for: delay)
                await resync()
                let more = state.withLock { state in
                    if state.again {
                        state.again = false
                        return true
                    }
                    state.running = false
                    return false
                }
                if !more { return }
            }
        }
    }

    /// Whether this controller's own notifications are to be applied now, as another controller's are: a commit was
    /// uncertain within `ownChangesWindow`. A COMMIT that lands after the round's second resynchronization (a
    /// synchronous standby that came back late) is known here only by its notifications, which name this controller:
    /// ignored as its own, a token it revoked kept working from this controller's cache, and a publish or a rollout's
    /// wave stayed out of the states it had cached.
    func appliesOwnChanges(at now: ContinuousClock.Instant = .now) -> Bool {
        state.withLock { state in state.lastRequest.map { now - $0 < Self.ownChangesWindow } ?? false }
    }

    /// Whether a round runs now.
    var isRunning: Bool { state.withLock { $0.running } }
}
