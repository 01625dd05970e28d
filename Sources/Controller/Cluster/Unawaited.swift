import Logging
import NIOCore
import PostgresKit
import PostgresNIO
import Synchronization

/// Waits for an operation at most `timeout`, without waiting for the operation itself to end.
///
/// A timeout built on a task group (race the operation against a sleep, cancel the loser) still waits for the loser
/// to finish, and a PostgresNIO query on a connection whose server went away does not always end when cancelled: the
/// leader election hung there for good after a database restart, and the controller's graceful shutdown with it. Here
/// the operation runs in a task of its own that is left behind (cancelled) when the time is up or the caller is
/// cancelled; whatever it holds (a connection) is the caller's to close — also without waiting (`close(_:)`). A
/// result that arrives after the race is lost has no caller any more: it goes to `late` (a connection must be closed
/// there, or PostgresNIO traps when it is released).
enum Unawaited {
    struct TimedOut: Error, CustomStringConvertible {
        var what: String
        var timeout: Duration
        var description: String { "\(what) did not answer within \(timeout)" }
    }

    /// The result of `operation`, or `TimedOut` after `timeout` (`nil`: no time limit), or `CancellationError` when the
    /// caller is cancelled first (unless `endsOnCancellation` is false: then only the operation or the time limit ends
    /// the wait). `late` receives a result that the operation produced after that.
    static func result<T: Sendable>(
        of what: String,
        within timeout: Duration?,
        endsOnCancellation: Bool = true,
        late: @escaping @Sendable (T) -> Void = { _ in },
        _ operation: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        let race = Race<T>()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
                race.begin(continuation)
                let task = Task {
                    do {
                        let value = try await operation()
                        if !race.finish(.success(value)) { late(value) }
                    } catch {
                        race.finish(.failure(error))
                    }
                }
                race.add { task.cancel() }
                if let timeout {
                    // A NIO timer, not a sleeping task: a cancelled `Task.sleep` keeps its memory until its deadline
                    // (swiftlang/swift#60441), and most of these races end long before theirs.
                    let timer = PostgresClient.defaultEventLoopGroup.any().scheduleTask(in: TimeAmount(timeout)) {
                        race.finish(.failure(TimedOut(what: what, timeout: timeout)))
                    }
                    race.add { timer.cancel() }
                }
            }
        } onCancel: {
            if endsOnCancellation { race.finish(.failure(CancellationError())) }
        }
    }

    /// A connection of its own to `backend` for `what` (`PostgresStoreBackend.connect`), made within `timeout` and not
    /// awaited past it; one that arrives later is closed.
    static func connect(
        _ what: String,
        to backend: PostgresStoreBackend,
        id: Int,
        parameters: [(String, String)],
        within timeout: Duration,
        logger: Logger
    ) async throws -> PostgresConnection {
        try await result(of: "connecting for \(what)", within: timeout, late: close) {
            try await backend.connect(id: id, logger: logger, parameters: parameters)
        }
    }

    /// Checks `connection` with `SELECT 1` every `interval` until a check is not answered within `timeout` (throws
    /// `TimedOut`) or fails, or the caller is cancelled (throws `CancellationError`). Returns never otherwise.
    static func keepChecking(_ connection: PostgresConnection, of what: String, every interval: Duration, within timeout: Duration) async throws {
        while true {
            try await Task.sleep(for: interval)
            _ = try await result(of: "\(what)'s connection check", within: timeout) {
                try await connection.sql(queryLogLevel: nil).raw("SELECT 1 AS alive").first()
            }
        }
    }

    /// Closes `connection` in a task of its own: closing a connection whose server is gone may not end either.
    static func close(_ connection: PostgresConnection) {
        Task { try? await connection.close() }
    }

    /// The first of the operation, the timer and a cancellation to finish resumes the caller; the others are
    /// cancelled and not waited for.
    private final class Race<T: Sendable>: Sendable {
        private struct State {
            var continuation: CheckedContinuation<T, any Error>?
            var early: Result<T, any Error>?
            /// What stops the losers: the operation's task and the timer.
            var cancellations: [@Sendable () -> Void] = []
            var done = false
        }

        private let state = Mutex(State())

        func begin(_ continuation: CheckedContinuation<T, any Error>) {
            let early = state.withLock { state -> Result<T, any Error>? in
                guard let early = state.early else {
                    state.continuation = continuation
                    return nil
                }
                return early
            }
            if let early { continuation.resume(with: early) }
        }

        func add(_ cancellation: @escaping @Sendable () -> Void) {
            let cancelNow = state.withLock { state -> Bool in
                if state.done { return true }
                state.cancellations.append(cancellation)
                return false
            }
            if cancelNow { cancellation() }
        }

        /// Whether `result` is the one the caller gets (false: another finisher came first).
        @discardableResult
        func finish(_ result: Result<T, any Error>) -> Bool {
            let (won, continuation, cancellations) = state.withLock {
                state -> (Bool, CheckedContinuation<T, any Error>?, [@Sendable () -> Void]) in
                guard !state.done else { return (false, nil, []) }
                state.done = true
                let cancellations = state.cancellations
                state.cancellations = []
                guard let continuation = state.continuation else {
                    // Cancelled before the continuation existed: `begin` resumes with this.
                    state.early = result
                    return (true, nil, cancellations)
                }
                state.continuation = nil
                return (true, continuation, cancellations)
            }
            for cancel in cancellations { cancel() }
            continuation?.resume(with: result)
            return won
        }
    }
}
