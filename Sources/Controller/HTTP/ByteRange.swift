/// A single-range `Range: bytes=...` header (RFC 9110 §14.1.2).
enum ByteRange: Equatable {
    /// Serve these bytes (inclusive) with 206.
    case satisfiable(ClosedRange<Int64>)
    /// A well-formed range entirely past the end: 416.
    case unsatisfiable
    /// Not a single bytes range: serve the whole content with 200.
    case ignored

    /// Parses `header` for content of `size` bytes (`size` > 0).
    static func parse(_ header: String, size: Int64) -> ByteRange {
        let text = header.trimmingCharacters(in: .whitespaces)
        guard text.lowercased().hasPrefix("bytes="), size > 0 else { return .ignored }
        let spec = text.dropFirst("bytes=".count).trimmingCharacters(in: .whitespaces)
        guard !spec.contains(","), let dash = spec.firstIndex(of: "-") else { return .ignored }
        let first = spec[..<dash].trimmingCharacters(in: .whitespaces)
        let last = spec[spec.index(after: dash)...].trimmingCharacters(in: .whitespaces)
        func number(_ text: String) -> Int64? {
            guard !text.isEmpty, text.utf8.count <= 18, text.utf8.allSatisfy({ (0x30...0x39).contains($0) }) else { return nil }
            return Int64(text)
        }
        if first.isEmpty {
            // Suffix range: the last N bytes.
            guard let length = number(last) else { return .ignored }
            guard length > 0 else { return .unsatisfiable }
            return .satisfiable(max(0, size - length)...(size - 1))
        }
        guard let start = number(first) else { return .ignored }
        let end: Int64
        if last.isEmpty {
            end = size - 1
        } else {
            guard let value = number(last), value >= start else { return .ignored }
            end = min(value, size - 1)
        }
        guard start < size else { return .unsatisfiable }
        return .satisfiable(start...end)
    }
}
