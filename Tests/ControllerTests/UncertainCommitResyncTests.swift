import Synchronization
import Testing

@testable import Controller

/// A COMMIT whose outcome is unknown resynchronizes the controller twice (at once, and a statement deadline later for a
/// commit that lands late); requests during a round make one more round, not one each (a database outage fails every
/// write, and each resynchronization wakes every parked agent).
@Suite struct UncertainCommitResyncTests {
    @Test func requestsDuringARoundMakeOneMoreRound() async throws {
        let calls = Atomic<Int>(0)
        let resync = UncertainCommitResync(delay: .seconds(1)) { calls.add(1, ordering: .relaxed) }
        for _ in 0..<50 { resync.request() }
        #expect(resync.isRunning)
        let deadline = ContinuousClock.now + .seconds(10)
        while calls.load(ordering: .relaxed) == 0, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
        #expect(calls.load(ordering: .relaxed) == 1, "at once; the second a delay later")
        while resync.isRunning, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        #expect(calls.load(ordering: .relaxed) == 4, "two rounds of two, not fifty")

        resync.request()
        while resync.isRunning, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        #expect(calls.load(ordering: .relaxed) == 6, "a later request makes a round of its own")
    }

    /// For a while after an uncertain commit, the controller's own notifications are applied too: one is the only word
    /// it gets of a COMMIT that landed after the round.
    @Test func ownChangesApplyForAWhileAfterAnUncertainCommit() {
        let resync = UncertainCommitResync(delay: .milliseconds(1)) {}
        #expect(!resync.appliesOwnChanges(), "no commit was uncertain")
        let requested = ContinuousClock.now
        resync.request()
        #expect(resync.appliesOwnChanges(at: requested + .seconds(1)))
        #expect(resync.appliesOwnChanges(at: requested + UncertainCommitResync.ownChangesWindow - .seconds(1)))
        #expect(!resync.appliesOwnChanges(at: requested + UncertainCommitResync.ownChangesWindow + .seconds(1)))
    }
}
