import Shared

/// Plain-text tables for the operator commands: columns padded to their widest cell.
enum TextTable {
    /// Each cell is one line: control characters in it, a line feed too, are escaped (`TerminalText`). Columns are
    /// measured in terminal columns (`displayWidth`) and padded with spaces; a cell is never cut.
    static func render(headers: [String], rows: [[String]]) -> String {
        let rows = rows.map { $0.map { TerminalText.safe($0, keepingLineBreaks: false) } }
        var widths = headers.map { displayWidth($0) }
        for row in rows {
            for (index, cell) in row.enumerated() where index < widths.count { widths[index] = max(widths[index], displayWidth(cell)) }
        }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { index, cell in
                // `String.padding(toLength:)` counts UTF-16 units and cuts longer text: it split an emoji in half.
                guard index < cells.count - 1, index < widths.count else { return cell }
                return cell + String(repeating: " ", count: max(0, widths[index] - displayWidth(cell)))
            }.joined(separator: "  ")
        }
        return ([line(headers)] + rows.map(line)).joined(separator: "\n")
    }

    /// How many terminal columns `text` takes, per character (grapheme cluster): 2 for East Asian wide and fullwidth
    /// characters and for emoji shown as emoji (flags, ZWJ sequences, a symbol followed by U+FE0F), 0 for one made only
    /// of combining marks and format characters (a zero-width joiner, a variation selector), 1 for the rest.
    ///
    /// An approximation of `wcwidth` without its tables: the wide ranges are the main CJK, Hangul and fullwidth blocks,
    /// and ambiguous-width characters count 1, as most terminals outside East Asian locales show them. A tab counts 1.
    static func displayWidth(_ text: String) -> Int {
        text.reduce(0) { $0 + columns(of: $1) }
    }

    private static func columns(of character: Character) -> Int {
        let scalars = character.unicodeScalars
        guard let base = scalars.first(where: { !isZeroWidth($0) }) else { return 0 }
        if isWide(base) || scalars.contains(where: { $0.properties.isEmojiPresentation }) { return 2 }
        // Text-style emoji (☀, ❤) asked for as emoji with the variation selector U+FE0F.
        if base.properties.isEmoji, scalars.contains("\u{FE0F}") { return 2 }
        return 1
    }

    /// Combining marks (variation selectors among them) and format characters (zero-width joiner and space, soft
    /// hyphen's kin): drawn on or between their neighbours, in no column of their own.
    private static func isZeroWidth(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.properties.generalCategory {
        case .nonspacingMark, .enclosingMark, .format: true
        default: false
        }
    }

    /// East Asian Width W or F, by block: Hangul Jamo leads, CJK radicals, symbols and punctuation, kana, Bopomofo,
    /// Hangul, the CJK ideographs and their extensions, Yi, CJK compatibility forms and the fullwidth forms.
    private static func isWide(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x1100...0x115F, 0x2E80...0x303E, 0x3041...0x33FF, 0x3400...0x4DBF, 0x4E00...0x9FFF, 0xA000...0xA4CF,
            0xA960...0xA97F, 0xAC00...0xD7A3, 0xF900...0xFAFF, 0xFE10...0xFE19, 0xFE30...0xFE6F, 0xFF00...0xFF60,
            0xFFE0...0xFFE6, 0x1F200...0x1F2FF, 0x20000...0x2FFFD, 0x30000...0x3FFFD:
            true
        default:
            false
        }
    }
}
