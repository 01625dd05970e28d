import Foundation
import Shared
import TestSupport
import Testing

@testable import Agent

@Suite("InstanceEnvFile: <envDir>/<service>.env, KEY=VALUE lines that never leave the host")
struct InstanceEnvFileTests {
    static let path = "/etc/ferry/env/api.env"

    struct Valid: Sendable, CustomStringConvertible {
        var description: String
        var text: String
        var expected: [String: String]
    }

    static let valid: [Valid] = [
        Valid(description: "empty file", text: "", expected: [:]),
        Valid(
            description: "comments and blank lines",
            text: "# secrets for api\n\n   # indented comment\nA=1\n\t\nB=2\n",
            expected: ["A": "1", "B": "2"]
        ),
        Valid(description: "export prefix", text: "export A=1\nexport   B=two\n", expected: ["A": "1", "B": "two"]),
        Valid(description: "leading blanks before the key", text: "  A=1\n\tB=2", expected: ["A": "1", "B": "2"]),
        Valid(
            description: "double and single quotes are removed, once",
            text: "A=\"x y\"\nB='z'\nC=\"\"\nD='say \"hi\"'\nE=\"'inner'\"\n",
            expected: ["A": "x y", "B": "z", "C": "", "D": "say \"hi\"", "E": "'inner'"]
        ),
        Valid(
            description: "unquoted values are taken as written (no inline comments, = kept)",
            text: "URL=postgres://u:p@db/app?ssl=true\nMSG=a b # not a comment\nEMPTY=\n",
            expected: ["URL": "postgres://u:p@db/app?ssl=true", "MSG": "a b # not a comment", "EMPTY": ""]
        ),
        Valid(description: "CRLF line endings", text: "A=1\r\nB=\"2\"\r\n# c\r\n", expected: ["A": "1", "B": "2"]),
        Valid(description: "underscores and digits in names", text: "_X=1\nDB_URL_2=y\n", expected: ["_X": "1", "DB_URL_2": "y"]),
    ]

    @Test(arguments: valid)
    func parses(_ testCase: Valid) throws {
        let values = try InstanceEnvFile.parse(testCase.text, path: Self.path)
        #expect(values == testCase.expected)
    }

    struct Hostile: Sendable, CustomStringConvertible {
        var description: String
        var text: String
        var line: Int
        var reason: String
    }

    static let hostile: [Hostile] = [
        Hostile(description: "duplicate key", text: "# c\nA=1\nB=2\nA=3\n", line: 4, reason: "A is set twice"),
        Hostile(description: "duplicate key through export", text: "A=1\nexport A=2\n", line: 2, reason: "A is set twice"),
        Hostile(description: "name starting with a digit", text: "1A=x\n", line: 1, reason: "\"1A\" is not a valid variable name"),
        Hostile(description: "space inside the name", text: "A=1\nMY VAR=x\n", line: 2, reason: "\"MY VAR\" is not a valid variable name"),
        Hostile(description: "space before =", text: "A =x\n", line: 1, reason: "\"A \" is not a valid variable name"),
        Hostile(description: "dash in the name", text: "MY-VAR=x\n", line: 1, reason: "\"MY-VAR\" is not a valid variable name"),
        Hostile(description: "no name", text: "=x\n", line: 1, reason: "\"\" is not a valid variable name"),
        Hostile(description: "missing =", text: "A=1\n\nJUSTTEXT\n", line: 3, reason: "expected KEY=VALUE"),
        Hostile(description: "export alone", text: "export\n", line: 1, reason: "expected KEY=VALUE"),
        Hostile(description: "unterminated double quote", text: "A=\"abc\n", line: 1, reason: "unterminated quote"),
        Hostile(description: "lone quote", text: "A=\"\n", line: 1, reason: "unterminated quote"),
        Hostile(description: "mismatched quotes", text: "A='abc\"\n", line: 1, reason: "unterminated quote"),
        Hostile(description: "quote over two lines", text: "A=\"first\nsecond\"\n", line: 1, reason: "unterminated quote"),
        Hostile(
            description: "too many variables",
            text: (0...512).map { "V\($0)=x" }.joined(separator: "\n"),
            line: 0,
            reason: "more than 512 variables"
        ),
    ]

    @Test(arguments: hostile)
    func refuses(_ testCase: Hostile) {
        #expect(throws: InstanceEnvFile.ParseError(path: Self.path, line: testCase.line, reason: testCase.reason)) {
            try InstanceEnvFile.parse(testCase.text, path: Self.path)
        }
    }

    @Test func errorsNameTheFileAndLine() {
        #expect(
            InstanceEnvFile.ParseError(path: Self.path, line: 3, reason: "expected KEY=VALUE").description == "\(Self.path):3: expected KEY=VALUE"
        )
    }

    @Test func anAbsentFileIsAnEmptyEnvironmentWithTheDigestOfEmptyInput() throws {
        try TestPaths.withTemporaryDirectorySync("ferry-env") { directory in
            let env = try InstanceEnvFile.load(service: "api", directory: directory.path)
            #expect(env.values.isEmpty)
            #expect(env.digest == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
            // An empty file is the same environment with the same digest: creating it triggers no refresh.
            try Data().write(to: directory.appendingPathComponent("api.env"))
            #expect(try InstanceEnvFile.load(service: "api", directory: directory.path) == env)
        }
    }

    @Test func aFileIsReadWithTheDigestOfItsBytes() throws {
        try TestPaths.withTemporaryDirectorySync("ferry-env") { directory in
            let text = "# api secrets\nDB_PASSWORD='s3cr3t'\nexport TOKEN=abc\n"
            try Data(text.utf8).write(to: directory.appendingPathComponent("api.env"))
            try Data("OTHER=1\n".utf8).write(to: directory.appendingPathComponent("web.env"))
            let env = try InstanceEnvFile.load(service: "api", directory: directory.path)
            #expect(env.values == ["DB_PASSWORD": "s3cr3t", "TOKEN": "abc"])
            #expect(env.digest == SHA256.hash(Array(text.utf8)).hex)
            // A comment-only edit changes the digest (the apps are reloaded; harmless, and simpler than normalising).
            try Data(("# edited\n" + text).utf8).write(to: directory.appendingPathComponent("api.env"))
            #expect(try InstanceEnvFile.load(service: "api", directory: directory.path).digest != env.digest)
        }
    }

    @Test func aBadFileIsAnErrorNamingItsPath() throws {
        try TestPaths.withTemporaryDirectorySync("ferry-env") { directory in
            let path = directory.appendingPathComponent("api.env").path
            try Data("A=1\nnot a line\n".utf8).write(to: URL(fileURLWithPath: path))
            #expect(throws: InstanceEnvFile.ParseError(path: path, line: 2, reason: "expected KEY=VALUE")) {
                try InstanceEnvFile.load(service: "api", directory: directory.path)
            }
            try Data(repeating: UInt8(ascii: "#"), count: Limits.envTotalBytes + 1).write(to: URL(fileURLWithPath: path))
            #expect(throws: InstanceEnvFile.ParseError(path: path, line: 0, reason: "file is larger than \(Limits.envTotalBytes) bytes")) {
                try InstanceEnvFile.load(service: "api", directory: directory.path)
            }
        }
    }

    @Test func aFileThatExistsButCannotBeReadIsAnErrorNotAnEmptyEnvironment() throws {
        // Reading it as empty would change the digest and reload the apps without their secrets.
        try TestPaths.withTemporaryDirectorySync("ferry-env") { directory in
            let path = directory.appendingPathComponent("api.env").path
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
            #expect(throws: InstanceEnvFile.ParseError(path: path, line: 0, reason: "cannot read the file")) {
                try InstanceEnvFile.load(service: "api", directory: directory.path)
            }
        }
    }
}
