import Shared

/// Short reads of a parsed JSON document in test assertions: `document["agents"]?.arrayValue`, `["serial"]?.intValue`.
extension JSONValue {
    /// The member `key` of an object, or `nil` (also for anything that is not an object).
    package subscript(key: String) -> JSONValue? {
        if case .object(let fields) = self { return fields[key] }
        return nil
    }

    /// The elements of an array, or none.
    package var arrayValue: [JSONValue] {
        if case .array(let items) = self { return items }
        return []
    }

    package var stringValue: String? {
        if case .string(let text) = self { return text }
        return nil
    }

    package var intValue: Int64? {
        if case .integer(let n) = self { return n }
        return nil
    }

    package var boolValue: Bool? {
        if case .bool(let value) = self { return value }
        return nil
    }
}
