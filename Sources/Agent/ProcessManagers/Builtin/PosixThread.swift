import Glibc

/// Runs blocking work (socket I/O, `waitpid`, `poll`) on its own OS thread, off Swift's cooperative pool.
///
/// The cooperative pool has one thread per core (two on the small hosts Ferry targets): a blocking syscall there
/// stalls every task in the process, so everything that can block for long goes through here.
enum PosixThread {
    /// Starts `body` on a new detached thread. Throws when the system refuses another thread; `name` only labels
    /// that error.
    static func detach(name: String, _ body: @escaping @Sendable () -> Void) throws(SupervisorError) {
        let box = Unmanaged.passRetained(ThreadBody(body: body)).toOpaque()
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        defer { pthread_attr_destroy(&attributes) }
        pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
        var thread = pthread_t()
        let result = pthread_create(
            &thread,
            &attributes,
            { raw in
                guard let raw else { return nil }
                let box = Unmanaged<ThreadBody>.fromOpaque(raw).takeRetainedValue()
                box.body()
                return nil
            },
            box
        )
        if result != 0 {
            Unmanaged<ThreadBody>.fromOpaque(box).release()
            throw .system(operation: "pthread_create (\(name))", errno: result)
        }
    }

    /// Runs `body` on a new thread and returns its result.
    static func run<T: Sendable>(name: String, _ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            do {
                try detach(name: name) { continuation.resume(with: Result { try body() }) }
            } catch {
                continuation.resume(throwing: error)
            }
        }
    }
}

private final class ThreadBody: Sendable {
    let body: @Sendable () -> Void

    init(body: @escaping @Sendable () -> Void) {
        self.body = body
    }
}
