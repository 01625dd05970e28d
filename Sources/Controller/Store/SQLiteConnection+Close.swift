import NIOCore
import SQLiteKit

extension SQLiteConnection {
    /// Closes the connection whether or not the calling task was cancelled.
    ///
    /// SQLiteNIO's `async` `close()` runs on `NIOThreadPool.runIfActive`, which skips the work and throws
    /// `CancellationError` in a cancelled task. The connection then stays open, and its release trips SQLiteNIO's
    /// assertion: a test that hit its time limit while opening a store crashed the test process that way. Cleanup runs
    /// in cancelled tasks (a time limit, a shutdown), so every close in this store goes through the `EventLoopFuture`
    /// variant, which runs the same work without looking at the task.
    func closeEvenWhenCancelled() async throws {
        try await close().get()
    }
}
