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
        /// Service snapshots of the current generation, by sorted service list; in flight ones are shared too.
        var snapshots: [[String]: Task<ServiceSnapshot, any Error>] = [:]
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

    /// The snapshot of `services` for `generation`, loading it with `load` at most once per generation: the long-polls
    /// a publish wakes all share one load. A generation that is no longer current gets its own, uncached load.
    func snapshot(
        of services: [String],
        generation: UInt64,
        load: @escaping @Sendable () async throws -> ServiceSnapshot
    ) async throws -> ServiceSnapshot {
        let key = services.sorted()
        let task: Task<ServiceSnapshot, any Error> = state.withLock { state in
            guard state.generation == generation else { return Task { try await load() } }
            if let existing = state.snapshots[key] { return existing }
            let task = Task { try await load() }
            state.snapshots[key] = task
            return task
        }
        do {
            return try await task.value
        } catch {
            // A failed load is not kept: the next caller tries again.
            state.withLock { state in
                if state.generation == generation { state.snapshots[key] = nil }
            }
            throw error
        }
    }

    /// Drops everything (a release was published).
    func invalidateAll() {
        state.withLock { state in
            state.generation &+= 1
            state.entries.removeAll(keepingCapacity: true)
            state.snapshots.removeAll()
        }
    }

    /// Drops one agent's entry (it enrolled again, maybe with other services, or runs a newer serial).
    func invalidate(_ agentID: String) {
        state.withLock { state in
            state.generation &+= 1
            state.entries[agentID] = nil
            state.snapshots.removeAll()
        }
    }
}
