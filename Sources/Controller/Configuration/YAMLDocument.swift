import Shared
import Yams

/// YAML read into Ferry's `JSONValue`, so YAML files get the same strict field checks as JSON ones.
enum YAMLDocument {
    /// Parses YAML text (one document). Mapping keys must be strings; aliases and custom tags are refused.
    static func parse(_ text: String, source: String) throws(ConfigurationError) -> JSONValue {
        let node: Node?
        do {
            node = try Yams.compose(yaml: text)
        } catch {
            throw .unreadable(path: source, reason: "not valid YAML: \(error)")
        }
        guard let node else { return .null }
        return try convert(node, path: "", source: source)
    }

    /// A scalar Yams tags as an integer, read as Yams reads it (YAML 1.1: `_` separators, a sign, `0x`, `0b`, `0o` and
    /// `0` prefixes, base 60 as in `1:30`), with checked arithmetic: Yams' own conversion traps on a base-60 value past
    /// `Int64` (`pollSeconds: 1:0:0:0:0:0:0:0:0:0:0` crashed `serve`, and an `ecosystem.yml` `publish`). `nil` when it
    /// does not fit.
    static func integer(_ text: String) -> Int64? {
        let plain = text.replacingOccurrences(of: "_", with: "")
        if plain == "0" { return 0 }
        let negative = plain.hasPrefix("-")
        let digits = plain.dropFirst(negative || plain.hasPrefix("+") ? 1 : 0)
        for (prefix, radix) in [("0x", 16), ("0b", 2), ("0o", 8), ("0", 8)] where digits.hasPrefix(prefix) {
            return Int64((negative ? "-" : "") + digits.dropFirst(prefix.count), radix: radix)
        }
        guard digits.contains(":") else { return Int64(plain) }
        var value: Int64 = 0
        for part in digits.split(separator: ":", omittingEmptySubsequences: false) {
            guard let digit = Int64(part), digit >= 0 else { return nil }
            let (shifted, shiftOverflow) = value.multipliedReportingOverflow(by: 60)
            let (sum, sumOverflow) = shifted.addingReportingOverflow(digit)
            guard !shiftOverflow, !sumOverflow else { return nil }
            value = sum
        }
        return negative ? -value : value
    }

    private static func convert(_ node: Node, path: String, source: String) throws(ConfigurationError) -> JSONValue {
        let here = path.isEmpty ? "document" : path
        switch node {
        case .scalar(let scalar):
            switch Tag.Name(rawValue: node.tag.description) {
            case .null: return .null
            case .bool:
                guard let value = node.bool else { throw .invalid(path: source, field: here, reason: "not a boolean") }
                return .bool(value)
            case .int:
                guard let value = integer(scalar.string) else { throw .invalid(path: source, field: here, reason: "integer out of range") }
                return .integer(value)
            case .float:
                guard let value = node.float, value.isFinite else { throw .invalid(path: source, field: here, reason: "not a finite number") }
                return .number(value)
            case .str, .timestamp:
                return .string(scalar.string)
            default:
                throw .invalid(path: source, field: here, reason: "YAML tag \(node.tag) is not supported")
            }
        case .sequence(let sequence):
            var items: [JSONValue] = []
            for (index, item) in sequence.enumerated() { items.append(try convert(item, path: "\(path)[\(index)]", source: source)) }
            return .array(items)
        case .mapping(let mapping):
            var fields: [String: JSONValue] = [:]
            for (key, value) in mapping {
                guard case .scalar(let keyScalar) = key else {
                    throw .invalid(path: source, field: here, reason: "mapping keys must be plain strings")
                }
                let name = keyScalar.string
                fields[name] = try convert(value, path: path.isEmpty ? name : "\(path).\(name)", source: source)
            }
            return .object(fields)
        case .alias:
            throw .invalid(path: source, field: here, reason: "YAML aliases are not supported")
        }
    }
}
