/// The cron patterns PM2 7.0.3 accepts for `cron_restart`: exactly what its croner 4.1.97 (`src/pattern.js`) parses.
///
/// PM2 checks every app's pattern when it reads an ecosystem file (`Common.sink.determineCron`), and one pattern croner
/// refuses makes it refuse the whole file: every `pm2 start` and `pm2 reload` of that service would fail on every
/// instance. So a release is checked the same way before it is signed, and again by the agent.
///
/// Croner's rules, followed here: 5 or 6 fields separated by whitespace (seconds first when there are 6); no nicknames
/// (`@daily`); `L` alone in the day-of-month field; month names (`jan`…`dec`) in the month field and day names
/// (`sun`…`sat`) in the day-of-week field, replaced case-insensitively wherever they occur; one `?` per field; then only
/// digits and `* , - /`. A field is `*`, a comma list of plain values (no range or step inside a list), a range `a-b`, a
/// stepped range `a-b/s`, or a step `*/s` or `a/s`; values in range (seconds and minutes 0–59, hours 0–23, days 1–31,
/// months 1–12, days of the week 0–7), steps from 1 to the field's size. A pattern containing `:` after its first
/// character is read by croner as a one-time date, not a schedule; it is refused here.
package enum CronPattern {
    /// Why croner would refuse `pattern`, or `nil` when it parses it.
    package static func problem(in pattern: String) -> String? {
        if let colon = pattern.firstIndex(of: ":"), colon > pattern.startIndex {
            return "croner reads a pattern with \":\" as a one-time date, not a schedule"
        }
        var parts = pattern.split(whereSeparator: \.isWhitespace).map { String($0).lowercased() }
        guard (5...6).contains(parts.count) else {
            return "croner needs exactly 5 or 6 space-separated fields (got \(parts.count))"
        }
        if parts.count == 5 { parts.insert("0", at: 0) }
        if parts[3] == "l" { parts[3] = "28,29,30,31" }
        parts[4] = replacing(months, in: parts[4])
        parts[5] = replacing(days, in: parts[5])
        // Croner replaces the first `?` of each field with the current time's value; any value in range stands for it.
        for index in parts.indices {
            if let mark = parts[index].firstIndex(of: "?") {
                parts[index].replaceSubrange(mark...mark, with: "\(fields[index].lowest)")
            }
        }
        let legal = Set("/*0123456789,-")
        for (index, part) in parts.enumerated() where !part.allSatisfy(legal.contains) {
            return "field \(index + 1) of 6 (\(part)) contains characters croner does not accept"
        }
        for (index, part) in parts.enumerated() {
            if let problem = problem(inField: part, fields[index], recursed: false) { return problem }
        }
        return nil
    }

    private struct Field {
        var name: String
        /// Croner's array length for the field.
        var size: Int
        /// Croner's `valueIndexOffset`: -1 for the fields that count from 1 (days and months).
        var offset: Int

        var lowest: Int { -offset }
    }

    private static let fields = [
        Field(name: "seconds", size: 60, offset: 0),
        Field(name: "minutes", size: 60, offset: 0),
        Field(name: "hours", size: 24, offset: 0),
        Field(name: "days", size: 31, offset: -1),
        Field(name: "months", size: 12, offset: -1),
        Field(name: "daysOfWeek", size: 8, offset: 0),
    ]

    private static let months = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
    private static let days = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]

    /// Each name replaced by its number (months from 1, days from 0), in croner's order.
    private static func replacing(_ names: [String], in part: String) -> String {
        var result = part
        let first = names == months ? 1 : 0
        for (index, name) in names.enumerated() {
            result = result.replacing(name, with: "\(index + first)")
        }
        return result
    }

    /// Croner's `partToArray` for one field.
    private static func problem(inField part: String, _ field: Field, recursed: Bool) -> String? {
        if part == "*" { return nil }
        let items = part.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        if items.count > 1 {
            for item in items {
                if let problem = problem(inField: item, field, recursed: true) { return problem }
            }
            return nil
        }
        let hasRange = part.contains("-")
        let hasStep = part.contains("/")
        if (hasRange || hasStep) && recursed {
            return "\(field.name): a range or step cannot be part of a list (\(part))"
        }
        if hasRange && hasStep { return rangeWithStepping(part, field) }
        if hasRange { return range(part, field) }
        if hasStep { return stepping(part, field) }
        // JavaScript parseInt: leading digits, or NaN, which croner lets through without marking anything.
        guard let value = parseInt(part) else { return nil }
        let index = value + field.offset
        guard index >= 0, index < field.size else { return "\(field.name) value out of range: \(part)" }
        return nil
    }

    private static func rangeWithStepping(_ part: String, _ field: Field) -> String? {
        let pieces = part.split(separator: "/", omittingEmptySubsequences: false)
        let bounds = pieces.first?.split(separator: "-", omittingEmptySubsequences: false) ?? []
        guard pieces.count == 2, bounds.count == 2, [bounds[0], bounds[1], pieces[1]].allSatisfy(isDigits),
            let lower = Int(bounds[0]).map({ $0 + field.offset }), let upper = Int(bounds[1]).map({ $0 + field.offset }),
            let steps = Int(pieces[1])
        else { return "\(field.name): illegal range with stepping: \(part)" }
        return stepProblem(steps, part, field) ?? boundsProblem(lower, upper, part, field)
    }

    private static func range(_ part: String, _ field: Field) -> String? {
        let bounds = part.split(separator: "-", omittingEmptySubsequences: false).map(String.init)
        guard bounds.count == 2 else { return "\(field.name): illegal range: \(part)" }
        guard let lower = parseInt(bounds[0]), let upper = parseInt(bounds[1]) else {
            return "\(field.name): illegal range: \(part)"
        }
        return boundsProblem(lower + field.offset, upper + field.offset, part, field)
    }

    private static func stepping(_ part: String, _ field: Field) -> String? {
        let pieces = part.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard pieces.count == 2 else { return "\(field.name): illegal stepping: \(part)" }
        guard let steps = parseInt(pieces[1]) else { return "\(field.name): illegal stepping: \(part)" }
        return stepProblem(steps, part, field)
    }

    private static func stepProblem(_ steps: Int, _ part: String, _ field: Field) -> String? {
        if steps == 0 { return "\(field.name): a step of 0 (\(part))" }
        if steps > field.size { return "\(field.name): a step greater than \(field.size) (\(part))" }
        return nil
    }

    private static func boundsProblem(_ lower: Int, _ upper: Int, _ part: String, _ field: Field) -> String? {
        if lower < 0 || upper >= field.size { return "\(field.name) value out of range: \(part)" }
        if lower > upper { return "\(field.name): the range starts after it ends (\(part))" }
        return nil
    }

    private static func isDigits(_ text: Substring) -> Bool {
        !text.isEmpty && text.allSatisfy { $0.isASCII && $0.isNumber }
    }

    /// JavaScript `parseInt(text, 10)` on croner's alphabet (digits and `*`): the leading digits, or `nil` for NaN.
    /// Capped so a long run of digits stays out of range instead of overflowing.
    private static func parseInt(_ text: String) -> Int? {
        let digits = text.prefix { $0.isASCII && $0.isNumber }
        guard !digits.isEmpty else { return nil }
        return digits.count > 9 ? Int.max / 2 : Int(digits)
    }
}
