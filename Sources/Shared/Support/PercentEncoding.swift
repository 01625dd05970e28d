/// RFC 3986 percent-encoding, the package's one: every byte of the UTF-8 text but the unreserved ones
/// (`A-Z a-z 0-9 - . _ ~`) and those of `kept` written as `%XX` (upper-case hex).
package enum PercentEncoding {
    /// What a path segment may hold besides the unreserved characters (RFC 3986 `pchar`), and `/`.
    package static let pathCharacters = "!$&'()*+,;=:@/"

    /// `text` encoded, keeping the unreserved bytes and `kept` (ASCII characters a context allows as they are).
    package static func encode(_ text: String, keeping kept: String = "") -> String {
        let kept = Array(kept.utf8)
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for byte in text.utf8 {
            if isUnreserved(byte) || kept.contains(byte) {
                out.unicodeScalars.append(Unicode.Scalar(byte))
            } else {
                out += "%" + Hex.encode([byte]).uppercased()
            }
        }
        return out
    }

    /// Whether `byte` is an unreserved URL character.
    package static func isUnreserved(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
            UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
            true
        default: false
        }
    }
}
