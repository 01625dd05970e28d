import Shared

/// Masks instance env values in text the agent sends or logs: defence in depth behind keeping secrets out of messages
/// in the first place (the health URL's filled-in form, for one, never reaches a message).
///
/// The rule (docs/agent.md, "What leaves the instance"): every value of an instance env file that is at least
/// `minimumLength` bytes long is replaced by `${NAME}` wherever it appears — raw or percent-encoded — in a status
/// report message, a failure reason, the agent's state file messages and every agent log line. A value made only of
/// digits is replaced only where it is a whole run of digits (`500000` does not eat into `5000000`). Shorter values
/// (`1`, `true`, `3000`) are left alone: too short to be a secret worth the name, and masking them would garble
/// serials, counts and ports in every message.
struct SecretMask: Sendable, Equatable {
    /// Values shorter than this (in UTF-8 bytes) are not masked.
    static let minimumLength = 6

    private struct Secret: Sendable, Equatable {
        var pattern: [UInt8]
        var replacement: [UInt8]
        var digitsOnly: Bool
    }

    /// Longest pattern first, so a value that contains another is replaced whole.
    private var secrets: [Secret] = []

    /// No values to mask.
    init() {}

    /// Masks the values of `environments` (env file name → its variables).
    init(_ environments: some Sequence<[String: String]>) {
        var names: [[UInt8]: String] = [:]
        for environment in environments {
            for (name, value) in environment where value.utf8.count >= Self.minimumLength {
                for form in Self.forms(of: value) {
                    // One value under two names: the first name in order wins, so the result does not depend on hashing.
                    if let existing = names[form], existing <= name { continue }
                    names[form] = name
                }
            }
        }
        secrets = names.map { pattern, name in
            Secret(
                pattern: pattern,
                replacement: Array("${\(name)}".utf8),
                digitsOnly: pattern.allSatisfy(Self.isDigit)
            )
        }
        .sorted { $0.pattern.count != $1.pattern.count ? $0.pattern.count > $1.pattern.count : $0.pattern.lexicographicallyPrecedes($1.pattern) }
    }

    /// The texts `value` is looked for as, each at least `minimumLength` bytes:
    /// - raw, and as a health URL writes it: fully percent-encoded (a query), or keeping what a path may hold;
    /// - as an app's own logging writes a string: JSON-escaped (`JSON.stringify`, and the loggers built on it) and
    ///   escaped the way Node's `console.log` of an object quotes it (`util.inspect`: `'…'`, or `"…"` when the value
    ///   holds a `'`), so `p\ss"word` logged as part of a config object is still found;
    /// - for a value of several lines (a PEM key from `KEY="-----BEGIN…\n…"` in an env file), each line of at least
    ///   `minimumLineLength` bytes on its own, raw and escaped: `util.inspect` prints a long multi-line string as one
    ///   quoted piece per line.
    static func forms(of value: String) -> Set<[UInt8]> {
        var forms: Set<[UInt8]> = []
        func insert(_ texts: [String]) {
            for form in texts where form.utf8.count >= minimumLength { forms.insert(Array(form.utf8)) }
        }
        insert([
            value, PercentEncoding.encode(value), PercentEncoding.encode(value, keeping: PercentEncoding.pathCharacters),
            jsonEscaped(value), inspectEscaped(value, quote: "'"), inspectEscaped(value, quote: nil),
        ])
        guard value.contains(where: \.isNewline) else { return forms }
        // Lines of at least `minimumLineLength` bytes without their indentation: a line of blanks, or a short one
        // (`}`, `"type": "x",`), would be found in every log line. A key's body lines (64 bytes of base64) are the point.
        var lines = 0
        let blank: (Character) -> Bool = { $0 == " " || $0 == "\t" }
        for line in value.split(whereSeparator: \.isNewline) where lines < maximumLinesPerValue {
            let text = String(line.drop(while: blank).reversed().drop(while: blank).reversed())
            guard text.utf8.count >= minimumLineLength else { continue }
            lines += 1
            insert([text, jsonEscaped(text), inspectEscaped(text, quote: "'"), inspectEscaped(text, quote: nil)])
        }
        return forms
    }

    /// A line of a multi-line value shorter than this (without its indentation) is not looked for on its own.
    static let minimumLineLength = 16
    /// At most this many lines of one value are looked for on their own (each a pattern every masked text is scanned
    /// for): a certificate chain's hundred lines, not an allow-list's thousands.
    static let maximumLinesPerValue = 256

    /// `text` as inside a JSON string written by `JSON.stringify`: `\\`, `\"`, the short escapes, `\u00xx` for other
    /// control characters, which is how `JSONWriter` writes a string too.
    static func jsonEscaped(_ text: String) -> String {
        var writer = JSONWriter()
        writer.writeString(text)
        return String(decoding: writer.bytes.dropFirst().dropLast(), as: UTF8.self)
    }

    /// `text` as inside the quotes Node's `util.inspect` puts around a string: `\\`, the quote when there is one, the
    /// short escapes, `\xXX` for other control characters and DEL.
    static func inspectEscaped(_ text: String, quote: Unicode.Scalar?) -> String {
        var result = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\\": result += "\\\\"
            case _ where scalar == quote: result += "\\" + String(scalar)
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "\t": result += "\\t"
            case "\u{08}": result += "\\b"
            case "\u{0C}": result += "\\f"
            case _ where scalar.value < 0x20 || scalar.value == 0x7F: result += "\\x" + Hex.encode([UInt8(scalar.value)]).uppercased()
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result
    }

    /// Whether there is nothing to mask.
    var isEmpty: Bool { secrets.isEmpty }

    /// Bytes of the longest form (raw or percent-encoded) of any secret; 0 without secrets. A window cut out of a
    /// longer text must drop this many bytes at its cut to be sure no fragment of a secret survives unmasked.
    var longestSecretBytes: Int { secrets.first?.pattern.count ?? 0 }

    /// `text` with every secret value replaced by `${NAME}`.
    ///
    /// Longest secret first, each looked for only in what is still the text's own: never in a name put in for an
    /// earlier one. A name holding another secret's value was otherwise replaced in turn, and every name put in then
    /// again: an instance env file of a few lines could make one log line gigabytes long.
    func apply(_ text: String) -> String {
        guard !secrets.isEmpty, text.utf8.count >= Self.minimumLength else { return text }
        var pieces: [Piece] = [Piece(bytes: Array(text.utf8), isName: false)]
        var changed = false
        for secret in secrets {
            var next: [Piece] = []
            var found = false
            for piece in pieces {
                if piece.isName || piece.bytes.count < secret.pattern.count || !Self.split(piece.bytes, at: secret, into: &next) {
                    next.append(piece)
                } else {
                    found = true
                }
            }
            if found {
                pieces = next
                changed = true
            }
        }
        // Whole valid UTF-8 sequences were swapped for ASCII, so the bytes are still valid UTF-8.
        return changed ? String(decoding: pieces.flatMap(\.bytes), as: UTF8.self) : text
    }

    /// A run of the text being masked: its own bytes, or a name put in for a secret.
    private struct Piece {
        var bytes: [UInt8]
        var isName: Bool
    }

    /// Appends `bytes` to `pieces` with every occurrence of the secret replaced by its name, when there is one.
    /// - Returns: whether there was one (nothing is appended otherwise).
    private static func split(_ bytes: [UInt8], at secret: Secret, into pieces: inout [Piece]) -> Bool {
        let pattern = secret.pattern
        guard let first = pattern.first else { return false }
        var copiedUpTo = 0
        var position = 0
        let last = bytes.count - pattern.count
        while position <= last {
            if bytes[position] == first, bytes[position..<(position + pattern.count)].elementsEqual(pattern),
                !secret.digitsOnly || isWholeDigitRun(bytes, position, pattern.count)
            {
                if position > copiedUpTo { pieces.append(Piece(bytes: Array(bytes[copiedUpTo..<position]), isName: false)) }
                pieces.append(Piece(bytes: secret.replacement, isName: true))
                position += pattern.count
                copiedUpTo = position
            } else {
                position += 1
            }
        }
        guard copiedUpTo > 0 else { return false }
        if copiedUpTo < bytes.count { pieces.append(Piece(bytes: Array(bytes[copiedUpTo...]), isName: false)) }
        return true
    }

    private static func isWholeDigitRun(_ bytes: [UInt8], _ start: Int, _ length: Int) -> Bool {
        (start == 0 || !isDigit(bytes[start - 1])) && (start + length == bytes.count || !isDigit(bytes[start + length]))
    }

    private static func isDigit(_ byte: UInt8) -> Bool { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) }
}
