extension HTTPClient {
    /// An ordered list of HTTP header fields with case-insensitive lookup by name (nested so it never collides with
    /// swift-http-types' `HTTPFields` or NIO's `HTTPHeaders`).
    package struct Headers: Sendable, Equatable, ExpressibleByDictionaryLiteral, CustomStringConvertible {
        /// The fields in the order they were added or received.
        package private(set) var fields: [(name: String, value: String)]

        package init() { fields = [] }

        package init(dictionaryLiteral elements: (String, String)...) {
            fields = elements.map { (name: $0.0, value: $0.1) }
        }

        /// The first value of `name` (case-insensitive); setting replaces every field of that name, `nil` removes them.
        package subscript(name: String) -> String? {
            get { fields.first { Self.same($0.name, name) }?.value }
            set {
                fields.removeAll { Self.same($0.name, name) }
                if let newValue { fields.append((name: name, value: newValue)) }
            }
        }

        /// Every value of `name` (case-insensitive), in order.
        package func values(for name: String) -> [String] {
            fields.filter { Self.same($0.name, name) }.map(\.value)
        }

        /// Appends a field, keeping any existing ones of the same name.
        package mutating func add(name: String, value: String) {
            fields.append((name: name, value: value))
        }

        /// Whether any field of `name` exists.
        package func contains(_ name: String) -> Bool { self[name] != nil }

        package static func == (lhs: Headers, rhs: Headers) -> Bool {
            lhs.fields.count == rhs.fields.count
                && zip(lhs.fields, rhs.fields).allSatisfy { Self.same($0.name, $1.name) && $0.value == $1.value }
        }

        /// Field names only: values may hold credentials.
        package var description: String { "[" + fields.map(\.name).joined(separator: ", ") + "]" }

        private static func same(_ a: String, _ b: String) -> Bool {
            a.utf8.count == b.utf8.count && a.lowercased() == b.lowercased()
        }
    }
}
