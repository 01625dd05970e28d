#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Any JSON value. Documents are first parsed into this, then validated field by field, so every error can name the
/// exact field path (`pm2.apps[1].env.PORT`) and unknown fields are caught instead of silently dropped.
package enum JSONValue: Sendable, Hashable {
    case null
    case bool(Bool)
    case integer(Int64)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    /// The JSON type name, for error messages.
    package var typeName: String {
        switch self {
        case .null: "null"
        case .bool: "boolean"
        case .integer, .number: "number"
        case .string: "string"
        case .array: "array"
        case .object: "object"
        }
    }

    /// Parses JSON text in time linear in its size (`JSONParser`: strict RFC 8259, duplicate keys refused, at most
    /// `JSONParser.maximumDepth` levels of nesting). Throws `DocumentError.malformedJSON` naming what is wrong and the
    /// byte offset.
    package static func parse<Bytes: Collection>(
        _ bytes: Bytes,
        loneSurrogates: JSONParser.LoneSurrogates = .refuse
    ) throws(DocumentError) -> JSONValue where Bytes.Element == UInt8 {
        try JSONParser.parse(bytes, loneSurrogates: loneSurrogates)
    }

    /// Compact JSON text with sorted keys (deterministic, so the same document always signs the same bytes).
    ///
    /// Byte for byte what `JSONEncoder` with `[.sortedKeys, .withoutEscapingSlashes]` writes for this value (it was
    /// that, and documents signed then must encode the same now; `JSONWriterTests` compares the two), written directly:
    /// the `Codable` path cost a tenth of the controller's CPU under a burst of status reports.
    package func encoded() -> Data {
        Data(encodedBytes())
    }

    /// `encoded()` as bytes.
    package func encodedBytes() -> [UInt8] {
        var writer = JSONWriter()
        // What `JSONEncoder` gives for a value it cannot write (a double that is not finite, nesting of 512 or more):
        // every document's doubles are finite by construction and the parser stops at 64 levels.
        guard writer.write(self, depth: 0) else { return Array("null".utf8) }
        return writer.bytes
    }

}

extension JSONValue: Codable {
    package init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Int64.self) {
            self = .integer(value)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }

    package func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .integer(let value): try container.encode(value)
        case .number(let value): try container.encode(value)
        case .string(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        }
    }
}
