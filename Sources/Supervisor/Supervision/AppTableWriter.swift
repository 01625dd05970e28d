import Logging
import Shared
import Synchronization

/// Writes the app table (`AppTableFile.save`: a temp file, two `fsync`s and a rename) on a thread of its own, newest
/// table only.
///
/// The table used to be written on the supervisor's actor, once per process spawned, exited or scheduled for a restart:
/// a start of 16 instances wrote it 17 times, and an app crashing in a loop wrote it twice per crash, every write
/// holding the actor (and one of the cooperative pool's threads) through its `fsync`s. Now a table submitted while a
/// write runs replaces the one waiting, and a request waits for the write of its own table (or a newer one) only at its
/// end (`Supervisor.saveTable`).
final class AppTableWriter: Sendable {
    private struct State {
        var pending: (table: AppTableFile.Table, ticket: UInt64)?
        var submitted: UInt64 = 0
        /// The newest ticket whose table (or a newer one) a write has been tried for.
        var finished: UInt64 = 0
        var writing = false
        var failing = false
        var writes: UInt64 = 0
        var waiters: [(ticket: UInt64, continuation: CheckedContinuation<Void, Never>)] = []
    }

    private let state = Mutex(State())
    private let file: AppTableFile
    private let logger: Logger

    init(file: AppTableFile, logger: Logger) {
        self.file = file
        self.logger = logger
    }

    /// Whether the last write failed (a full disk): the supervisor submits the table again at every memory check.
    var lastWriteFailed: Bool { state.withLock { $0.failing } }

    /// How many writes were made.
    var writes: UInt64 { state.withLock { $0.writes } }

    /// Queues `table` to be written, replacing any table still waiting; starts a writer thread when none runs.
    /// - Returns: the ticket `waitUntilWritten` takes.
    @discardableResult
    func submit(_ table: AppTableFile.Table) -> UInt64 {
        let (ticket, start) = state.withLock { state -> (UInt64, Bool) in
            state.submitted += 1
            state.pending = (table, state.submitted)
            defer { state.writing = true }
            return (state.submitted, !state.writing)
        }
        if start {
            do {
                try DedicatedThread.detach(name: "app table writer") { self.drain() }
            } catch {
                // No thread to be had: written here, as before.
                drain()
            }
        }
        return ticket
    }

    /// Returns once a write of the table with `ticket`, or of a newer one, has been tried.
    func waitUntilWritten(_ ticket: UInt64) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = state.withLock { state -> Bool in
                guard state.finished < ticket else { return true }
                state.waiters.append((ticket, continuation))
                return false
            }
            if done { continuation.resume() }
        }
    }

    /// Writes the waiting table until none waits.
    private func drain() {
        while true {
            let next = state.withLock { state -> (table: AppTableFile.Table, ticket: UInt64)? in
                guard let pending = state.pending else {
                    state.writing = false
                    return nil
                }
                state.pending = nil
                return pending
            }
            guard let next else { return }
            var failure: SupervisorError?
            do throws(SupervisorError) {
                try file.save(next.table)
            } catch {
                failure = error
            }
            let (ready, wasFailing) = state.withLock { state -> ([CheckedContinuation<Void, Never>], Bool) in
                let wasFailing = state.failing
                state.failing = failure != nil
                state.finished = next.ticket
                state.writes += 1
                let ready = state.waiters.filter { $0.ticket <= next.ticket }.map(\.continuation)
                state.waiters.removeAll { $0.ticket <= next.ticket }
                return (ready, wasFailing)
            }
            if let failure {
                if !wasFailing { logger.error("supervisor.table.save_failed", metadata: ["error": "\(failure)"]) }
            } else if wasFailing {
                logger.info("supervisor.table.saved_again")
            }
            for continuation in ready { continuation.resume() }
        }
    }
}
