/// Token text: `fyt_` followed by 48 lowercase hex characters (192 bits from the system CSPRNG). The controller issues
/// tokens; an agent makes its own for an enrolment it may have to send again (`EnrollRequest.tokenSHA256`).
///
/// Only the SHA-256 of a token is stored. A token has far more entropy than a password, so a plain (unsalted,
/// fast) digest is enough: nobody can search 2^192 candidates.
package enum Token {
    package static let prefix = "fyt_"
    private static let randomBytes = 24

    /// A fresh token.
    package static func generate() -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<randomBytes).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        return prefix + Hex.encode(bytes)
    }

    /// A fresh public token id: `tok_` and 16 hex characters. It names a token in `token list`, `token revoke` and
    /// `DELETE /v1/tokens/{id}`; knowing it grants nothing.
    package static func generateID() -> String {
        var generator = SystemRandomNumberGenerator()
        return idPrefix + Hex.encode((0..<8).map { _ in UInt8.random(in: .min ... .max, using: &generator) })
    }

    package static let idPrefix = "tok_"

    /// Whether `text` has the shape of a token id (`tok_` and 16 lowercase hex characters).
    package static func isWellFormedID(_ text: some StringProtocol) -> Bool {
        let bytes = text.utf8
        guard bytes.count == idPrefix.utf8.count + 16, text.hasPrefix(idPrefix) else { return false }
        return bytes.dropFirst(idPrefix.utf8.count).allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }
    }

    /// Whether `text` has the shape of a Ferry token (checked before any lookup, so junk costs nothing).
    package static func isWellFormed(_ text: some StringProtocol) -> Bool {
        let bytes = text.utf8
        guard bytes.count == prefix.utf8.count + randomBytes * 2, text.hasPrefix(prefix) else { return false }
        return bytes.dropFirst(prefix.utf8.count).allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }
    }

    /// The stored form of a token: lowercase hex SHA-256 of its UTF-8 text.
    package static func digest(_ token: some StringProtocol) -> String {
        SHA256.hash(Array(token.utf8)).hex
    }

    /// Compares two digests in time independent of where they differ.
    package static func constantTimeEquals(_ a: String, _ b: String) -> Bool {
        guard a.utf8.count == b.utf8.count else { return false }
        var difference: UInt8 = 0
        for (x, y) in zip(a.utf8, b.utf8) { difference |= x ^ y }
        return difference == 0
    }
}
