import Synchronization

/// A one-way "stop" signal that blocking code on a dedicated thread polls (libcurl's progress callback, the
/// extractor's entry loop), set from a Swift task's cancellation handler.
package final class CancellationFlag: Sendable {
    private let state = Atomic<Bool>(false)

    package init() {}

    /// Asks the work to stop. Idempotent.
    package func cancel() { state.store(true, ordering: .releasing) }

    /// Whether `cancel()` was called.
    package var isCancelled: Bool { state.load(ordering: .acquiring) }
}
