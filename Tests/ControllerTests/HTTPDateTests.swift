import Foundation
import TestSupport
import Testing

@testable import Controller

/// The `Date` header of the answers written before the router: RFC 9110's IMF-fixdate, as Hummingbird writes it.
@Suite struct HTTPDateTests {
    @Test(arguments: [
        (Int64(0), "Thu, 01 Jan 1970 00:00:00 GMT"),
        (1_000_000_000, "Sun, 09 Sep 2001 01:46:40 GMT"),
        (1_709_208_000, "Thu, 29 Feb 2024 12:00:00 GMT"),
        (1_796_300_678, "Thu, 03 Dec 2026 12:24:38 GMT"),
        (-1, "Wed, 31 Dec 1969 23:59:59 GMT"),
        (253_402_300_799, "Fri, 31 Dec 9999 23:59:59 GMT"),
        // Beyond four-digit years, and beyond what `gmtime_r` can represent: the epoch, never a malformed header.
        (253_402_300_800, "Thu, 01 Jan 1970 00:00:00 GMT"),
        (Int64.max, "Thu, 01 Jan 1970 00:00:00 GMT"),
        (Int64.min, "Thu, 01 Jan 1970 00:00:00 GMT"),
    ])
    func formats(_ row: (seconds: Int64, text: String)) {
        #expect(HTTPDate.format(epochSeconds: row.seconds) == row.text)
    }

    /// Against Foundation's formatter (the reference), for seeded random times from 1970 to 9999.
    @Test func matchesFoundationsFormatter() {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
        var generator = SeededRandom(seed: 0x4441_5445)
        for _ in 0..<2_000 {
            let seconds = Int64.random(in: 0...253_402_300_799, using: &generator)
            #expect(
                HTTPDate.format(epochSeconds: seconds) == formatter.string(from: Date(timeIntervalSince1970: TimeInterval(seconds))),
                "\(seconds)"
            )
        }
    }

    @Test func nowIsTheCurrentSecond() {
        let before = Int64(Date().timeIntervalSince1970)
        let text = HTTPDate.now
        let after = Int64(Date().timeIntervalSince1970)
        #expect((before...after).contains { HTTPDate.format(epochSeconds: $0) == text })
    }
}
