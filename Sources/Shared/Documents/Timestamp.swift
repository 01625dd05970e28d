#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// RFC 3339 timestamps as Ferry writes and reads them (`2026-11-26T12:00:00Z`).
package enum Timestamp {
    /// The earliest instant a Ferry timestamp may name: 1970-01-01T00:00:00Z.
    package static let earliest = Date(timeIntervalSince1970: 0)
    /// The latest: 9999-12-31T23:59:59Z, the last instant `format` writes with a four-digit year.
    package static let latest = Date(timeIntervalSince1970: 253_402_300_799)

    /// Parses an RFC 3339 timestamp (`Z` or a numeric offset, optional fractional seconds) between `earliest` and
    /// `latest`.
    ///
    /// The text's shape is checked here before Foundation parses it: Foundation's ISO 8601 parser also takes years of up
    /// to ten digits, hours and minutes past their range and offsets of up to 18 hours, and gives dates that `format`
    /// then writes in a form it cannot read back (`0000-01-01T00:00:00+00:01` is `-0001-12-31T23:59:00Z`). A stored
    /// document holding such a date could no longer be read, and every page and rollout that reads it would fail.
    package static func parse(_ text: String) -> Date? {
        guard text.utf8.count <= 40, hasShape(Array(text.utf8)) else { return nil }
        guard
            let date = (try? Date(text, strategy: .iso8601))
                ?? (try? Date(text, strategy: Date.ISO8601FormatStyle(includingFractionalSeconds: true)))
        else { return nil }
        return earliest <= date && date <= latest ? date : nil
    }

    /// Formats `date` as `YYYY-MM-DDTHH:MM:SSZ` (UTC, whole seconds).
    package static func format(_ date: Date) -> String {
        date.formatted(Date.ISO8601FormatStyle())
    }

    /// `ObjectReader` converter for timestamp fields.
    package static func field(_ value: JSONValue, _ path: String) throws(DocumentError) -> Date {
        let text = try Field.string(maxLength: 40)(value, path)
        guard let date = parse(text) else {
            throw .invalidValue(
                field: path,
                reason: "\"\(text)\" is not an RFC 3339 timestamp like 2026-11-26T12:00:00Z between 1970 and 9999"
            )
        }
        return date
    }

    /// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, every field within its range (the day up to 31, whatever the month;
    /// no leap second), the fraction of 1 to 9 digits.
    private static func hasShape(_ bytes: [UInt8]) -> Bool {
        func number(_ start: Int, _ count: Int) -> Int? {
            guard start + count <= bytes.count else { return nil }
            var value = 0
            for byte in bytes[start..<(start + count)] {
                guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
                value = value * 10 + Int(byte - UInt8(ascii: "0"))
            }
            return value
        }
        func byte(_ index: Int, _ allowed: String) -> Bool {
            index < bytes.count && allowed.utf8.contains(bytes[index])
        }
        guard number(0, 4) != nil, byte(4, "-"), let month = number(5, 2), (1...12).contains(month), byte(7, "-"),
            let day = number(8, 2), (1...31).contains(day), byte(10, "Tt"), let hour = number(11, 2), hour <= 23,
            byte(13, ":"), let minute = number(14, 2), minute <= 59, byte(16, ":"), let second = number(17, 2), second <= 59
        else { return false }
        var index = 19
        if byte(index, ".") {
            var digits = 0
            while number(index + 1 + digits, 1) != nil { digits += 1 }
            guard (1...9).contains(digits) else { return false }
            index += 1 + digits
        }
        if byte(index, "Zz") { return index + 1 == bytes.count }
        guard byte(index, "+-"), let offsetHours = number(index + 1, 2), offsetHours <= 23, byte(index + 3, ":"),
            let offsetMinutes = number(index + 4, 2), offsetMinutes <= 59
        else { return false }
        return index + 6 == bytes.count
    }
}
