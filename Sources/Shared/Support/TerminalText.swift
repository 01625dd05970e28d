/// Text that came from elsewhere, made safe to write to an operator's terminal or to a log.
///
/// What the operator commands print is partly written by agents: hostnames, status messages, failure reasons, the
/// log tails of a failed release. An attacker holding one instance's credentials writes those, and a terminal obeys
/// control sequences wherever they come from: `ESC ] 52` sets the clipboard, `ESC [ 2 J` clears the screen, a carriage
/// return or backspaces overwrite what was printed before, a right-to-left override reverses what follows. So every
/// control character (C0 but line feed and tab, DEL, C1) and every Unicode bidirectional formatting character is
/// written as `\u` and four hex digits instead. That is also how JSON writes a character, so a line of JSON keeps
/// its meaning: the change is lossless there.
package enum TerminalText {
    /// `text` with every character a terminal would obey (`needsEscape`) written as `\uXXXX`. A line feed stays when
    /// `keepingLineBreaks` (text of several lines), and is escaped too otherwise (a table cell, a log line: a hostname
    /// must not start a line of its own).
    package static func safe(_ text: String, keepingLineBreaks: Bool = true) -> String {
        func escaped(_ scalar: Unicode.Scalar) -> Bool {
            needsEscape(scalar) || (!keepingLineBreaks && scalar == "\n")
        }
        guard text.unicodeScalars.contains(where: escaped) else { return text }
        var result = String.UnicodeScalarView()
        for scalar in text.unicodeScalars {
            guard escaped(scalar) else {
                result.append(scalar)
                continue
            }
            result.append(contentsOf: "\\u".unicodeScalars)
            let hex = String(scalar.value, radix: 16)
            result.append(contentsOf: (String(repeating: "0", count: max(0, 4 - hex.count)) + hex).unicodeScalars)
        }
        return String(result)
    }

    /// Whether a terminal would act on `scalar` rather than show it: C0 controls other than line feed and tab, DEL,
    /// C1 controls, and the bidirectional marks, embeddings, overrides and isolates.
    package static func needsEscape(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x0A, 0x09: false
        case 0x00...0x1F, 0x7F...0x9F: true
        case 0x061C, 0x200E, 0x200F, 0x202A...0x202E, 0x2066...0x2069: true
        default: false
        }
    }

    /// `text` without its colour and style sequences (`ESC [` digits and semicolons `m`), which apps write into their
    /// logs (a log tail of a failed release): shown escaped they would be noise. Every other sequence stays, for
    /// `safe` to escape.
    package static func droppingColors(_ text: String) -> String {
        let scalars = Array(text.unicodeScalars)
        guard scalars.contains("\u{1B}") else { return text }
        var result = String.UnicodeScalarView()
        var index = 0
        while index < scalars.count {
            if scalars[index] == "\u{1B}", index + 1 < scalars.count, scalars[index + 1] == "[" {
                var end = index + 2
                while end < scalars.count, scalars[end] == ";" || ("0"..."9").contains(scalars[end]) { end += 1 }
                if end < scalars.count, scalars[end] == "m" {
                    index = end + 1
                    continue
                }
            }
            result.append(scalars[index])
            index += 1
        }
        return String(result)
    }
}
