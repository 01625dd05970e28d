import Foundation
import Shared

/// Token text: `fyt_` followed by 48 lowercase hex characters (192 bits from the system CSPRNG).
///
/// Only the SHA-256 of a token is stored. A token has far more entropy than a password, so a plain (unsalted,
/// fast) digest is enough: nobody can search 2^192 candidates.
enum Token {
    static let prefix = "fyt_"
    private static let randomBytes = 24

    /// A fresh token.
    static func generate() -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<randomBytes).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        return prefix + Hex.encode(bytes)
    }

    /// Whether `text` has the shape of a Ferry token (checked before any lookup, so junk costs nothing).
    static func isWellFormed(_ text: some StringProtocol) -> Bool {
        text.hasPrefix(prefix) && Hex.isLowercaseHex(String(text.dropFirst(prefix.count)), count: randomBytes * 2)
    }

    /// The stored form of a token: lowercase hex SHA-256 of its UTF-8 text.
    static func digest(_ token: some StringProtocol) -> String {
        SHA256.hash(Array(token.utf8)).hex
    }

    /// Compares two digests in time independent of where they differ.
    static func constantTimeEquals(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8)
        let y = Array(b.utf8)
        guard x.count == y.count else { return false }
        var difference: UInt8 = 0
        for index in x.indices { difference |= x[index] ^ y[index] }
        return difference == 0
    }
}
