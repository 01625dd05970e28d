/// Reads the fields of one JSON object, tracking the field path for errors and rejecting fields nobody read.
package struct ObjectReader {
    /// Path of this object (`""` for the root, `pm2.apps[0]`, ...).
    package let path: String
    package let fields: [String: JSONValue]
    private var consumed: Set<String> = []

    package init(_ value: JSONValue, path: String) throws(DocumentError) {
        guard case .object(let fields) = value else {
            throw .wrongType(field: path.isEmpty ? "document" : path, expected: "object", got: value.typeName)
        }
        self.path = path
        self.fields = fields
    }

    /// The path of `key` inside this object.
    package func path(of key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    /// A required field, converted by `parse(value, fieldPath)`.
    package mutating func required<T>(
        _ key: String,
        _ parse: (JSONValue, String) throws(DocumentError) -> T
    ) throws(DocumentError) -> T {
        consumed.insert(key)
        guard let value = fields[key], value != .null else { throw .missingField(path(of: key)) }
        return try parse(value, path(of: key))
    }

    /// An optional field (absent or `null` gives `nil`), converted by `parse(value, fieldPath)`.
    package mutating func optional<T>(
        _ key: String,
        _ parse: (JSONValue, String) throws(DocumentError) -> T
    ) throws(DocumentError) -> T? {
        consumed.insert(key)
        guard let value = fields[key], value != .null else { return nil }
        return try parse(value, path(of: key))
    }

    /// Marks `key` as handled without reading it.
    package mutating func consume(_ key: String) { consumed.insert(key) }

    /// Throws for the first (alphabetically, so errors are stable) field that was never read.
    package func rejectUnknownFields() throws(DocumentError) {
        if let unknown = fields.keys.filter({ !consumed.contains($0) }).sorted().first {
            throw .unknownField(path(of: unknown))
        }
    }
}

/// Field converters used with `ObjectReader`.
package enum Field {
    /// A string of at most `maxLength` UTF-8 bytes, with no control characters.
    package static func string(maxLength: Int) -> (JSONValue, String) throws(DocumentError) -> String {
        { (value, path) throws(DocumentError) in
            guard case .string(let text) = value else { throw .wrongType(field: path, expected: "string", got: value.typeName) }
            guard text.utf8.count <= maxLength else { throw .tooLarge(field: path, limit: maxLength, actual: text.utf8.count) }
            if text.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f }) {
                throw .invalidValue(field: path, reason: "control characters are not allowed")
            }
            return text
        }
    }

    /// One of the cases of `E`, by its raw value (a string of at most 64 bytes); any other names the cases.
    package static func enumeration<E: RawRepresentable & CaseIterable>(_: E.Type) -> (JSONValue, String) throws(DocumentError) -> E
    where E.RawValue == String {
        { (value, path) throws(DocumentError) in
            let text = try string(maxLength: 64)(value, path)
            guard let result = E(rawValue: text) else {
                throw .invalidValue(field: path, reason: "\"\(text)\" must be one of \(E.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            return result
        }
    }

    /// An integer in `range`.
    package static func integer(in range: ClosedRange<Int64>) -> (JSONValue, String) throws(DocumentError) -> Int64 {
        { (value, path) throws(DocumentError) in
            let number: Int64
            switch value {
            case .integer(let n):
                number = n
            case .number(let d) where d.rounded() == d:
                // A whole number written as a double (`1e30`): converted only when it fits, never trapping.
                guard let exact = Int64(exactly: d) else {
                    throw .invalidValue(field: path, reason: "\(d) is outside \(range.lowerBound)...\(range.upperBound)")
                }
                number = exact
            default:
                throw .wrongType(field: path, expected: "integer", got: value == .null ? "null" : describe(value))
            }
            guard range.contains(number) else {
                throw .invalidValue(field: path, reason: "\(number) is outside \(range.lowerBound)...\(range.upperBound)")
            }
            return number
        }
    }

    /// A list of at most `limit` items, each converted by `element(item, "path[i]")`.
    package static func list<T>(
        limit: Int,
        _ element: @escaping (JSONValue, String) throws(DocumentError) -> T
    ) -> (JSONValue, String) throws(DocumentError) -> [T] {
        { (value, path) throws(DocumentError) in
            guard case .array(let items) = value else { throw .wrongType(field: path, expected: "array", got: value.typeName) }
            guard items.count <= limit else { throw .tooMany(field: path, limit: limit, actual: items.count) }
            var out: [T] = []
            out.reserveCapacity(items.count)
            for (index, item) in items.enumerated() { out.append(try element(item, "\(path)[\(index)]")) }
            return out
        }
    }

    /// A SHA-256 digest: 64 lowercase hex characters.
    package static func sha256(_ value: JSONValue, _ path: String) throws(DocumentError) -> SHA256Digest {
        let text = try string(maxLength: 64)(value, path)
        guard let digest = SHA256Digest(hex: text) else { throw .invalidValue(field: path, reason: "must be 64 lowercase hex characters") }
        return digest
    }

    /// A boolean.
    package static func bool(_ value: JSONValue, _ path: String) throws(DocumentError) -> Bool {
        guard case .bool(let flag) = value else { throw .wrongType(field: path, expected: "boolean", got: value.typeName) }
        return flag
    }

    private static func describe(_ value: JSONValue) -> String {
        if case .number = value { return "a fractional number" }
        return value.typeName
    }

    /// An environment map: keys `^[A-Za-z_][A-Za-z0-9_]*$`, string values, bounded in count and total size.
    package static func environment(_ value: JSONValue, _ path: String) throws(DocumentError) -> [String: String] {
        guard case .object(let fields) = value else { throw .wrongType(field: path, expected: "object", got: value.typeName) }
        guard fields.count <= Limits.envEntries else { throw .tooMany(field: path, limit: Limits.envEntries, actual: fields.count) }
        var result: [String: String] = [:]
        var total = 0
        for key in fields.keys.sorted() {
            let keyPath = "\(path).\(key)"
            guard isEnvironmentName(key) else {
                throw .invalidValue(
                    field: keyPath,
                    reason: "environment variable names must match ^[A-Za-z_][A-Za-z0-9_]*$ and be at most \(Limits.envKeyLength) characters"
                )
            }
            guard case .string(let text) = fields[key]! else {
                throw .wrongType(field: keyPath, expected: "string", got: fields[key]!.typeName)
            }
            guard text.utf8.count <= Limits.envValueLength else {
                throw .tooLarge(field: keyPath, limit: Limits.envValueLength, actual: text.utf8.count)
            }
            if text.utf8.contains(0) { throw .invalidValue(field: keyPath, reason: "NUL bytes are not allowed") }
            total += key.utf8.count + text.utf8.count
            result[key] = text
        }
        guard total <= Limits.envTotalBytes else { throw .tooLarge(field: path, limit: Limits.envTotalBytes, actual: total) }
        return result
    }

    /// Whether `name` is a valid environment variable name for Ferry.
    package static func isEnvironmentName(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard let first = bytes.first, bytes.count <= Limits.envKeyLength else { return false }
        func isLetter(_ c: UInt8) -> Bool { (0x41...0x5a).contains(c) || (0x61...0x7a).contains(c) || c == 0x5f }
        return isLetter(first) && bytes.dropFirst().allSatisfy { isLetter($0) || (0x30...0x39).contains($0) }
    }
}
