import Shared
import Testing

@Suite("Text from agents and apps, made safe for a terminal")
struct TerminalTextTests {
    struct Row: Sendable, CustomTestStringConvertible {
        var label: String
        var text: String
        var expected: String
        /// Expected with line feeds escaped too; `nil`: the same as `expected`.
        var oneLine: String? = nil
        var testDescription: String { label }
    }

    static let rows: [Row] = [
        Row(label: "plain text is unchanged", text: "web-1.internal: healthy for 10s", expected: "web-1.internal: healthy for 10s"),
        Row(label: "letters of every script, emoji", text: "héllo 日本 Ω 🚀", expected: "héllo 日本 Ω 🚀"),
        Row(label: "a backslash alone", text: #"C:\path"#, expected: #"C:\path"#),
        Row(label: "empty", text: "", expected: ""),
        Row(label: "clipboard write (OSC 52, BEL)", text: "\u{1B}]52;c;cHduZWQ=\u{07}x", expected: #"\u001b]52;c;cHduZWQ=\u0007x"#),
        Row(label: "clear screen (CSI)", text: "a\u{1B}[2Jb", expected: #"a\u001b[2Jb"#),
        Row(label: "colours are escaped too", text: "\u{1B}[31mred\u{1B}[0m", expected: #"\u001b[31mred\u001b[0m"#),
        Row(label: "carriage return overwriting the line", text: "bad\rgood", expected: #"bad\u000dgood"#),
        Row(label: "backspaces", text: "evil\u{08}\u{08}\u{08}\u{08}fine", expected: #"evil\u0008\u0008\u0008\u0008fine"#),
        Row(label: "NUL", text: "a\u{0}b", expected: #"a\u0000b"#),
        Row(label: "DEL", text: "a\u{7F}b", expected: #"a\u007fb"#),
        Row(label: "C1 CSI, as UTF-8", text: "a\u{9B}2Jb", expected: #"a\u009b2Jb"#),
        Row(label: "C1 bounds", text: "\u{80}\u{9F}\u{A0}", expected: "\\u0080\\u009f\u{A0}"),
        Row(label: "right-to-left override", text: "invoice\u{202E}fdp.exe", expected: #"invoice\u202efdp.exe"#),
        Row(label: "bidi isolates and marks", text: "\u{2066}a\u{2069}\u{200F}\u{061C}", expected: #"\u2066a\u2069\u200f\u061c"#),
        Row(label: "tab stays", text: "a\tb", expected: "a\tb"),
        Row(label: "line feeds stay in text of several lines", text: "one\ntwo", expected: "one\ntwo", oneLine: #"one\u000atwo"#),
        Row(
            label: "a hostname that forges a line",
            text: "web-1\n2026-12-05 error: fake",
            expected: "web-1\n2026-12-05 error: fake",
            oneLine: #"web-1\u000a2026-12-05 error: fake"#
        ),
    ]

    @Test(arguments: rows)
    func escapes(_ row: Row) {
        #expect(TerminalText.safe(row.text) == row.expected)
        #expect(TerminalText.safe(row.text, keepingLineBreaks: false) == (row.oneLine ?? row.expected))
        // Nothing a terminal would act on is left, whatever the input.
        #expect(!TerminalText.safe(row.text).unicodeScalars.contains { TerminalText.needsEscape($0) })
    }

    @Test func everyControlCharacterIsEscapedAndNothingElse() {
        for value in UInt32(0)...0x3000 {
            guard let scalar = Unicode.Scalar(value) else { continue }
            let text = String(Character(scalar))
            let safe = TerminalText.safe(text)
            let control = value < 0x20 && value != 0x0A && value != 0x09 || (0x7F...0x9F).contains(value)
            if control { #expect(safe.hasPrefix("\\u"), "U+\(String(value, radix: 16))") }
            #expect(TerminalText.needsEscape(scalar) == (safe != text), "U+\(String(value, radix: 16))")
        }
    }

    /// JSON writes a character the same way, so a line of JSON read back gives what was escaped.
    @Test func aLineOfJSONKeepsItsMeaning() throws {
        let hostile = "web\u{7F}\u{9B}31m\u{202E}1"
        let line = String(decoding: JSONValue.object(["hostname": .string(hostile)]).encoded(), as: UTF8.self)
        let safe = TerminalText.safe(line)
        #expect(!safe.unicodeScalars.contains { TerminalText.needsEscape($0) })
        #expect(try JSONValue.parse(Array(safe.utf8)) == .object(["hostname": .string(hostile)]))
    }

    @Test(arguments: [
        ("\u{1B}[31merror\u{1B}[0m: boom", "error: boom"),
        ("\u{1B}[1;32mok\u{1B}[m", "ok"),
        ("\u{1B}[2Jstays", "\u{1B}[2Jstays"),
        ("\u{1B}]52;c;eA==\u{07}", "\u{1B}]52;c;eA==\u{07}"),
        ("unterminated \u{1B}[31", "unterminated \u{1B}[31"),
        ("trailing \u{1B}", "trailing \u{1B}"),
        ("no escapes", "no escapes"),
    ])
    func dropsColoursOnly(_ text: String, _ expected: String) {
        #expect(TerminalText.droppingColors(text) == expected)
    }
}
