import Testing

@testable import Controller

/// The operator commands' tables line up in a terminal whatever the cells hold: `String.padding(toLength:)` counted
/// UTF-16 units and cut what was longer, so "deploy 🚀" printed as "deploy \u{FFFD}" and CJK cells pushed the next
/// column out of line.
@Suite struct TextTableTests {
    struct Row: Sendable, CustomTestStringConvertible {
        var label: String
        var cell: String
        /// Terminal columns the cell takes.
        var width: Int
        var testDescription: String { label }
    }

    static let rows: [Row] = [
        Row(label: "emoji", cell: "deploy 🚀", width: 9),
        Row(label: "flag", cell: "🇫🇷 paris", width: 8),
        Row(label: "CJK", cell: "東京", width: 4),
        Row(label: "combining mark", cell: "cafe\u{301}", width: 4),
        Row(label: "ZWJ sequence", cell: "👨‍👩‍👧 family", width: 9),
        Row(label: "text symbol shown as emoji", cell: "❤️ love", width: 7),
        Row(label: "Hangul", cell: "한국어", width: 6),
        Row(label: "fullwidth Latin", cell: "ｆｕｌｌ", width: 8),
        Row(label: "CJK wider than every other cell", cell: "東京東京東京東京東京", width: 20),
        Row(label: "emoji wider than every other cell", cell: "🚀🚀🚀🚀🚀🚀🚀🚀🚀🚀", width: 20),
    ]

    /// Alone in its column (it sets the width) and beside a longer ASCII cell (it is padded).
    @Test("a cell is padded to its column by terminal width and never cut", arguments: rows)
    func aligned(_ row: Row) {
        #expect(TextTable.displayWidth(row.cell) == row.width)
        for others in [[], ["plain-ascii-name"]] {
            let table = TextTable.render(headers: ["NAME", "STATE"], rows: ([row.cell] + others).map { [$0, "ok"] })
            let column = ([4, row.width] + others.map(\.count)).max() ?? 0
            func padded(_ text: String, width: Int) -> String { text + String(repeating: " ", count: column - width) + "  " }
            let expected: [String] =
                [padded("NAME", width: 4) + "STATE", padded(row.cell, width: row.width) + "ok"] + others.map { padded($0, width: $0.count) + "ok" }
            #expect(!table.unicodeScalars.contains("\u{FFFD}"), "\(table)")
            #expect(table.split(separator: "\n").map(String.init) == expected, "\(table)")
        }
    }

    @Test("the last column is neither padded nor cut")
    func lastColumn() {
        let table = TextTable.render(headers: ["A", "MESSAGE"], rows: [["x", "deploy 🚀 東京"]])
        #expect(table == "A  MESSAGE\nx  deploy 🚀 東京")
    }
}
