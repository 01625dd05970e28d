import Foundation
import Shared

/// Plain-text tables for the operator commands: columns padded to their widest cell.
enum TextTable {
    /// Each cell is one line: control characters in it, a line feed too, are escaped (`TerminalText`).
    static func render(headers: [String], rows: [[String]]) -> String {
        let rows = rows.map { $0.map { TerminalText.safe($0, keepingLineBreaks: false) } }
        var widths = headers.map(\.count)
        for row in rows {
            for (index, cell) in row.enumerated() where index < widths.count { widths[index] = max(widths[index], cell.count) }
        }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { index, cell in
                index == cells.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
            }.joined(separator: "  ")
        }
        return ([line(headers)] + rows.map(line)).joined(separator: "\n")
    }
}
