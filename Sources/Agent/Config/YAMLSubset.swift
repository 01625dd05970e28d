import Shared

/// A reader for the subset of YAML that configuration files use, producing a `JSONValue`.
///
/// Supported: block mappings, block sequences of scalars or mappings, flow sequences of scalars (`[a, "b"]`), plain,
/// single- and double-quoted scalars, comments, a leading `---`. Anything else (anchors, aliases, tags, block scalars,
/// flow mappings, several documents) is an error naming the line, never silently misread. Full YAML would need Yams,
/// which links full Foundation into the agent.
enum YAMLSubset {
    /// Why a YAML text was refused.
    struct ParseError: Error, Equatable, CustomStringConvertible {
        var line: Int
        var message: String
        var description: String { "line \(line): \(message)" }
    }

    private struct Line {
        var number: Int
        var indent: Int
        var text: Substring
    }

    /// Parses `text` into a JSON value (a mapping at the top level, or `null` for an empty document).
    static func parse(_ text: String) throws(ParseError) -> JSONValue {
        var lines: [Line] = []
        // "\r\n" is one Character in Swift: splitting on "\n" alone would leave a CRLF file as a single line.
        let rawLines = text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" })
        for (index, raw) in rawLines.enumerated() {
            let number = index + 1
            var content = Substring(raw)
            if content.hasSuffix("\r") { content = content.dropLast() }
            if content.contains("\t") && content.prefix(while: { $0 == " " || $0 == "\t" }).contains("\t") {
                throw ParseError(line: number, message: "tabs are not allowed for indentation")
            }
            var stripped = try stripComment(content, line: number)
            // Trailing blanks (often before a comment) are not part of a plain value.
            while stripped.last == " " { stripped = stripped.dropLast() }
            let trimmed = stripped.drop(while: { $0 == " " })
            if trimmed.allSatisfy({ $0 == " " }) { continue }
            if trimmed == "---" && lines.isEmpty { continue }
            if trimmed == "---" || trimmed == "..." {
                throw ParseError(line: number, message: "several YAML documents in one file are not supported")
            }
            lines.append(Line(number: number, indent: stripped.count - trimmed.count, text: trimmed))
        }
        guard !lines.isEmpty else { return .null }
        var position = 0
        let value = try parseBlock(lines, &position, indent: lines[0].indent)
        if position < lines.count {
            throw ParseError(line: lines[position].number, message: "unexpected indentation")
        }
        return value
    }

    private static func parseBlock(_ lines: [Line], _ position: inout Int, indent: Int) throws(ParseError) -> JSONValue {
        let first = lines[position]
        if first.text == "-" || first.text.hasPrefix("- ") {
            return try parseSequence(lines, &position, indent: indent)
        }
        return try parseMapping(lines, &position, indent: indent)
    }

    private static func parseMapping(_ lines: [Line], _ position: inout Int, indent: Int) throws(ParseError) -> JSONValue {
        var fields: [String: JSONValue] = [:]
        while position < lines.count, lines[position].indent == indent {
            let line = lines[position]
            if line.text == "-" || line.text.hasPrefix("- ") {
                throw ParseError(line: line.number, message: "a list item where a key was expected")
            }
            let (key, rest) = try splitKey(line.text, line: line.number)
            guard fields[key] == nil else { throw ParseError(line: line.number, message: "duplicate key \"\(key)\"") }
            position += 1
            if rest.isEmpty {
                if position < lines.count, lines[position].indent > indent {
                    fields[key] = try parseBlock(lines, &position, indent: lines[position].indent)
                } else if position < lines.count, lines[position].indent == indent,
                    lines[position].text == "-" || lines[position].text.hasPrefix("- ")
                {
                    // YAML allows a sequence at the same indentation as its key.
                    fields[key] = try parseSequence(lines, &position, indent: indent)
                } else {
                    fields[key] = .null
                }
            } else {
                fields[key] = try scalarOrFlow(rest, line: line.number)
            }
        }
        if position < lines.count, lines[position].indent > indent {
            throw ParseError(line: lines[position].number, message: "unexpected indentation")
        }
        return .object(fields)
    }

    private static func parseSequence(_ lines: [Line], _ position: inout Int, indent: Int) throws(ParseError) -> JSONValue {
        var items: [JSONValue] = []
        while position < lines.count, lines[position].indent == indent, lines[position].text == "-" || lines[position].text.hasPrefix("- ") {
            let line = lines[position]
            let rest = line.text.dropFirst(1).drop(while: { $0 == " " })
            position += 1
            if rest.isEmpty {
                if position < lines.count, lines[position].indent > indent {
                    items.append(try parseBlock(lines, &position, indent: lines[position].indent))
                } else {
                    items.append(.null)
                }
            } else if isMappingEntry(rest) {
                // `- key: value` starts a mapping whose further keys are indented to the key's column.
                let column = indent + (line.text.count - rest.count)
                var nested = [Line(number: line.number, indent: column, text: rest)]
                var lookahead = position
                while lookahead < lines.count, lines[lookahead].indent >= column {
                    nested.append(lines[lookahead])
                    lookahead += 1
                }
                var nestedPosition = 0
                items.append(try parseMapping(nested, &nestedPosition, indent: column))
                position = lookahead
            } else {
                items.append(try scalarOrFlow(rest, line: line.number))
            }
        }
        return .array(items)
    }

    private static func isMappingEntry(_ text: Substring) -> Bool {
        guard let first = text.first, first != "\"", first != "'", first != "[" else { return false }
        return text.contains(": ") || text.hasSuffix(":")
    }

    private static func splitKey(_ text: Substring, line: Int) throws(ParseError) -> (String, Substring) {
        let key: String
        var rest: Substring
        if let quote = text.first, quote == "\"" || quote == "'" {
            guard let end = text.dropFirst().firstIndex(of: quote) else { throw ParseError(line: line, message: "unterminated quoted key") }
            key = String(text[text.index(after: text.startIndex)..<end])
            rest = text[text.index(after: end)...]
            guard rest.first == ":" else { throw ParseError(line: line, message: "expected ':' after the key") }
            rest = rest.dropFirst()
        } else {
            guard let colon = text.firstIndex(where: { $0 == ":" }),
                text.index(after: colon) == text.endIndex || text[text.index(after: colon)] == " "
            else {
                throw ParseError(line: line, message: "expected 'key: value'")
            }
            key = String(text[..<colon]).trimmingSpaces()
            rest = text[text.index(after: colon)...]
        }
        guard !key.isEmpty else { throw ParseError(line: line, message: "empty key") }
        return (key, Substring(String(rest).trimmingSpaces()))
    }

    private static func scalarOrFlow(_ text: Substring, line: Int) throws(ParseError) -> JSONValue {
        if text.hasPrefix("[") {
            guard text.hasSuffix("]") else { throw ParseError(line: line, message: "unterminated flow sequence") }
            let inner = text.dropFirst().dropLast()
            if inner.allSatisfy({ $0 == " " }) { return .array([]) }
            var items: [JSONValue] = []
            for part in try splitFlow(inner, line: line) {
                items.append(try scalar(Substring(String(part).trimmingSpaces()), line: line))
            }
            return .array(items)
        }
        return try scalar(text, line: line)
    }

    private static func splitFlow(_ text: Substring, line: Int) throws(ParseError) -> [Substring] {
        var parts: [Substring] = []
        var start = text.startIndex
        var quote: Character?
        var index = text.startIndex
        while index < text.endIndex {
            let c = text[index]
            if let q = quote {
                if isEscape(c, in: q, at: index, of: text) { index = text.index(after: index) } else if c == q { quote = nil }
            } else if c == "\"" || c == "'" {
                quote = c
            } else if c == "," {
                parts.append(text[start..<index])
                start = text.index(after: index)
            } else if c == "[" || c == "{" {
                throw ParseError(line: line, message: "nested flow collections are not supported")
            }
            index = text.index(after: index)
        }
        if quote != nil { throw ParseError(line: line, message: "unterminated quoted string") }
        parts.append(text[start...])
        return parts
    }

    private static func scalar(_ text: Substring, line: Int) throws(ParseError) -> JSONValue {
        guard let first = text.first else { return .null }
        switch first {
        case "\"":
            return .string(try doubleQuoted(text, line: line))
        case "'":
            guard text.count >= 2, text.hasSuffix("'") else { throw ParseError(line: line, message: "unterminated quoted string") }
            return .string(String(text.dropFirst().dropLast()).replacing("''", with: "'"))
        case "&", "*", "!", "|", ">", "{", "@", "`":
            throw ParseError(line: line, message: "YAML feature '\(first)' is not supported in Ferry config files")
        default:
            break
        }
        switch text {
        case "~", "null", "Null", "NULL": return .null
        case "true", "True", "TRUE": return .bool(true)
        case "false", "False", "FALSE": return .bool(false)
        default: break
        }
        if let integer = Int64(text) { return .integer(integer) }
        if text.contains("."), text.allSatisfy({ $0.isNumber || $0 == "." || $0 == "-" || $0 == "+" || $0 == "e" || $0 == "E" }),
            let number = Double(text), number.isFinite
        {
            return .number(number)
        }
        return .string(String(text))
    }

    private static func doubleQuoted(_ text: Substring, line: Int) throws(ParseError) -> String {
        var out = ""
        var iterator = text.dropFirst().makeIterator()
        while let c = iterator.next() {
            switch c {
            case "\"":
                guard iterator.next() == nil else { throw ParseError(line: line, message: "text after a closing quote") }
                return out
            case "\\":
                switch iterator.next() {
                case "n": out.append("\n")
                case "t": out.append("\t")
                case "\"": out.append("\"")
                case "\\": out.append("\\")
                case "/": out.append("/")
                default: throw ParseError(line: line, message: "unsupported escape in a double-quoted string")
                }
            default:
                out.append(c)
            }
        }
        throw ParseError(line: line, message: "unterminated quoted string")
    }

    /// Whether `c` at `index` starts an escape inside a `quote`-quoted string: `\x` in double quotes, `''` in single
    /// quotes. The pair does not end the string (nor start a comment or split a flow sequence).
    private static func isEscape(_ c: Character, in quote: Character, at index: Substring.Index, of text: Substring) -> Bool {
        let next = text.index(after: index)
        guard next < text.endIndex else { return false }
        return (quote == "\"" && c == "\\") || (quote == "'" && c == "'" && text[next] == "'")
    }

    /// Removes a trailing `# comment` that is outside quotes.
    private static func stripComment(_ text: Substring, line: Int) throws(ParseError) -> Substring {
        var quote: Character?
        var previous: Character = " "
        var index = text.startIndex
        while index < text.endIndex {
            let c = text[index]
            if let q = quote {
                if isEscape(c, in: q, at: index, of: text) { index = text.index(after: index) } else if c == q { quote = nil }
            } else if c == "\"" || c == "'" {
                if previous == " " || previous == ":" || previous == "[" || previous == "," || previous == "-" { quote = c }
            } else if c == "#" && (previous == " " || index == text.startIndex) {
                return text[..<index]
            }
            previous = c
            index = text.index(after: index)
        }
        return text
    }
}

extension String {
    /// The string without leading and trailing spaces.
    func trimmingSpaces() -> String {
        String(self.drop(while: { $0 == " " }).reversed().drop(while: { $0 == " " }).reversed())

    }
}
