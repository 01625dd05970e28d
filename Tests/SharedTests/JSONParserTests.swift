import Foundation
import Shared
import Testing

/// The byte-level JSON parser: what it accepts, what it refuses and with which error, and that it reads every existing
/// document exactly as the `JSONDecoder` path it replaced (the `Codable` conformance of `JSONValue` is that path).
@Suite("JSON parser")
struct JSONParserTests {
    struct Malformed: Sendable, CustomTestStringConvertible {
        var name: String
        var bytes: [UInt8]
        /// The whole `DocumentError.malformedJSON` reason.
        var reason: String
        var testDescription: String { name }

        init(_ name: String, _ text: String, _ reason: String) {
            self.init(name, Array(text.utf8), reason)
        }

        init(_ name: String, _ bytes: [UInt8], _ reason: String) {
            self.name = name
            self.bytes = bytes
            self.reason = reason
        }
    }

    static let malformed: [Malformed] = [
        Malformed("empty", "", "the document is empty at byte 0"),
        Malformed("only whitespace", " \n\t", "the document is empty at byte 3"),
        Malformed("trailing garbage", "{} x", "unexpected 'x' after the end of the JSON value at byte 3"),
        Malformed("two values", "1 2", "unexpected '2' after the end of the JSON value at byte 2"),
        Malformed("trailing comma in array", "[1,]", "trailing comma in an array at byte 3"),
        Malformed("trailing comma in object", #"{"a":1,}"#, "trailing comma in an object at byte 7"),
        Malformed("double comma", "[1,,2]", "unexpected ',' where a value is expected at byte 3"),
        Malformed("missing comma", "[1 2]", "unexpected '2' in an array where , or ] is expected at byte 3"),
        Malformed("unclosed array", "[1", "the document ends inside an array at byte 2"),
        Malformed("unclosed object", #"{"a":1"#, "the document ends inside an object at byte 6"),
        Malformed("extra close", "[1]]", "unexpected ']' after the end of the JSON value at byte 3"),
        Malformed("missing value", #"{"a":}"#, "unexpected '}' where a value is expected at byte 5"),
        Malformed("missing colon", #"{"a" 1}"#, "unexpected '1' after an object key where : is expected at byte 5"),
        Malformed("key not a string", "{a:1}", "unexpected 'a' where an object key (a string) is expected at byte 1"),
        Malformed("duplicate key", #"{"a":1,"a":2}"#, #"duplicate key "a" in one object at byte 7"#),
        Malformed("duplicate nested key", #"{"x":{"k":1,"k":1}}"#, #"duplicate key "k" in one object at byte 12"#),
        Malformed("bad literal", "nul", "invalid literal (expected null) at byte 0"),
        Malformed("wrong literal", "tru3", "invalid literal (expected true) at byte 0"),
        Malformed("NaN", "NaN", "unexpected 'N' where a value is expected at byte 0"),
        Malformed("leading zero", "01", "a number must not start with 0 (leading zeros) at byte 0"),
        Malformed("leading plus", "+1", "unexpected '+' where a value is expected at byte 0"),
        Malformed("bare minus", "-", "a number needs digits after - at byte 0"),
        Malformed("no digits after point", "1.", "a number needs digits after the decimal point at byte 0"),
        Malformed("leading point", ".5", "unexpected '.' where a value is expected at byte 0"),
        Malformed("empty exponent", "1e", "a number needs digits in its exponent at byte 0"),
        Malformed("hex number", "0x10", "unexpected 'x' after the end of the JSON value at byte 1"),
        Malformed("number too large", "1e400", "the number 1e400 is too large at byte 0"),
        Malformed("negative number too large", "[-1e400]", "the number -1e400 is too large at byte 1"),
        Malformed("unterminated string", #""abc"#, "unterminated string at byte 0"),
        Malformed("unterminated escaped string", #"["a\n"#, "unterminated string at byte 1"),
        Malformed("raw tab in string", "\"a\tb\"", #"control character U+0009 in a string (write it as an escape like \n or \u0009) at byte 2"#),
        Malformed("raw newline in key", "{\"a\nb\":1}", #"control character U+000A in a string (write it as an escape like \n or \u000A) at byte 3"#),
        Malformed("unknown escape", #""\x""#, #"invalid escape \'x' in a string at byte 1"#),
        Malformed("short unicode escape", #""\u12""#, #"\u escape needs four hex digits at byte 1"#),
        Malformed("non-hex unicode escape", #""\uZZZZ""#, #"\u escape needs four hex digits at byte 1"#),
        Malformed("lone high surrogate", #""\ud800""#, #"lone UTF-16 high surrogate \uD800 (it must be followed by a low surrogate) at byte 1"#),
        Malformed("lone low surrogate", #""\udc00x""#, #"lone UTF-16 low surrogate \uDC00 at byte 1"#),
        Malformed(
            "high surrogate then non-surrogate",
            #""\ud83d\u0041""#,
            #"UTF-16 high surrogate \uD83D followed by \u0041, not by a low surrogate at byte 1"#
        ),
        Malformed("invalid UTF-8 byte", [0x22, 0x61, 0xFF, 0x22], "invalid UTF-8 in a string at byte 2"),
        Malformed("overlong UTF-8", [0x22, 0xC0, 0xAF, 0x22], "invalid UTF-8 in a string at byte 1"),
        Malformed("UTF-8 encoded surrogate", [0x22, 0x61, 0xED, 0xA0, 0x80, 0x22], "invalid UTF-8 in a string at byte 2"),
        Malformed("truncated UTF-8", [0x5B, 0x22, 0xE2, 0x82, 0x22, 0x5D], "invalid UTF-8 in a string at byte 2"),
        Malformed("invalid UTF-8 after an escape", [0x22, 0x5C, 0x6E, 0xF5, 0x22], "invalid UTF-8 in a string at byte 3"),
        Malformed("code point above U+10FFFF", [0x22, 0xF4, 0x90, 0x80, 0x80, 0x22], "invalid UTF-8 in a string at byte 1"),
        Malformed("UTF-16 input", [0xFF, 0xFE, 0x7B, 0x00, 0x7D, 0x00], "unexpected byte 0xFF where a value is expected at byte 0"),
        Malformed("NUL outside a string", [0x5B, 0x00, 0x5D], "unexpected byte 0x00 where a value is expected at byte 1"),
        Malformed(
            "one level too deep",
            String(repeating: "[", count: JSONParser.maximumDepth + 1) + String(repeating: "]", count: JSONParser.maximumDepth + 1),
            "nesting deeper than \(JSONParser.maximumDepth) levels at byte \(JSONParser.maximumDepth)"
        ),
        Malformed(
            "objects too deep",
            String(repeating: #"{"a":"#, count: JSONParser.maximumDepth + 1) + "1" + String(repeating: "}", count: JSONParser.maximumDepth + 1),
            "nesting deeper than \(JSONParser.maximumDepth) levels at byte \(JSONParser.maximumDepth * 5)"
        ),
        Malformed(
            "a million open brackets",
            String(repeating: "[", count: 1_000_000),
            "nesting deeper than \(JSONParser.maximumDepth) levels at byte \(JSONParser.maximumDepth)"
        ),
    ]

    @Test("malformed input is refused with an error naming what and where", arguments: malformed)
    func refusesMalformed(_ row: Malformed) {
        #expect(throws: DocumentError.malformedJSON(row.reason)) { try JSONValue.parse(row.bytes) }
    }

    static let valid: [(String, JSONValue)] = [
        ("0", .integer(0)),
        ("-0", .integer(0)),
        ("-0.0", .integer(0)),
        ("1.0", .integer(1)),
        ("1e3", .integer(1000)),
        ("1E+2", .integer(100)),
        ("4.0e0", .integer(4)),
        ("1.5e18", .integer(1_500_000_000_000_000_000)),
        ("1e-400", .integer(0)),
        ("9223372036854775807", .integer(.max)),
        ("-9223372036854775808", .integer(.min)),
        ("9223372036854775808", .number(9_223_372_036_854_775_808)),
        ("-9223372036854775809", .number(-9_223_372_036_854_775_809)),
        ("1e19", .number(1e19)),
        ("0.5", .number(0.5)),
        ("2.5E-3", .number(0.0025)),
        ("5e-324", .number(5e-324)),
        ("1.5e300", .number(1.5e300)),
        ("true", .bool(true)),
        ("false", .bool(false)),
        ("null", .null),
        (#""""#, .string("")),
        (#""\u0000""#, .string("\u{0}")),
        (#""\"\\\/\b\f\n\r\t""#, .string("\"\\/\u{8}\u{C}\n\r\t")),
        (#""\u00e9\u00E9é""#, .string("ééé")),
        (#""\ud83d\ude00 \uD834\uDD1E""#, .string("😀 𝄞")),
        ("\"\u{7F}\"", .string("\u{7F}")),
        ("\u{FEFF}{}", .object([:])),
        (" \r\n\t[ ] ", .array([])),
        (#"{"b":[1,{"c":null}],"a":"x"}"#, .object(["b": .array([.integer(1), .object(["c": .null])]), "a": .string("x")])),
        (#"{"":1}"#, .object(["": .integer(1)])),
        (#"{"a\u0062":1,"ab\u0063":2}"#, .object(["ab": .integer(1), "abc": .integer(2)])),
    ]

    @Test("valid input", arguments: valid + departsFromJSONDecoder)
    func parsesValid(_ text: String, _ expected: JSONValue) throws {
        #expect(try JSONValue.parse(Array(text.utf8)) == expected)
    }

    /// Where the parser deliberately reads a number differently from the old `JSONDecoder` path (which is not
    /// consistent with itself there): -2^63 spelt with a fraction or an exponent is a `.number`, as the integer literal
    /// past `Int64.min` that rounds to it is, so `encoded()` (which writes that `.number` with an exponent) gives the same
    /// value back. `JSONDecoder` read these as `.integer(Int64.min)`. Found by the json fuzz target.
    static let departsFromJSONDecoder: [(String, JSONValue)] = [
        ("-9.2233720368547758e+18", .number(-9_223_372_036_854_775_808)),
        ("-9223372036854775808.0", .number(-9_223_372_036_854_775_808)),
        ("-9.223372036854775807e18", .number(-9_223_372_036_854_775_807)),
        // Neighbours are unchanged: whole Doubles inside the Int64 range stay integers.
        ("-9.223372036854774784e18", .integer(-9_223_372_036_854_774_784)),
    ]

    @Test("nesting up to the maximum depth parses; the value comes back whole")
    func maximumDepth() throws {
        let depth = JSONParser.maximumDepth
        let text = String(repeating: #"{"a":["#, count: depth / 2) + "7" + String(repeating: "]}", count: depth / 2)
        var value = try JSONValue.parse(Array(text.utf8))
        var levels = 0
        while true {
            if case .object(let fields) = value, let inner = fields["a"] {
                value = inner
            } else if case .array(let items) = value, let inner = items.first {
                value = inner
            } else {
                break
            }
            levels += 1
        }
        #expect(levels == depth)
        #expect(value == .integer(7))
    }

    /// Regression for the json fuzz target's first crash (Fuzz/Corpus/json/regression-int64-min-double): a number past
    /// `Int64.min` was read as `.number(-2^63)`, `encoded()` wrote it as `-9.2233720368547758e+18`, and that came back
    /// as `.integer(Int64.min)`. Whatever the parser accepts must survive `encoded()` unchanged.
    @Test("an accepted document survives a round trip through encoded()", arguments: roundTrips)
    func roundTrip(_ text: String) throws {
        let value = try JSONValue.parse(Array(text.utf8))
        let again = try JSONValue.parse(Array(value.encoded()))
        #expect(again == value, "\(text)")
    }

    static let roundTrips = [
        "[0,-0,1.5e3,-1e-300,922336854775808,92233720372036854775807,-9223372036854775809,9223372036854775808,1e308,0.1]",
        "-9223372036854775809",
        "-9223372036854775808",
        "-9.2233720368547758e+18",
        "9223372036854775807",
        "9223372036854775808",
        "1.5e18",
        "{\"a\":[-9223372036854775809,{\"b\":-9.223372036854775808e18}]}",
    ]

    @Test("a 1 MiB document at the maximum depth parses (the benchmark's input)")
    func largeDocumentAtMaximumDepth() throws {
        let bytes = JSONBenchmarkDocuments.maximumDepth(bytes: 1 << 20)
        #expect(bytes.count >= 1 << 20)
        let value = try JSONValue.parse(bytes)
        #expect(Array(value.encoded()) == bytes)
    }

    // MARK: - Same as the JSONDecoder path

    /// Every JSON document the tests keep as fixtures (PM2 captures, whose `stdout` is often JSON itself), plus
    /// generated releases and status reports.
    static func fixtureDocuments() throws -> [(String, [UInt8])] {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        var documents: [(String, [UInt8])] = []
        let enumerator = FileManager.default.enumerator(at: root, includingPropertiesForKeys: nil)
        while let url = enumerator?.nextObject() as? URL {
            guard url.path.contains("/Fixtures/"), url.pathExtension == "json" else { continue }
            let bytes = try Array(Data(contentsOf: url))
            documents.append((url.lastPathComponent, bytes))
            if case .object(let fields) = try JSONValue.parse(bytes), case .string(let stdout)? = fields["stdout"] {
                // jlist output: the JSON array is the last line.
                if let line = stdout.split(separator: "\n").last, line.hasPrefix("[") {
                    documents.append(("\(url.lastPathComponent) stdout", Array(line.utf8)))
                }
            }
        }
        documents.append(("a release", Array(Sample.release.encoded())))
        let pretty = JSONEncoder()
        pretty.outputFormatting = [.prettyPrinted]
        documents.append(("a pretty-printed release", Array(try pretty.encode(Sample.release))))
        return documents
    }

    @Test("every fixture parses to the same value and encodes to the same bytes as through JSONDecoder")
    func agreesWithJSONDecoderOnFixtures() throws {
        let documents = try Self.fixtureDocuments()
        #expect(documents.count > 40, "the fixtures were found")
        var jlistOutputs = 0
        for (name, bytes) in documents {
            let old = try JSONDecoder().decode(JSONValue.self, from: Data(bytes))
            let new = try JSONValue.parse(bytes)
            #expect(new == old, "\(name)")
            #expect(new.encoded() == old.encoded(), "\(name)")
            if name.hasSuffix("stdout") { jlistOutputs += 1 }
        }
        #expect(jlistOutputs > 10, "the PM2 process tables inside the captures were compared too")
    }

    @Test("valid rows agree with JSONDecoder too", arguments: valid)
    func agreesWithJSONDecoderOnValidRows(_ text: String, _ expected: JSONValue) throws {
        let old = try JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))
        #expect(try JSONValue.parse(Array(text.utf8)) == old)
    }
}

/// The documents `scripts/bench-json.sh` measures (it writes the same shapes with Python).
enum JSONBenchmarkDocuments {
    /// Arrays nested `JSONParser.maximumDepth` deep; every level holds small objects and scalars, the innermost level
    /// scalars only, until the document has at least `bytes` bytes. It is in canonical form (compact, sorted keys), so
    /// `encoded()` gives the same bytes back.
    static func maximumDepth(bytes target: Int) -> [UInt8] {
        let depth = JSONParser.maximumDepth
        let perLevel = target / depth + 1
        var levels: [[UInt8]] = []
        var counter = 0
        for level in 1...depth {
            var items: [String] = []
            var size = 0
            while size < perLevel {
                counter += 1
                let item: String
                switch counter % 4 {
                case 0: item = level < depth ? #"{"id":\#(counter),"name":"item-\#(counter)"}"# : "\(counter)"
                case 1: item = "\"item-\(counter)\""
                case 2: item = "\(counter * 7919)"
                default: item = counter % 8 == 3 ? "true" : "null"
                }
                items.append(item)
                size += item.utf8.count + 1
            }
            levels.append(Array(items.joined(separator: ",").utf8))
        }
        var out: [UInt8] = []
        for level in levels.indices {
            out.append(UInt8(ascii: "["))
            out += levels[level]
            if level < levels.count - 1 { out.append(UInt8(ascii: ",")) }
        }
        out += Array(repeating: UInt8(ascii: "]"), count: depth)
        return out
    }
}

@Suite struct JSONLoneSurrogateTests {
    /// PM2's output is read with lone surrogates replaced (`JSONParser.LoneSurrogates.replace`); pairs still decode, and
    /// Ferry's own documents still refuse them (`JSONParserTests`' malformed rows).
    @Test(arguments: [
        (#""\ud800""#, "\u{FFFD}"),
        (#""\udc00x""#, "\u{FFFD}x"),
        (#""a\ud83d""#, "a\u{FFFD}"),
        (#""\ud800\u0041""#, "\u{FFFD}A"),
        (#""\ud800\ud800\udc00""#, "\u{FFFD}\u{10000}"),
        (#""\ud83d\ude00""#, "\u{1F600}"),
    ])
    func loneSurrogatesAreReplacedWhenAsked(_ text: String, _ expected: String) throws {
        #expect(try JSONParser.parse(Array(text.utf8), loneSurrogates: .replace) == .string(expected))
    }
}
