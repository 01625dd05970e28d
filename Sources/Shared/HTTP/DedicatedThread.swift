#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Runs blocking work (`curl_easy_perform`, libarchive extraction) on its own OS thread so it never occupies a
/// thread of Swift's cooperative pool, which has only as many threads as cores (2 on a small instance).
package enum DedicatedThread {
    /// Runs `body` on a new detached thread and returns its result once it finishes.
    ///
    /// Cancelling the calling task sets `cancellation`; `body` is expected to poll it and return early. If the
    /// system refuses to create a thread, `body` runs on the calling thread instead (slower, still correct).
    package static func run<Result: Sendable>(
        cancellation: CancellationFlag,
        _ body: sending @escaping () -> Result
    ) async -> Result {
        let start = ThreadStart(body)
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Result, Never>) in
                start.launch(continuation)
            }
        } onCancel: {
            cancellation.cancel()
        }
    }
}

/// What a new thread runs; travels to the thread as an owned raw pointer.
private final class ThreadStart<Result: Sendable> {
    private let body: () -> Result
    private var continuation: CheckedContinuation<Result, Never>?

    init(_ body: @escaping () -> Result) { self.body = body }

    func launch(_ continuation: CheckedContinuation<Result, Never>) {
        self.continuation = continuation
        let context = Unmanaged.passRetained(self as AnyObject).toOpaque()
        #if os(Linux)
        var thread = pthread_t()
        #else
        var thread: pthread_t?
        #endif
        let status = pthread_create(&thread, nil, threadMain, context)
        if status == 0 {
            #if os(Linux)
            pthread_detach(thread)
            #else
            if let thread { pthread_detach(thread) }
            #endif
        } else {
            Unmanaged<AnyObject>.fromOpaque(context).release()
            run()
        }
    }

    func run() {
        continuation?.resume(returning: body())
        continuation = nil
    }
}

/// Lets the C thread entry point run a `ThreadStart` without knowing its generic parameter.
private protocol Runnable: AnyObject { func run() }
extension ThreadStart: Runnable {}

#if os(Linux)
private func threadMain(_ context: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    guard let context else { return nil }
    (Unmanaged<AnyObject>.fromOpaque(context).takeRetainedValue() as? any Runnable)?.run()
    return nil
}
#else
private func threadMain(_ context: UnsafeMutableRawPointer) -> UnsafeMutableRawPointer? {
    (Unmanaged<AnyObject>.fromOpaque(context).takeRetainedValue() as? any Runnable)?.run()
    return nil
}
#endif
