import Testing

@testable import Controller

/// `FirstOf` (the bound on closing the PostgreSQL pool) answers with the first operation to end, without waiting for
/// the other, which nothing can cancel.
@Suite struct FirstOfTests {
    @Test(arguments: [true, false])
    func theFirstToEndWins(slowFirst: Bool) async {
        let started = ContinuousClock.now
        // A wait cancellation cannot end, as `Task.value` is: the slow side must be left behind, not awaited.
        let never = Task { try? await Task.sleep(for: .seconds(60)) }
        let slow: @Sendable () async -> String = {
            await never.value
            return "slow"
        }
        let fast: @Sendable () async -> String = { "fast" }
        let winner = slowFirst ? await FirstOf.run(slow, or: fast) : await FirstOf.run(fast, or: slow)
        #expect(winner == "fast")
        #expect(ContinuousClock.now - started < .seconds(10))
        never.cancel()
    }
}
