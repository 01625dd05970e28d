import Foundation
import Shared
import TestSupport
import Testing

/// `JSONValue.encoded()` writes JSON itself; it used to be `JSONEncoder` with `[.sortedKeys, .withoutEscapingSlashes]`,
/// and documents signed then must encode to the same bytes now. Every case here is compared with that encoder, run in
/// the test: a table of the edges (escapes, key order, number forms, depth, values it refuses), every fixture document,
/// and a few thousand generated values.
@Suite("JSON writer")
struct JSONWriterTests {
    /// What `encoded()` used to be.
    static func throughJSONEncoder(_ value: JSONValue) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array((try? encoder.encode(value)) ?? Data("null".utf8))
    }

    static func nested(_ depth: Int, innermost: JSONValue = .integer(1)) -> JSONValue {
        var value = innermost
        for level in 0..<depth { value = level.isMultiple(of: 2) ? .array([value]) : .object(["k": value]) }
        return value
    }

    static let edges: [(String, JSONValue)] = [
        ("null", .null),
        ("true", .bool(true)),
        ("false", .bool(false)),
        ("empty string", .string("")),
        ("empty array", .array([])),
        ("empty object", .object([:])),
        ("every ASCII byte", .string(String(decoding: (0..<128).map { UInt8($0) }, as: UTF8.self))),
        ("escapes between plain runs", .string("a\"b\\c/d\u{8}e\u{c}f\ng\rh\ti\u{0}j\u{1f}k\u{7f}l")),
        ("only escapes", .string("\"\\\n")),
        ("non-ASCII", .string("é ü 漢字 🚀 e\u{301} \u{2028}\u{2029} \u{feff}")),
        ("slashes stay", .string("https://example.com/a/b?c=d")),
        (
            "key order is by UTF-8 bytes",
            .object([
                "b": .null, "B": .null, "a": .null, "_": .null, "10": .null, "9": .null, "é": .null, "": .null, "aa": .null, "a\u{0}": .null,
                "Z": .null, "~": .null,
            ])
        ),
        ("keys are escaped", .object(["a\"b": .integer(1), "new\nline": .integer(2), "tab\t": .integer(3)])),
        ("integers", .array([.integer(0), .integer(-1), .integer(42), .integer(.max), .integer(.min)])),
        (
            "doubles",
            .array(
                [
                    0.0, -0.0, 1.0, -1.0, 0.1, 1.5, 100.0, 123456789.125, 1e15, 1e16, 1e21, 1e22, 1e-7, 5e-324, 2.2250738585072014e-308,
                    .greatestFiniteMagnitude, -.greatestFiniteMagnitude, 1.0 / 3.0,
                ]
                .map { .number($0) }
            )
        ),
        ("NaN is refused", .array([.number(.nan)])),
        ("infinity is refused", .object(["x": .number(.infinity)])),
        ("nested 511 deep", nested(511)),
        ("nested 512 deep is refused", nested(512)),
        ("nested 600 deep is refused", nested(600)),
        ("a release", Sample.release),
    ]

    @Test("the edges come out as JSONEncoder wrote them", arguments: edges)
    func edge(_ name: String, _ value: JSONValue) {
        let written = value.encodedBytes()
        let expected = Self.throughJSONEncoder(value)
        #expect(written == expected, "\(name): \(String(decoding: written, as: UTF8.self)) against \(String(decoding: expected, as: UTF8.self))")
        #expect(Array(value.encoded()) == written)
    }

    @Test("refused values come out as null, as they did")
    func refusedValues() {
        #expect(String(decoding: JSONValue.number(.nan).encodedBytes(), as: UTF8.self) == "null")
        #expect(String(decoding: Self.nested(512).encodedBytes(), as: UTF8.self) == "null")
        #expect(Self.nested(511).encodedBytes().count > 1000)
    }

    @Test("every fixture document encodes to the same bytes")
    func fixtures() throws {
        let documents = try JSONParserTests.fixtureDocuments()
        #expect(documents.count > 40, "the fixtures were found")
        for (name, bytes) in documents {
            let value = try JSONValue.parse(bytes)
            let written = value.encodedBytes()
            let expected = Self.throughJSONEncoder(value)
            let differsAt = zip(written, expected).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? min(written.count, expected.count)
            #expect(written == expected, "\(name): differs from byte \(differsAt) (\(written.count) against \(expected.count) bytes)")
        }
    }

    @Test("generated values encode to the same bytes")
    func generated() {
        var random = SeededRandom(seed: 0x5eed_f00d)
        var compared = 0
        for _ in 0..<3000 {
            let value = Self.randomValue(&random, depth: 0)
            let written = value.encodedBytes()
            let expected = Self.throughJSONEncoder(value)
            #expect(written == expected, "\(String(decoding: written, as: UTF8.self)) against \(String(decoding: expected, as: UTF8.self))")
            if written != expected { break }
            compared += 1
        }
        #expect(compared == 3000)
    }

    /// Scalars of every kind and containers up to five deep; strings mix ASCII (control characters, quotes,
    /// backslashes and slashes more often than chance) with two-, three- and four-byte characters.
    static func randomValue(_ random: inout SeededRandom, depth: Int) -> JSONValue {
        switch random.next(below: depth >= 5 ? 6 : 8) {
        case 0: return .null
        case 1: return .bool(random.next(below: 2) == 0)
        case 2: return .integer(Int64(bitPattern: random.next()) >> random.next(below: 64))
        case 3:
            let double = Double(bitPattern: random.next())
            return .number(double.isFinite ? double : Double(Int64(bitPattern: random.next()) >> 20) / 1024)
        case 4, 5: return .string(randomString(&random))
        case 6: return .array((0..<random.next(below: 5)).map { _ in randomValue(&random, depth: depth + 1) })
        default:
            var members: [String: JSONValue] = [:]
            for _ in 0..<random.next(below: 6) { members[randomString(&random)] = randomValue(&random, depth: depth + 1) }
            return .object(members)
        }
    }

    static func randomString(_ random: inout SeededRandom) -> String {
        let pool: [Unicode.Scalar] = [
            "\"", "\\", "/", "\u{0}", "\u{8}", "\u{9}", "\u{a}", "\u{c}", "\u{d}", "\u{1f}", "\u{7f}", "é", "ß", "€", "漢", "\u{2028}", "🚀",
            "\u{10ffff}",
        ]
        var scalars = String.UnicodeScalarView()
        for _ in 0..<random.next(below: 12) {
            if random.next(below: 3) == 0 {
                scalars.append(pool[Int(random.next(below: UInt64(pool.count)))])
            } else {
                scalars.append(Unicode.Scalar(UInt8(random.next(below: 128))))
            }
        }
        return String(scalars)
    }
}

extension SeededRandom {
    fileprivate mutating func next(below bound: UInt64) -> UInt64 { UInt64.random(in: 0..<bound, using: &self) }
}
