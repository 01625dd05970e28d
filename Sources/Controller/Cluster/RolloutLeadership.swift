import Synchronization

/// Whether this controller drives rollouts (advances waves on its timer and on status reports). One controller always
/// does; controllers sharing PostgreSQL elect one (`PostgresLeaderElection`).
final class RolloutLeadership: Sendable {
    private struct State {
        var leading: Bool
        /// Increases every time leadership is gained: a driver that sees it change forgets what it kept in memory.
        var term: UInt64
    }

    private let state: Mutex<State>

    private init(leading: Bool) {
        state = Mutex(State(leading: leading, term: leading ? 1 : 0))
    }

    /// The only controller: always the leader.
    static func always() -> RolloutLeadership { RolloutLeadership(leading: true) }

    /// One of several: not the leader until elected.
    static func elected() -> RolloutLeadership { RolloutLeadership(leading: false) }

    /// Whether this controller drives rollouts now, and since which term.
    var current: (leading: Bool, term: UInt64) { state.withLock { ($0.leading, $0.term) } }

    /// Whether this controller drives rollouts now.
    var isLeader: Bool { state.withLock { $0.leading } }

    func gained() {
        state.withLock { state in
            guard !state.leading else { return }
            state.leading = true
            state.term &+= 1
        }
    }

    func lost() {
        state.withLock { $0.leading = false }
    }
}
