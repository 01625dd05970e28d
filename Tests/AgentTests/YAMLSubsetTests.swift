import Shared
import Testing

@testable import Agent

@Suite("YAMLSubset: the YAML that config files use, and nothing silently misread")
struct YAMLSubsetTests {
    struct Valid: Sendable, CustomStringConvertible {
        var description: String
        var yaml: String
        var expected: JSONValue
    }

    static let valid: [Valid] = [
        Valid(description: "empty document", yaml: "", expected: .null),
        Valid(description: "only comments and a leading ---", yaml: "# c\n---\n   # more\n", expected: .null),
        Valid(
            description: "nested mappings",
            yaml: """
                a:
                  b:
                    c: 1
                    d: two
                  e: 3
                f: 4
                """,
            expected: .object([
                "a": .object(["b": .object(["c": .integer(1), "d": .string("two")]), "e": .integer(3)]), "f": .integer(4),
            ])
        ),
        Valid(
            description: "block sequence of scalars",
            yaml: "services:\n  - api\n  - web\n  - 42\n",
            expected: .object(["services": .array([.string("api"), .string("web"), .integer(42)])])
        ),
        Valid(
            description: "a key at the same indent as its sequence",
            yaml: "services:\n- api\n- web\nnext: 1\n",
            expected: .object(["services": .array([.string("api"), .string("web")]), "next": .integer(1)])
        ),
        Valid(
            description: "`- key: value` items with further keys at the key's column",
            yaml: """
                apps:
                  - name: api
                    instances: 2
                  - name: worker
                    env:
                      QUEUE: jobs
                  -   name: wide
                      port: 80
                """,
            expected: .object([
                "apps": .array([
                    .object(["name": .string("api"), "instances": .integer(2)]),
                    .object(["name": .string("worker"), "env": .object(["QUEUE": .string("jobs")])]),
                    .object(["name": .string("wide"), "port": .integer(80)]),
                ])
            ])
        ),
        Valid(
            description: "a `- key:` item whose value is a nested block",
            yaml: "items:\n  - env:\n      A: 1\n    name: x\n",
            expected: .object(["items": .array([.object(["env": .object(["A": .integer(1)]), "name": .string("x")])])])
        ),
        Valid(
            description: "a bare `-` item holding a block, and an empty item",
            yaml: "items:\n  -\n    a: 1\n  -\n",
            expected: .object(["items": .array([.object(["a": .integer(1)]), .null])])
        ),
        Valid(
            description: "flow sequences",
            yaml: "a: [x, \"y, z\", 'w', 1, true]\nb: []\nc: [ ]\n",
            expected: .object([
                "a": .array([.string("x"), .string("y, z"), .string("w"), .integer(1), .bool(true)]), "b": .array([]), "c": .array([]),
            ])
        ),
        Valid(
            description: "quoted scalars with escapes",
            yaml: #"""
                d: "say \"hi\"\\ back\n\tand /\/ # not a comment"
                s: 'it''s # not a comment either'
                e: ""
                q: "123"
                t: 'true'
                """#,
            expected: .object([
                "d": .string("say \"hi\"\\ back\n\tand // # not a comment"), "s": .string("it's # not a comment either"),
                "e": .string(""), "q": .string("123"), "t": .string("true"),
            ])
        ),
        Valid(
            description: "quoted keys",
            yaml: "\"a b\": 1\n'c:d': 2\n",
            expected: .object(["a b": .integer(1), "c:d": .integer(2)])
        ),
        Valid(
            description: "comments: whole line, trailing, and # without a space before it is text",
            yaml: "# head\na: 1 # one\nb: x#y\n  # indented comment\nlist:\n  - api   # the api\n  - web\n",
            expected: .object([
                "a": .integer(1), "b": .string("x#y"), "list": .array([.string("api"), .string("web")]),
            ])
        ),
        Valid(
            description: "booleans and null",
            yaml: "a: true\nb: True\nc: FALSE\nd: null\ne: ~\nf:\ng: Null\nh: yes\n",
            expected: .object([
                "a": .bool(true), "b": .bool(true), "c": .bool(false), "d": .null, "e": .null, "f": .null, "g": .null,
                // YAML 1.2: `yes` is a string, not a boolean.
                "h": .string("yes"),
            ])
        ),
        Valid(
            description: "integers and floats; anything else number-like stays text",
            yaml: "a: 42\nb: -7\nc: 0\nd: 1.5\ne: -0.25\nf: 1.2.3\ng: 0x1F\nh: 3000s\ni: 9999999999999999999999\n",
            expected: .object([
                "a": .integer(42), "b": .integer(-7), "c": .integer(0), "d": .number(1.5), "e": .number(-0.25),
                "f": .string("1.2.3"), "g": .string("0x1F"), "h": .string("3000s"), "i": .string("9999999999999999999999"),
            ])
        ),
        Valid(
            description: "URLs and paths with colons; trailing spaces are not part of a plain value",
            yaml: "controller: https://ferry.internal:8443/base   \npath: /a/b:c \n",
            expected: .object(["controller": .string("https://ferry.internal:8443/base"), "path": .string("/a/b:c")])
        ),
        Valid(
            description: "CRLF line endings",
            yaml: "a: 1\r\nlist:\r\n  - x\r\n  - \"y\"\r\n",
            expected: .object(["a": .integer(1), "list": .array([.string("x"), .string("y")])])
        ),
        Valid(
            description: "a document indented as a whole",
            yaml: "  a: 1\n  b:\n    - c\n",
            expected: .object(["a": .integer(1), "b": .array([.string("c")])])
        ),
        Valid(
            description: "a top-level sequence",
            yaml: "- a\n- b: 1\n",
            expected: .array([.string("a"), .object(["b": .integer(1)])])
        ),
    ]

    @Test(arguments: valid)
    func parses(_ testCase: Valid) throws {
        let parsed = try YAMLSubset.parse(testCase.yaml)
        #expect(parsed == testCase.expected)
    }

    struct Hostile: Sendable, CustomStringConvertible {
        var description: String
        var yaml: String
        var expected: YAMLSubset.ParseError
    }

    static func feature(_ line: Int, _ c: Character) -> YAMLSubset.ParseError {
        .init(line: line, message: "YAML feature '\(c)' is not supported in Ferry config files")
    }

    static let hostile: [Hostile] = [
        Hostile(description: "tab indentation", yaml: "a:\n\tb: 1\n", expected: .init(line: 2, message: "tabs are not allowed for indentation")),
        Hostile(description: "tab after spaces", yaml: "a:\n  \tb: 1\n", expected: .init(line: 2, message: "tabs are not allowed for indentation")),
        Hostile(description: "anchor", yaml: "base: &b 1\n", expected: feature(1, "&")),
        Hostile(description: "anchor on a block", yaml: "base: &b\n  a: 1\n", expected: feature(1, "&")),
        Hostile(description: "alias", yaml: "a: 1\nb: *a\n", expected: feature(2, "*")),
        Hostile(description: "merge key", yaml: "a:\n  <<: *base\n", expected: feature(2, "*")),
        Hostile(description: "tag", yaml: "a: !!str 1\n", expected: feature(1, "!")),
        Hostile(description: "literal block scalar", yaml: "a: |\n  text\n", expected: feature(1, "|")),
        Hostile(description: "folded block scalar", yaml: "a: >-\n  text\n", expected: feature(1, ">")),
        Hostile(description: "flow mapping", yaml: "a: {b: 1}\n", expected: feature(1, "{")),
        Hostile(description: "anchor in a list item", yaml: "l:\n  - &x 1\n", expected: feature(2, "&")),
        Hostile(description: "unterminated double quote", yaml: "a: 1\nb: \"abc\n", expected: .init(line: 2, message: "unterminated quoted string")),
        Hostile(description: "unterminated single quote", yaml: "b: 'abc\n", expected: .init(line: 1, message: "unterminated quoted string")),
        Hostile(description: "lone quote", yaml: "b: '\n", expected: .init(line: 1, message: "unterminated quoted string")),
        Hostile(
            description: "unterminated quote in a flow sequence",
            yaml: "b: [\"a, b]\n",
            expected: .init(line: 1, message: "unterminated quoted string")
        ),
        Hostile(description: "unterminated quoted key", yaml: "\"abc: 1\n", expected: .init(line: 1, message: "unterminated quoted key")),
        Hostile(description: "text after a closing quote", yaml: "a: \"x\" y\n", expected: .init(line: 1, message: "text after a closing quote")),
        Hostile(
            description: "unsupported escape",
            yaml: #"a: "\x41""#,
            expected: .init(line: 1, message: "unsupported escape in a double-quoted string")
        ),
        Hostile(description: "duplicate key", yaml: "a: 1\nb: 2\na: 3\n", expected: .init(line: 3, message: "duplicate key \"a\"")),
        Hostile(
            description: "duplicate key in a nested mapping",
            yaml: "a:\n  x: 1\n  x: 2\n",
            expected: .init(line: 3, message: "duplicate key \"x\"")
        ),
        Hostile(
            description: "several documents",
            yaml: "a: 1\n---\nb: 2\n",
            expected: .init(line: 2, message: "several YAML documents in one file are not supported")
        ),
        Hostile(
            description: "document end marker",
            yaml: "a: 1\n...\n",
            expected: .init(line: 2, message: "several YAML documents in one file are not supported")
        ),
        Hostile(description: "over-indented line", yaml: "a: 1\n    b: 2\n", expected: .init(line: 2, message: "unexpected indentation")),
        Hostile(
            description: "multi-line plain scalar",
            yaml: "a:\n  - x\n    continued\n",
            expected: .init(line: 3, message: "unexpected indentation")
        ),
        Hostile(description: "dedent to no parent", yaml: "a:\n    b: 1\n  c: 2\n", expected: .init(line: 3, message: "unexpected indentation")),
        Hostile(description: "list item among keys", yaml: "a: 1\n- b\n", expected: .init(line: 2, message: "a list item where a key was expected")),
        Hostile(description: "no space after the colon", yaml: "a:1\n", expected: .init(line: 1, message: "expected 'key: value'")),
        Hostile(description: "a bare word", yaml: "a: 1\njust text\n", expected: .init(line: 2, message: "expected 'key: value'")),
        Hostile(description: "empty key", yaml: ": 1\n", expected: .init(line: 1, message: "empty key")),
        Hostile(description: "nothing after a quoted key", yaml: "\"a\" 1\n", expected: .init(line: 1, message: "expected ':' after the key")),
        Hostile(
            description: "nested flow sequence",
            yaml: "a: [1, [2]]\n",
            expected: .init(line: 1, message: "nested flow collections are not supported")
        ),
        Hostile(description: "unterminated flow sequence", yaml: "a: [1, 2\n", expected: .init(line: 1, message: "unterminated flow sequence")),
    ]

    @Test(arguments: hostile)
    func refuses(_ testCase: Hostile) {
        #expect(throws: testCase.expected) { try YAMLSubset.parse(testCase.yaml) }
    }

    @Test func errorsNameTheLine() {
        #expect(YAMLSubset.ParseError(line: 7, message: "duplicate key \"a\"").description == "line 7: duplicate key \"a\"")
    }
}
