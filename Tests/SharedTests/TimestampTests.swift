import Foundation
import Shared
import Testing

/// Ferry's timestamps: every one a document may carry reads back after Ferry writes it out again, so a status report
/// stored by the controller can always be read (a date before year 0 or past year 9999 could not be).
@Suite("Timestamps: RFC 3339 between 1970 and 9999")
struct TimestampTests {
    struct Accepted: Sendable, CustomTestStringConvertible {
        var text: String
        var seconds: Double
        var testDescription: String { text }
    }

    static let accepted: [Accepted] = [
        Accepted(text: "2026-11-26T12:00:00Z", seconds: 1_795_694_400),
        Accepted(text: "2026-11-26T13:30:00+01:30", seconds: 1_795_694_400),
        Accepted(text: "2026-11-26T10:00:00-02:00", seconds: 1_795_694_400),
        Accepted(text: "2026-11-26T12:00:00.250Z", seconds: 1_795_694_400.25),
        Accepted(text: "1970-01-01T00:00:00Z", seconds: 0),
        Accepted(text: "9999-12-31T23:59:59Z", seconds: 253_402_300_799),
    ]

    @Test("an RFC 3339 timestamp is read, and what Ferry writes of it reads back", arguments: accepted)
    func readsAndRoundTrips(_ row: Accepted) throws {
        let date = try #require(Timestamp.parse(row.text))
        #expect(abs(date.timeIntervalSince1970 - row.seconds) < 0.001)
        let written = Timestamp.format(date)
        #expect(Timestamp.parse(written) != nil, "\(row.text) was written as \(written), which does not read back")
        #expect(try Timestamp.field(.string(row.text), "at") == date)
    }

    struct Refused: Sendable, CustomTestStringConvertible {
        var name: String
        var text: String
        var testDescription: String { name }
    }

    static let refused: [Refused] = [
        Refused(name: "a minute before year 0 in UTC (written back as -0001-12-31T23:59:00Z)", text: "0000-01-01T00:00:00+00:01"),
        Refused(name: "a year of ten digits", text: "9999999999-12-31T23:59:59-01:00"),
        Refused(name: "a second past year 9999 in UTC", text: "9999-12-31T23:59:59-00:01"),
        Refused(name: "the last second of 1969", text: "1969-12-31T23:59:59Z"),
        Refused(name: "an hour of ten digits", text: "2026-01-01T9999999999:00:00Z"),
        Refused(name: "hour 24", text: "2026-01-01T24:00:00Z"),
        Refused(name: "minute 60", text: "2026-01-01T12:60:00Z"),
        Refused(name: "second 61", text: "2026-01-01T12:00:61Z"),
        Refused(name: "month 13", text: "2026-13-01T12:00:00Z"),
        Refused(name: "day 0", text: "2026-01-00T12:00:00Z"),
        Refused(name: "an offset with seconds", text: "2026-01-01T12:00:00+18:00:00"),
        Refused(name: "an offset hour of 24", text: "2026-01-01T12:00:00+24:00"),
        Refused(name: "no offset", text: "2026-01-01T12:00:00"),
        Refused(name: "a date without a time", text: "2026-01-01"),
        Refused(name: "a fraction of ten digits", text: "2026-01-01T12:00:00.1234567890Z"),
        Refused(name: "an empty fraction", text: "2026-01-01T12:00:00.Z"),
        Refused(name: "trailing text", text: "2026-01-01T12:00:00Z "),
        Refused(name: "leading space", text: " 2026-01-01T12:00:00Z"),
        Refused(name: "a word", text: "yesterday"),
        Refused(name: "nothing", text: ""),
        Refused(name: "full-width digits", text: "２０２６-01-01T12:00:00Z"),
    ]

    @Test("a timestamp out of range or out of shape is refused", arguments: refused)
    func refuses(_ row: Refused) {
        #expect(Timestamp.parse(row.text) == nil)
        #expect(throws: DocumentError.self) { try Timestamp.field(.string(row.text), "at") }
    }
}
