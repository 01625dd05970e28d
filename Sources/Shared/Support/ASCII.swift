/// Byte-level ASCII text checks for hot paths where `String`'s `Character` semantics (grapheme breaking, Unicode case
/// mapping) cost far more than the question asked: HTTP header tokens are ASCII by definition.
package enum ASCII {
    /// Whether the comma-separated list `text` (a `Connection` field's value) holds `token` (lowercase ASCII), ignoring
    /// ASCII case and the spaces and tabs around each element: `keep-alive, Close` does, `foreclose` and `close-ish`
    /// do not. llhttp reads `Connection` the same way, and the two must agree: a connection its reader ends on a
    /// substring match while llhttp keeps parsing it held its next request counted in flight and unanswered, with no
    /// deadline, for as long as the client kept it open.
    package static func containsToken(_ text: some StringProtocol, caseInsensitive token: StaticString) -> Bool {
        let pattern = UnsafeBufferPointer(start: token.utf8Start, count: token.utf8CodeUnitCount)
        let bytes = Array(text.utf8)
        var start = 0
        while start <= bytes.count {
            let end = bytes[start...].firstIndex(of: UInt8(ascii: ",")) ?? bytes.count
            var low = start
            var high = end
            while low < high, bytes[low] == 0x20 || bytes[low] == 0x09 { low += 1 }
            while high > low, bytes[high - 1] == 0x20 || bytes[high - 1] == 0x09 { high -= 1 }
            if high - low == pattern.count, zip(bytes[low..<high], pattern).allSatisfy({ lowercased($0) == $1 }) { return true }
            start = end + 1
        }
        return false
    }

    /// `byte` with ASCII `A`–`Z` mapped to `a`–`z`.
    package static func lowercased(_ byte: UInt8) -> UInt8 {
        (0x41...0x5A).contains(byte) ? byte | 0x20 : byte
    }

    /// Whether `bytes` equal `lowercase` (lowercase ASCII), ignoring ASCII case.
    ///
    /// Concrete, not generic: it runs for every header of every poll, and an unspecialised generic call from another
    /// module spends most of its time looking up type metadata.
    package static func equalsLowercased(_ bytes: Slice<UnsafeBufferPointer<UInt8>>, _ lowercase: [UInt8]) -> Bool {
        guard bytes.count == lowercase.count else { return false }
        var index = bytes.startIndex
        for expected in lowercase {
            guard lowercased(bytes[index]) == expected else { return false }
            index += 1
        }
        return true
    }

    /// Whether `byte` may appear in an HTTP token (a field name, a method): RFC 9110's `tchar`.
    package static func isTokenCharacter(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"), UInt8(ascii: "'"), UInt8(ascii: "*"),
            UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "^"), UInt8(ascii: "_"), UInt8(ascii: "`"), UInt8(ascii: "|"),
            UInt8(ascii: "~"):
            true
        default: false
        }
    }
}
