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
                guard let value = node.int else { throw .invalid(path: source, field: here, reason: "integer out of range") }
                return .integer(Int64(value))
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
