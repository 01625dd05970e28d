import Synchronization
import Testing

@testable import Controller

/// `Unawaited.result` (the bound on the leader election's connect and queries) hands a result that arrives after the
/// caller gave up to `late`, so a connection made too late is closed rather than dropped (PostgresNIO traps when an
/// unclosed connection is released).
@Suite struct UnawaitedTests {
    private final class Late: Sendable {
        private let state = Mutex<[Int]>([])
        var values: [Int] { state.withLock { $0 } }
        var record: @Sendable (Int) -> Void { { value in self.state.withLock { $0.append(value) } } }
    }

    /// A value that ignores cancellation and ends after `delay`, as a connect that is already past the handshake does.
    private static func stubborn(_ value: Int, after delay: Duration) -> @Sendable () async throws -> Int {
        {
            let end = ContinuousClock.now + delay
            while ContinuousClock.now < end { try? await Task.sleep(for: .milliseconds(10)) }
            return value
        }
    }

    /// Opened by the test once the caller has its answer: an operation that waits for it ends only after that, however
    /// slowly a loaded machine schedules the timer (a fixed delay lost the race to a starved 50 ms timer once).
    private final class Gate: Sendable {
        private let isOpen = Mutex(false)
        func open() { isOpen.withLock { $0 = true } }

        /// A value that ignores cancellation and ends once the gate is open.
        func stubborn(_ value: Int) -> @Sendable () async throws -> Int {
            {
                while !self.isOpen.withLock({ $0 }) { try? await Task.sleep(for: .milliseconds(10)) }
                return value
            }
        }
    }

    @Test func aResultAfterTheTimeoutGoesToLate() async throws {
        let late = Late()
        let gate = Gate()
        await #expect(throws: Unawaited.TimedOut.self) {
            try await Unawaited.result(of: "a slow connect", within: .milliseconds(50), late: late.record, gate.stubborn(7))
        }
        gate.open()
        let deadline = ContinuousClock.now + .seconds(10)
        while late.values.isEmpty && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        #expect(late.values == [7])
    }

    @Test func aResultInTimeIsTheCallersAlone() async throws {
        let late = Late()
        let value = try await Unawaited.result(of: "a quick connect", within: .seconds(10), late: late.record) {
            try await Self.stubborn(3, after: .milliseconds(20))()
        }
        #expect(value == 3)
        try await Task.sleep(for: .milliseconds(100))
        #expect(late.values.isEmpty)
    }

    @Test func aCancelledCallerLeavesTheLateResultToLate() async throws {
        let late = Late()
        let gate = Gate()
        let caller = Task {
            try await Unawaited.result(of: "a connect", within: .seconds(30), late: late.record, gate.stubborn(9))
        }
        caller.cancel()
        await #expect(throws: CancellationError.self) { try await caller.value }
        gate.open()
        let deadline = ContinuousClock.now + .seconds(10)
        while late.values.isEmpty && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        #expect(late.values == [9])
    }
}
