/// `If-None-Match` (RFC 9110 §13.1.2) as the controller reads it: `*`, or a comma-separated list of entity tags,
/// compared weakly (`W/"x"` names `"x"`).
///
/// Read as bytes: after a publish, every one of 10,000 woken long-polls carries a tag that no longer matches, and the
/// `String` way (`split`, then Foundation's `trimmingCharacters` per element) was a seventh of the wake's CPU
/// (docs/benchmarks.md). Separators are SP and HTAB (the header's `OWS`); a tag holding a comma is not split correctly,
/// which no tag the controller makes does (they are hex digests).
enum IfNoneMatch {
    /// Whether `header` names `etag` (a strong tag with its quotes, `"…"`).
    static func header(_ header: String, matches etag: String) -> Bool {
        // The common case, an agent sending back exactly the tag it got, costs one comparison.
        if header == etag { return true }
        // `withUTF8` makes a string contiguous first when it is not (never the case for the native strings parsed here).
        var header = header
        var etag = etag
        return header.withUTF8 { header in etag.withUTF8 { etag in list(header, matches: etag) } }
    }

    private static func list(_ header: UnsafeBufferPointer<UInt8>, matches etag: UnsafeBufferPointer<UInt8>) -> Bool {
        let comma = UInt8(ascii: ",")
        let star = UInt8(ascii: "*")
        let weak = UInt8(ascii: "W")
        let slash = UInt8(ascii: "/")
        var start = 0
        while start <= header.count {
            let end = header[start...].firstIndex(of: comma) ?? header.count
            var lower = start
            var upper = end
            while lower < upper, isSpace(header[lower]) { lower += 1 }
            while upper > lower, isSpace(header[upper - 1]) { upper -= 1 }
            if upper - lower == 1, header[lower] == star { return true }
            if upper - lower >= 2, header[lower] == weak, header[lower + 1] == slash { lower += 2 }
            if upper - lower == etag.count, header[lower..<upper].elementsEqual(etag) { return true }
            start = end + 1
        }
        return false
    }

    private static func isSpace(_ byte: UInt8) -> Bool {
        byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t")
    }
}
