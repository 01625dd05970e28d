import Foundation
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
        let clock = ClusterClock(base: { Date(timeIntervalSince1970: 5000) })
        clock.adjust(
            to: .init(sent: Date(timeIntervalSince1970: 0), received: Date(timeIntervalSince1970: 0.1), database: Date(timeIntervalSince1970: 7.05))
        )
        let before = try #require(clock.offset)
        let sample = ClusterClock.Sample(
            sent: Date(timeIntervalSince1970: row.sent),
            received: Date(timeIntervalSince1970: row.received),
            database: Date(timeIntervalSince1970: row.database)
        )
        let taken = clock.adjust(to: sample)
        let expected = row.offset ?? before
        #expect((taken == nil) == (row.offset == nil))
        #expect(abs(try #require(clock.offset) - expected) < 0.000_1)
        #expect(abs(clock.now().timeIntervalSince1970 - (5000 + expected)) < 0.000_1)
    }

    @Test func beforeTheFirstSampleItIsTheHostsClock() {
        let clock = ClusterClock(base: { Date(timeIntervalSince1970: 5000) })
        #expect(clock.offset == nil)
        #expect(clock.now() == Date(timeIntervalSince1970: 5000))
    }
}
