import Shared
import Testing

@Suite("Backoff")
struct BackoffTests {
    @Test func withoutJitterDelaysDoubleUpToTheMaximum() {
        var backoff = Backoff(configuration: .init(jitter: .none))
        let seconds = (0..<9).map { _ in backoff.next() }
        #expect(seconds == [1, 2, 4, 8, 16, 32, 60, 60, 60].map { Duration.seconds($0) })
        #expect(backoff.attempt == 9)
    }

    @Test func fullJitterScalesTheWholeDelay() {
        var backoff = Backoff(configuration: .init(jitter: .full), random: { 0.25 })
        #expect(backoff.next() == .milliseconds(250))
        #expect(backoff.next() == .milliseconds(500))
        #expect(backoff.next() == .seconds(1))
    }

    @Test func equalJitterKeepsAtLeastHalf() {
        var low = Backoff(configuration: .init(initial: .seconds(2), jitter: .equal), random: { 0 })
        var high = Backoff(configuration: .init(initial: .seconds(2), jitter: .equal), random: { 0.5 })
        #expect(low.next() == .seconds(1))
        #expect(high.next() == .milliseconds(1500))
        #expect(low.next() == .seconds(2))
    }

    @Test func resetStartsOver() {
        var backoff = Backoff(configuration: .init(initial: .milliseconds(100), maximum: .seconds(1), factor: 3, jitter: .none))
        #expect(backoff.next() == .milliseconds(100))
        #expect(backoff.next() == .milliseconds(300))
        backoff.reset()
        #expect(backoff.next() == .milliseconds(100))
    }

    @Test func delaysStayWithinBoundsWithTheSystemRandomSource() {
        var backoff = Backoff()
        for _ in 0..<2000 {
            let delay = backoff.next()
            #expect(delay >= .zero && delay <= .seconds(60))
        }
    }
}
