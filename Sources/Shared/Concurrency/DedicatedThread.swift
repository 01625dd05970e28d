import Glibc

/// Runs blocking work (`curl_easy_perform`, libarchive extraction, `poll`, `waitid`, socket I/O) on its own OS thread so
/// it never occupies a thread of Swift's cooperative pool, which has only as many threads as cores (2 on a small
/// instance): one blocking call there stalls every task in the process.
///
/// `run` is for work that ends (the caller awaits its result); `detach` is for loops that live as long as their owner
/// (the builtin supervisor's socket accept loop, output pump and exit watchers). This is the package's one way to a
/// thread of its own.
package enum DedicatedThread {
    /// The system refused to create a thread.
    package struct StartFailure: Error, Sendable, Equatable, CustomStringConvertible {
        /// What the thread was for (`output pump`, `exit watcher`).
        package var name: String
        /// The error `pthread_create` returned (`EAGAIN` when a thread or memory limit is reached).
        package var errno: Int32

        package var description: String {
            "pthread_create (\(name)) failed: \(SystemErrorText.describe(errno))"
        }
    }

    /// Runs `body` on a new detached thread and returns its result once it finishes.
    ///
    /// Cancelling the calling task sets `cancellation`; `body` is expected to poll it and return early. If the
    /// system refuses to create a thread, `body` runs on the calling thread instead (slower, still correct).
    package static func run<Value: Sendable>(
        cancellation: CancellationFlag,
        _ body: sending @escaping () -> Value
    ) async -> Value {
        let start = ThreadStart(body)
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Value, Never>) in
                start.launch(continuation)
            }
        } onCancel: {
            cancellation.cancel()
        }
    }

    /// Runs `body` on a new detached thread and returns its result or error once it finishes: for blocking waits of
    /// seconds (a socket read with a deadline). Unlike `run(cancellation:_:)` there is no fallback to the calling
    /// thread, which such a wait would hold: when the system refuses a thread this throws `StartFailure` and `body`
    /// does not run.
    package static func run<Value: Sendable>(name: String, _ body: sending @escaping () throws -> Value) async throws -> Value {
        let start = ThrowingThreadStart(body)
        return try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Value, any Error>) in
            start.launch(name: name, continuation)
        }
    }

    /// Starts `body` on a new detached thread and returns at once. Unlike `run`, there is no fallback: a loop that
    /// never ends must not take over the calling thread, so a refusal throws.
    package static func detach(name: String, _ body: sending @escaping () -> Void) throws(StartFailure) {
        let status = startThread(DetachedBody(body))
        guard status == 0 else { throw StartFailure(name: name, errno: status) }
    }

    /// Creates a detached thread running `runnable`, which travels to it as an owned raw pointer. Returns
    /// `pthread_create`'s status; on failure the pointer is released again and nothing runs.
    fileprivate static func startThread(_ runnable: any Runnable) -> Int32 {
        let context = Unmanaged.passRetained(runnable as AnyObject).toOpaque()
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        defer { pthread_attr_destroy(&attributes) }
        pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
        var thread = pthread_t()
        let status = pthread_create(&thread, &attributes, threadMain, context)
        if status != 0 {
            Unmanaged<AnyObject>.fromOpaque(context).release()
        }
        return status
    }
}

/// What a thread runs; lets the C entry point run it without knowing its type.
private protocol Runnable: AnyObject {
    func run()
}

/// A body whose result resumes an awaiting task.
private final class ThreadStart<Value: Sendable>: Runnable {
    private let body: () -> Value
    private var continuation: CheckedContinuation<Value, Never>?

    init(_ body: @escaping () -> Value) { self.body = body }

    func launch(_ continuation: CheckedContinuation<Value, Never>) {
        self.continuation = continuation
        if DedicatedThread.startThread(self) != 0 {
            run()
        }
    }

    func run() {
        continuation?.resume(returning: body())
        continuation = nil
    }
}

/// A throwing body whose result or error resumes an awaiting task; nothing runs when no thread can be had.
private final class ThrowingThreadStart<Value: Sendable>: Runnable {
    private let body: () throws -> Value
    private var continuation: CheckedContinuation<Value, any Error>?

    init(_ body: @escaping () throws -> Value) { self.body = body }

    func launch(name: String, _ continuation: CheckedContinuation<Value, any Error>) {
        self.continuation = continuation
        let status = DedicatedThread.startThread(self)
        if status != 0 {
            self.continuation = nil
            continuation.resume(throwing: DedicatedThread.StartFailure(name: name, errno: status))
        }
    }

    func run() {
        continuation?.resume(with: Result { try body() })
        continuation = nil
    }
}

/// A body nobody waits for.
private final class DetachedBody: Runnable {
    private let body: () -> Void

    init(_ body: @escaping () -> Void) { self.body = body }

    func run() { body() }
}

private func threadMain(_ context: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    guard let context else { return nil }
    (Unmanaged<AnyObject>.fromOpaque(context).takeRetainedValue() as? any Runnable)?.run()
    return nil
}
