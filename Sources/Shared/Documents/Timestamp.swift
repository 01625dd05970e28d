#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// RFC 3339 timestamps as Ferry writes and reads them (`2026-11-26T12:00:00Z`).
package enum Timestamp {
    /// Parses an RFC 3339 timestamp (`Z` or a numeric offset, optional fractional seconds).
    package static func parse(_ text: String) -> Date? {
        guard text.utf8.count <= 40 else { return nil }
        if let date = try? Date(text, strategy: .iso8601) { return date }
        return try? Date(text, strategy: Date.ISO8601FormatStyle(includingFractionalSeconds: true))
    }

    /// Formats `date` as `YYYY-MM-DDTHH:MM:SSZ` (UTC, whole seconds).
    package static func format(_ date: Date) -> String {
        date.formatted(Date.ISO8601FormatStyle())
    }

    /// `ObjectReader` converter for timestamp fields.
    package static func field(_ value: JSONValue, _ path: String) throws(DocumentError) -> Date {
        let text = try Field.string(maxLength: 40)(value, path)
        guard let date = parse(text) else {
            throw .invalidValue(field: path, reason: "\"\(text)\" is not an RFC 3339 timestamp like 2026-11-26T12:00:00Z")
        }
        return date
    }
}
