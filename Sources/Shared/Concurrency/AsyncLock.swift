import Synchronization

/// A fair, non-reentrant lock for async code: holders run one at a time, in arrival order.
///
/// Actor reentrancy lets another task run between the awaits of a multi-step operation; this lock keeps such
/// operations whole. The SQLite store runs each transaction on its single writer connection under one; the builtin
/// supervisor runs each request that changes its app table under one. Not reentrant: taking it again inside `body`
/// waits forever.
package final class AsyncLock: Sendable {
    private struct State {
        var isLocked = false
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    private let state = Mutex(State())

    package init() {}

    /// Runs `body` while holding the lock, on the caller's actor (so `body` may use the caller's isolated state), and
    /// releases the lock whether `body` returns or throws.
    package func withLock<T, E: Error>(
        isolation: isolated (any Actor)? = #isolation,
        _ body: () async throws(E) -> T
    ) async throws(E) -> T {
        await lock()
        defer { unlock() }
        return try await body()
    }

    /// Runs `body` while holding the lock when the lock is free now; returns `false` without running it when it is not.
    package func withLockIfFree<E: Error>(
        isolation: isolated (any Actor)? = #isolation,
        _ body: () async throws(E) -> Void
    ) async throws(E) -> Bool {
        guard tryLock() else { return false }
        defer { unlock() }
        try await body()
        return true
    }

    /// Takes the lock when it is free now.
    private func tryLock() -> Bool {
        state.withLock { state in
            guard !state.isLocked else { return false }
            state.isLocked = true
            return true
        }
    }

    private func lock(isolation: isolated (any Actor)? = #isolation) async {
        if tryLock() { return }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let handedOver = state.withLock { state in
                // Released between the two looks: take it now instead of queueing.
                guard state.isLocked else {
                    state.isLocked = true
                    return true
                }
                state.waiters.append(continuation)
                return false
            }
            if handedOver { continuation.resume() }
        }
    }

    private func unlock() {
        let next = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard !state.waiters.isEmpty else {
                state.isLocked = false
                return nil
            }
            // Hand the lock straight to the next waiter: `isLocked` stays true.
            return state.waiters.removeFirst()
        }
        next?.resume()
    }
}
