/// Byte-level ASCII text checks for hot paths where `String`'s `Character` semantics (grapheme breaking, Unicode case
/// mapping) cost far more than the question asked: HTTP header tokens are ASCII by definition.
package enum ASCII {
    /// Whether `text` contains `needle` (which must be lowercase ASCII), ignoring ASCII case.
    package static func contains(_ text: some StringProtocol, caseInsensitive needle: StaticString) -> Bool {
        let pattern = UnsafeBufferPointer(start: needle.utf8Start, count: needle.utf8CodeUnitCount)
        guard !pattern.isEmpty else { return true }
        let bytes = Array(text.utf8)
        guard bytes.count >= pattern.count else { return false }
        for start in 0...(bytes.count - pattern.count) {
            var matched = true
            for offset in 0..<pattern.count where lowercased(bytes[start + offset]) != pattern[offset] {
                matched = false
                break
            }
            if matched { return true }
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
