import Foundation
import Synchronization
import Testing

@testable import Controller

/// `ClusterClock`: the offset a sample of the database's clock gives, and the samples it refuses.
@Suite struct ClusterClockTests {
    struct Row: Sendable, CustomTestStringConvertible {
        var name: String
        /// Seconds on the host's clock when the query was sent and answered, and the database's clock in the answer.
        var sent: TimeInterval
        var received: TimeInterval
        var database: TimeInterval
        /// The offset taken, `nil`: the sample is refused and the clock keeps its previous offset.
        var offset: TimeInterval?
        var testDescription: String { name }
    }

    static let rows: [Row] = [
        .init(name: "in step", sent: 1000, received: 1000.2, database: 1000.1, offset: 0),
        .init(name: "host 120 s behind", sent: 1000, received: 1000.2, database: 1120.1, offset: 120),
        .init(name: "host 30 s ahead", sent: 1000, received: 1000.002, database: 970.001, offset: -30),
        .init(name: "round trip at the limit", sent: 1000, received: 1001, database: 1005.5, offset: 5),
        .init(name: "round trip too slow to trust", sent: 1000, received: 1001.5, database: 1100, offset: nil),
        .init(name: "host clock stepped back during the query", sent: 1000, received: 999, database: 1000, offset: nil),
    ]

    @Test(arguments: rows)
    func aSampleSetsTheOffset(_ row: Row) throws {
        // No time passes on the monotonic clock: now is the database's time when the sample was received.
        let instant = ContinuousClock.now
        let clock = ClusterClock(base: { Date(timeIntervalSince1970: 5000) }, monotonic: { instant })
        clock.adjust(
            to: .init(
                sent: Date(timeIntervalSince1970: 0),
                received: Date(timeIntervalSince1970: 0.1),
                database: Date(timeIntervalSince1970: 7.05),
                receivedAt: instant
            )
        )
        let before = try #require(clock.offset)
        let sample = ClusterClock.Sample(
            sent: Date(timeIntervalSince1970: row.sent),
            received: Date(timeIntervalSince1970: row.received),
            database: Date(timeIntervalSince1970: row.database),
            receivedAt: instant
        )
        let taken = clock.adjust(to: sample)
        let expected = row.offset ?? before
        #expect((taken == nil) == (row.offset == nil))
        #expect(abs(try #require(clock.offset) - expected) < 0.000_1)
        let receivedThere = row.offset == nil ? 0.1 : row.received
        #expect(abs(clock.now().timeIntervalSince1970 - (receivedThere + expected)) < 0.000_1)
    }

    /// The host's clock stepped after a sample (chrony correcting an instance that booted 120 s behind): the database's
    /// time goes on from the sample by the monotonic clock. It was the host's clock plus the offset measured before the
    /// step, 120 s ahead until the next sample.
    @Test func aStepOfTheHostsClockDoesNotMoveTheDatabasesTime() {
        let wall = Mutex(Date(timeIntervalSince1970: 1000))
        let monotonic = Mutex(ContinuousClock.now)
        let clock = ClusterClock(base: { wall.withLock { $0 } }, monotonic: { monotonic.withLock { $0 } })
        clock.adjust(
            to: .init(
                sent: Date(timeIntervalSince1970: 1000),
                received: Date(timeIntervalSince1970: 1000),
                database: Date(timeIntervalSince1970: 1120),
                receivedAt: monotonic.withLock { $0 }
            )
        )
        #expect(abs(clock.now().timeIntervalSince1970 - 1120) < 0.000_1)
        wall.withLock { $0 = Date(timeIntervalSince1970: 1120) }
        #expect(abs(clock.now().timeIntervalSince1970 - 1120) < 0.000_1, "the step moved the database's time")
        monotonic.withLock { $0 += .seconds(5) }
        wall.withLock { $0 = Date(timeIntervalSince1970: 1125) }
        #expect(abs(clock.now().timeIntervalSince1970 - 1125) < 0.000_1, "time goes on from the sample")
    }

    @Test func beforeTheFirstSampleItIsTheHostsClock() {
        let clock = ClusterClock(base: { Date(timeIntervalSince1970: 5000) })
        #expect(clock.offset == nil)
        #expect(clock.now() == Date(timeIntervalSince1970: 5000))
    }
}
