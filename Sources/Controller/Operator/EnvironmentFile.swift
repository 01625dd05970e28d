import Foundation
import Shared

/// `KEY=VALUE` environment input: `--env` pairs and `--env-file` files (dotenv style).
enum EnvironmentFile {
    /// Parses one `KEY=VALUE` pair.
    static func pair(_ text: String, source: String) throws(ConfigurationError) -> (String, String) {
        guard let equals = text.firstIndex(of: "=") else {
            throw .invalidSetting(name: source, value: text, reason: "expected KEY=VALUE")
        }
        let key = String(text[..<equals]).trimmingCharacters(in: .whitespaces)
        guard Field.isEnvironmentName(key) else {
            throw .invalidSetting(name: source, value: text, reason: "\(key) is not a valid variable name (^[A-Za-z_][A-Za-z0-9_]*$)")
        }
        return (key, String(text[text.index(after: equals)...]))
    }

    /// Parses a dotenv file: `KEY=VALUE` lines, `#` comments, blank lines, an optional `export ` prefix, values
    /// optionally in single quotes (literal) or double quotes (with `\n`, `\"`, `\\` escapes).
    static func parse(_ text: String, path: String) throws(ConfigurationError) -> [String: String] {
        var result: [String: String] = [:]
        for (number, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            var line = rawLine.trimmingCharacters(in: .whitespaces)
            if line.hasSuffix("\r") { line.removeLast() }
            if line.isEmpty || line.hasPrefix("#") { continue }
            if line.hasPrefix("export ") { line = String(line.dropFirst("export ".count)).trimmingCharacters(in: .whitespaces) }
            let (key, rawValue) = try pair(line, source: "\(path):\(number + 1)")
            var value = rawValue.trimmingCharacters(in: .whitespaces)
            if value.count >= 2, value.hasPrefix("'"), value.hasSuffix("'") {
                value = String(value.dropFirst().dropLast())
            } else if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") {
                value = unescape(String(value.dropFirst().dropLast()))
            } else if let hash = value.range(of: " #") {
                value = String(value[..<hash.lowerBound]).trimmingCharacters(in: .whitespaces)
            }
            result[key] = value
        }
        return result
    }

    /// Reads and parses a dotenv file.
    static func read(_ path: String) throws(ConfigurationError) -> [String: String] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw .unreadable(path: path, reason: FileManager.default.fileExists(atPath: path) ? "cannot read file" : "no such file")
        }
        guard data.count <= Limits.envTotalBytes * 2 else { throw .unreadable(path: path, reason: "larger than \(Limits.envTotalBytes * 2) bytes") }
        return try parse(String(decoding: data, as: UTF8.self), path: path)
    }

    private static func unescape(_ text: String) -> String {
        var out = ""
        var escaping = false
        for character in text {
            if escaping {
                switch character {
                case "n": out.append("\n")
                case "t": out.append("\t")
                default: out.append(character)
                }
                escaping = false
            } else if character == "\\" {
                escaping = true
            } else {
                out.append(character)
            }
        }
        if escaping { out.append("\\") }
        return out
    }
}
