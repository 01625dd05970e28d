import Synchronization

/// Rendered desired states by agent id, so an unchanged poll (the common case, answered `304`) costs no database
/// read and no encoding.
///
/// Entries are dropped on any publish or enrolment. A value computed from the database before an invalidation must not
/// be cached after it: every lookup hands out the current generation, and `insert` only accepts a value computed in
/// the generation that is still current.
final class DesiredStateCache: Sendable {
    private struct State {
        var generation: UInt64 = 0
        var entries: [String: RenderedDesiredState] = [:]
    }

    private let state = Mutex(State())

    /// The cached state of `agentID` and the generation to pass to `insert` after computing a missing one.
    func lookup(_ agentID: String) -> (state: RenderedDesiredState?, generation: UInt64) {
        state.withLock { ($0.entries[agentID], $0.generation) }
    }

    /// Caches `rendered` unless something was invalidated since `generation`.
    func insert(_ rendered: RenderedDesiredState, for agentID: String, computedIn generation: UInt64) {
        state.withLock { state in
            guard state.generation == generation else { return }
            state.entries[agentID] = rendered
        }
    }

    /// Drops everything (a release was published).
    func invalidateAll() {
        state.withLock { state in
            state.generation &+= 1
            state.entries.removeAll(keepingCapacity: true)
        }
    }

    /// Drops one agent's entry (it enrolled again, maybe with other services).
    func invalidate(_ agentID: String) {
        state.withLock { state in
            state.generation &+= 1
            state.entries[agentID] = nil
        }
    }
}
