import Foundation
import Shared
import Testing

/// `ThreadSleep.until`: a wait on a thread of its own, in `poll(2)`, instead of a timer of the concurrency runtime.
@Suite("ThreadSleep")
struct ThreadSleepTests {
    @Test("returns at the deadline, not before", .timeLimit(.minutes(1)))
    func returnsAtTheDeadline() async throws {
        let deadline = ContinuousClock.now + .milliseconds(300)
        try await ThreadSleep.until(deadline)
        #expect(ContinuousClock.now >= deadline)
        // A deadline already past returns at once.
        let past = ContinuousClock.now
        try await ThreadSleep.until(past - .seconds(1))
        #expect(past.duration(to: .now) < .seconds(5))
    }

    @Test("a cancelled wait ends at once with CancellationError", .timeLimit(.minutes(1)))
    func cancellationEndsTheWait() async throws {
        let started = ContinuousClock.now
        let sleeper = Task { try await ThreadSleep.until(.now + .seconds(600)) }
        try await Task.sleep(for: .milliseconds(200))
        sleeper.cancel()
        let result = await sleeper.result
        guard case .failure(let error) = result, error is CancellationError else {
            Issue.record("a cancelled wait ended with \(result), not CancellationError")
            return
        }
        // The wait was ten minutes; the time limit is one.
        #expect(started.duration(to: .now) < .seconds(30))

        // Cancelled before it began: no wait at all.
        let early = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            try await ThreadSleep.until(.now + .seconds(600))
        }
        guard case .failure(let earlyError) = await early.result, earlyError is CancellationError else {
            Issue.record("a wait in a cancelled task did not throw CancellationError")
            return
        }
    }

    @Test("many waits at once each end at their own deadline", .timeLimit(.minutes(1)))
    func concurrentWaits() async throws {
        let start = ContinuousClock.now
        try await withThrowingTaskGroup(of: Duration.self) { group in
            for index in 0..<20 {
                let deadline = start + .milliseconds(50 * index)
                group.addTask {
                    try await ThreadSleep.until(deadline)
                    return deadline.duration(to: .now)
                }
            }
            for try await late in group { #expect(late >= .zero) }
        }
    }
}
