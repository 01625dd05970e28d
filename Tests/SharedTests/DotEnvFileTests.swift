import Foundation
import Shared
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Ferry's one `.env` dialect, read by `publish --env-file` and by the agent's instance env files.
@Suite("DotEnvFile: one .env dialect for publish --env-file and the agent's instance env files")
struct DotEnvFileTests {
    static let path = "/etc/ferry/env/api.env"

    struct Valid: Sendable, CustomStringConvertible {
        var description: String
        var bytes: [UInt8]
        var expected: [String: String]

        init(_ description: String, _ text: String, _ expected: [String: String]) {
            self.description = description
            self.bytes = Array(text.utf8)
            self.expected = expected
        }
    }

    static let valid: [Valid] = [
        Valid("empty file", "", [:]),
        Valid("only a byte-order mark", "\u{FEFF}", [:]),
        Valid("a byte-order mark before the first name", "\u{FEFF}A=1\nB=2\n", ["A": "1", "B": "2"]),
        Valid("comments and blank lines", "# secrets for api\n\n   # indented comment\nA=1\n\t\nB=2\n", ["A": "1", "B": "2"]),
        Valid("export prefix", "export A=1\nexport   B=two\nexport\tC=3\n", ["A": "1", "B": "two", "C": "3"]),
        // Opened and never closed: text, as dotenv reads it too (a generated password may start with one).
        Valid("a value that starts with an unclosed backtick", "PASS=`k9#x!\nB=a`b\n", ["PASS": "`k9#x!", "B": "a`b"]),
        Valid("names that only start like export", "export=1\nexported=2\n", ["export": "1", "exported": "2"]),
        Valid("leading blanks before the name", "  A=1\n\tB=2", ["A": "1", "B": "2"]),
        Valid("blanks around =", "A = 1\nB\t=\ttwo words\nC =\n", ["A": "1", "B": "two words", "C": ""]),
        Valid(
            "double and single quotes are removed, once",
            "A=\"x y\"\nB='z'\nC=\"\"\nD='say \"hi\"'\nE=\"'inner'\"\n",
            ["A": "x y", "B": "z", "C": "", "D": "say \"hi\"", "E": "'inner'"]
        ),
        Valid(
            "unquoted values keep = and inner blanks, lose trailing blanks",
            "URL=postgres://u:p@db/app?ssl=true\nMSG=a  b   \nEMPTY=\n",
            ["URL": "postgres://u:p@db/app?ssl=true", "MSG": "a  b", "EMPTY": ""]
        ),
        Valid(
            "a # after a blank starts a comment; elsewhere it is part of the value",
            "MSG=a b # comment\nPASS=abc#123\nHASH=#abc\nNONE= # nothing\nTAB=x\t# tab before\n",
            ["MSG": "a b", "PASS": "abc#123", "HASH": "#abc", "NONE": "", "TAB": "x"]
        ),
        Valid(
            "backslashes, quotes and $ inside unquoted values are ordinary characters",
            "WIN=C:\\path\\new\nQ=it's \"fine\"\nD=$HOME${X}\n",
            ["WIN": "C:\\path\\new", "Q": "it's \"fine\"", "D": "$HOME${X}"]
        ),
        Valid(
            "single quotes are literal",
            "A='a\\nb $HOME \\\\ # not a comment'\n",
            ["A": "a\\nb $HOME \\\\ # not a comment"]
        ),
        Valid(
            "double quotes know \\n \\r \\t \\\\ \\\" \\$ and nothing expands",
            "A=\"l1\\nl2\\tt\\r \\\\ \\\" \\$HOME $HOME ${B}\"\n",
            ["A": "l1\nl2\tt\r \\ \" $HOME $HOME ${B}"]
        ),
        Valid(
            "blanks inside quotes are kept; a comment may follow the closing quote",
            "A=\"  y  \"   \nB=\"x # not a comment\" # comment\nC='y'#c\n",
            ["A": "  y  ", "B": "x # not a comment", "C": "y"]
        ),
        Valid("UTF-8 values", "GREETING=grüße ✓\nQ=\"日本\"\n", ["GREETING": "grüße ✓", "Q": "日本"]),
        Valid("underscores and digits in names", "_X=1\nDB_URL_2=y\n", ["_X": "1", "DB_URL_2": "y"]),
        Valid("CRLF line endings", "A=1\r\nB=\"2\"\r\n# c\r\n", ["A": "1", "B": "2"]),
        Valid(
            "a CRLF file with every construct and no final line break",
            "\u{FEFF}# api\r\n\r\nexport A=1\r\nB = 'x y'\r\nC=\"a\\nb\"  # note\r\nD=plain value  \r\nE=last",
            ["A": "1", "B": "x y", "C": "a\nb", "D": "plain value", "E": "last"]
        ),
        Valid(
            "what publish --env-file read before: comments, export, blanks around =, quotes, escapes",
            "# comment\nexport A=1\nB = two words # trailing comment\nC='single # kept'\nD=\"line\\nbreak\"\n\nE=",
            ["A": "1", "B": "two words", "C": "single # kept", "D": "line\nbreak", "E": ""]
        ),
        Valid(
            "exactly as many variables as the limit",
            (0..<512).map { "V\($0)=x" }.joined(separator: "\n"),
            Dictionary(uniqueKeysWithValues: (0..<512).map { ("V\($0)", "x") })
        ),
        Valid(
            "a CA bundle as long as execve passes one variable (BIG=value and its NUL: 131,072 bytes)",
            "A=1\r\nBIG=\"" + String(repeating: "x", count: 131_067) + "\"\r\n",
            ["A": "1", "BIG": String(repeating: "x", count: 131_067)]
        ),
    ]

    @Test(arguments: valid)
    func parses(_ testCase: Valid) throws {
        #expect(try DotEnvFile.parse(testCase.bytes, path: Self.path) == testCase.expected)
    }

    struct Hostile: Sendable, CustomStringConvertible {
        var description: String
        var bytes: [UInt8]
        var line: Int
        var problem: DotEnvFileError.Problem

        init(_ description: String, _ text: String, line: Int, _ problem: DotEnvFileError.Problem) {
            self.init(description, Array(text.utf8), line: line, problem)
        }

        init(_ description: String, _ bytes: [UInt8], line: Int, _ problem: DotEnvFileError.Problem) {
            self.description = description
            self.bytes = bytes
            self.line = line
            self.problem = problem
        }
    }

    static let hostile: [Hostile] = [
        Hostile("duplicate name", "# c\nA=1\nB=2\nA=3\n", line: 4, .duplicate(name: "A", firstLine: 2)),
        Hostile("duplicate name through export", "A=1\nexport A=2\n", line: 2, .duplicate(name: "A", firstLine: 1)),
        Hostile("duplicate name in a CRLF file, with blanks", "A=1\r\nB=2\r\n A = 3\r\n", line: 3, .duplicate(name: "A", firstLine: 1)),
        Hostile("duplicate name with the same value", "A=1\nA=1\n", line: 2, .duplicate(name: "A", firstLine: 1)),
        Hostile("name starting with a digit", "1A=x\n", line: 1, .invalidName(column: 1, character: "1")),
        Hostile("blank inside the name", "A=1\nMY VAR=x\n", line: 2, .invalidName(column: 3, character: " ")),
        Hostile("dash in the name", "MY-VAR=x\n", line: 1, .invalidName(column: 3, character: "-")),
        Hostile("dot in the name, after export and blanks", "  export my.var=x\n", line: 1, .invalidName(column: 12, character: ".")),
        Hostile("no name", "=x\n", line: 1, .invalidName(column: 1, character: nil)),
        Hostile("export and no name", "export =x\n", line: 1, .invalidName(column: 8, character: nil)),
        Hostile("a byte-order mark that is not at the start", "A=1\n\u{FEFF}B=2\n", line: 2, .invalidName(column: 1, character: "\u{FEFF}")),
        Hostile("a letter that is not ASCII", "ÜBER=1\n", line: 1, .invalidName(column: 1, character: "Ü")),
        Hostile("YAML style with = in the value", "JWT_SECRET: c2VjcmV0==\n", line: 1, .invalidName(column: 11, character: ":")),
        Hostile(
            "a name that is too long",
            String(repeating: "N", count: Limits.envKeyLength + 1) + "=1\n",
            line: 1,
            .nameTooLong(limit: Limits.envKeyLength)
        ),
        Hostile("missing =", "A=1\n\nJUSTTEXT\n", line: 3, .expectedAssignment),
        Hostile("missing = in a CRLF file", "A=1\r\nJUSTTEXT\r\n", line: 2, .expectedAssignment),
        Hostile("YAML style", "A: 1\n", line: 1, .expectedAssignment),
        Hostile("export alone", "export\n", line: 1, .expectedAssignment),
        Hostile("unterminated double quote", "A=\"abc\n", line: 1, .unterminatedQuote("\"")),
        Hostile("lone quote", "A=\"\n", line: 1, .unterminatedQuote("\"")),
        Hostile("mismatched quotes", "A='abc\"\n", line: 1, .unterminatedQuote("'")),
        Hostile("quote over two lines", "A=\"first\nsecond\"\n", line: 1, .unterminatedQuote("\"")),
        Hostile("quote over two lines of a CRLF file", "A=1\r\nB='first\r\nsecond'\r\n", line: 2, .unterminatedQuote("'")),
        Hostile("the only closing quote is escaped", "A=\"abc\\\"\n", line: 1, .unterminatedQuote("\"")),
        Hostile("a backslash ends the line inside double quotes", "A=\"abc\\", line: 1, .unterminatedQuote("\"")),
        Hostile("unknown escape", "A=\"C:\\Users\"\n", line: 1, .unknownEscape(column: 6)),
        Hostile("unknown escape, column counted in characters", "A=1\nB = \"ü\\q\"\n", line: 2, .unknownEscape(column: 7)),
        Hostile("text after the closing quote", "A=\"x\" y\n", line: 1, .textAfterClosingQuote),
        Hostile("a backtick-quoted value (dotenv's third quote)", "A=1\r\nAPI_KEY=`abc123`\r\n", line: 2, .backtickQuote),
        Hostile("a backtick-quoted value with a comment sign inside", "PASS =  `a #b`\n", line: 1, .backtickQuote),
        Hostile("shell-style escaped single quote", "A='Let\\'s go'\n", line: 1, .textAfterClosingQuote),
        Hostile("two quoted parts", "A=1\r\nB='x''y'\r\n", line: 2, .textAfterClosingQuote),
        Hostile("NUL byte in a value", "A=1\nB=x\u{0}y\n", line: 2, .nulByte),
        Hostile("NUL byte in a comment", "# \u{0}\n", line: 1, .nulByte),
        Hostile("old Mac line endings", "A=1\rB=2\r", line: 1, .carriageReturnInsideLine),
        Hostile("carriage return inside double quotes", "A=1\nB=\"x\ry\"\n", line: 2, .carriageReturnInsideLine),
        Hostile("invalid UTF-8 in a value", [0x41, 0x3D, 0x31, 0x0A, 0x42, 0x3D, 0xFF, 0xFE, 0x0A], line: 2, .notUTF8),
        Hostile("Latin-1 in a comment", [0x23, 0x20, 0x67, 0x72, 0xFC, 0xDF, 0x65, 0x0A], line: 1, .notUTF8),
        Hostile("too many variables", (0...512).map { "V\($0)=x" }.joined(separator: "\n"), line: 513, .tooManyVariables(limit: 512)),
        Hostile(
            "a value one byte longer than execve passes a process (E2BIG: the app would never start)",
            "A=1\nBIG=" + String(repeating: "x", count: 131_068) + "\n",
            line: 2,
            .valueTooLong(name: "BIG", bytes: 131_073)
        ),
        Hostile(
            "a multi-byte value over the limit counted in bytes, not characters",
            "CERT=\"" + String(repeating: "é", count: 65_535) + "\"\n",
            line: 1,
            .valueTooLong(name: "CERT", bytes: 131_076)
        ),
    ]

    @Test(arguments: hostile)
    func refuses(_ testCase: Hostile) {
        #expect(throws: DotEnvFileError(path: Self.path, line: testCase.line, problem: testCase.problem)) {
            try DotEnvFile.parse(testCase.bytes, path: Self.path)
        }
    }

    /// What the secrets mask keeps of a file that does not parse (an agent started while an edit broke a line): each good
    /// line's value as parsed, and the text of each bad line's value.
    static let salvaged: [(name: String, text: String, values: [String: String])] = [
        (
            "a bad line among good ones, CRLF",
            "DB_PASSWORD=hunter2-long\r\nnot a line\r\nexport API_KEY = \"k\\ney-123\"\r\n",
            ["DB_PASSWORD": "hunter2-long", "API_KEY": "k\ney-123"]
        ),
        ("an unterminated quote", "A=1\nTOKEN=\"s3cret-token\n", ["A": "1", "TOKEN@2": "s3cret-token"]),
        ("a backtick-quoted value", "API_KEY=`abc123def`\r\n", ["API_KEY@1": "abc123def"]),
        ("a bad name, exported, quoted", "  export my.secret = 'p@ss word' \n", ["my.secret@1": "p@ss word"]),
        ("a name set twice", "A=first-value\nA=second-value\n", ["A": "first-value", "A@2": "second-value"]),
        ("text after the closing quote", "A=\"x\" y\n", ["A@1": "x\" y"]),
        ("a quote over two lines", "A=\"first\nsecond\"\n", ["A@1": "first"]),
        ("NUL in a value", "B=x\u{0}yz\n", ["B@1": "x\u{0}yz"]),
        ("only blanks after =, and a comment", "# A=comment\nA=  \nB=\"\n", [:]),
    ]

    @Test(arguments: salvaged)
    func salvagesTheValuesOfAFileThatDoesNotParse(_ testCase: (name: String, text: String, values: [String: String])) {
        #expect(DotEnvFile.salvage(Array(testCase.text.utf8)) == testCase.values, "\(testCase.name)")
    }

    @Test func salvageKeepsAtMostTheLimitAndNeverThrowsOnAnyHostileFile() {
        let many = (0..<2_000).map { "V\($0)=value-\($0)" }.joined(separator: "\n") + "\nbad line"
        let values = DotEnvFile.salvage(Array(many.utf8), limit: 512)
        #expect(values.count == 512 && values["V0"] == "value-0" && values["V511"] == "value-511")
        for testCase in Self.hostile { _ = DotEnvFile.salvage(testCase.bytes) }
    }

    @Test func errorsNameTheFileAndTheLineAndNeverAValue() throws {
        let secret = "hunter2-s3cr3t"
        let cases: [(text: String, message: String)] = [
            ("A=1\nJUST\(secret)\n", "\(Self.path):2: expected KEY=VALUE"),
            ("A=1\nA=\(secret)\n", "\(Self.path):2: A is set twice (first on line 1)"),
            (
                "A=\"\(secret)\n",
                "\(Self.path):1: unterminated quote (\" opens the value but does not close it on this line; write a line break as \\n inside double quotes)"
            ),
            ("A='\(secret)' x\n", "\(Self.path):1: text after the closing quote (only blanks and a # comment may follow it)"),
            (
                "A=\"\(secret)\\q\"\n",
                "\(Self.path):1: unknown escape at column 18 (inside double quotes \\n, \\r, \\t, \\\\, \\\" and \\$ are escapes; write \\\\ for a backslash, or use single quotes)"
            ),
            (
                "MY VAR=\(secret)\n",
                "\(Self.path):1: the variable name has a blank at column 3 (a name is letters, digits and _, not starting with a digit)"
            ),
            // A YAML line, or a value pasted without its name: the text before a `=` in the value is not quoted either.
            (
                "DATABASE_URL postgres://app:\(secret)@db/app?sslmode=require\n",
                "\(Self.path):1: the variable name has a blank at column 13 (a name is letters, digits and _, not starting with a digit)"
            ),
            (
                "\(secret)+/x==\n",
                "\(Self.path):1: the variable name has \"-\" at column 8 (a name is letters, digits and _, not starting with a digit)"
            ),
            (
                "é\(secret)=1\n",
                "\(Self.path):1: the variable name has U+00E9 at column 1 (a name is letters, digits and _, not starting with a digit)"
            ),
        ]
        for (text, message) in cases {
            let error = #expect(throws: DotEnvFileError.self) { try DotEnvFile.parse(Array(text.utf8), path: Self.path) }
            #expect(error?.description == message)
            #expect(error?.description.contains(secret) == false)
        }
        #expect(
            DotEnvFileError(path: Self.path, line: nil, problem: .tooLarge(limit: 10)).description == "\(Self.path): file is larger than 10 bytes"
        )
        #expect(DotEnvFileError.Problem.nameTooLong(limit: 256).description == "the variable name is longer than 256 bytes")
        #expect(DotEnvFileError.Problem.invalidName(column: 4, character: "\u{7}").description.hasPrefix("the variable name has U+0007 at column 4"))
    }

    @Test func configurationSetsTheLimitOfVariables() throws {
        let configuration = DotEnvFile.Configuration(maxVariables: 2)
        #expect(try DotEnvFile.parse(Array("A=1\n# c\nB=2\n".utf8), path: Self.path, configuration: configuration).count == 2)
        #expect(throws: DotEnvFileError(path: Self.path, line: 4, problem: .tooManyVariables(limit: 2))) {
            try DotEnvFile.parse(Array("A=1\n# c\nB=2\nC=3\n".utf8), path: Self.path, configuration: configuration)
        }
    }

    // MARK: - Reading files

    static func withDirectory(_ body: (String) throws -> Void) throws {
        let directory = try TestPaths.makeTemporaryDirectory("ferry-dotenv")
        defer { try? FileManager.default.removeItem(at: directory) }
        try body(directory.path)
    }

    @Test func readsTheBytesOfARegularFileOrAFileBehindASymlink() throws {
        try Self.withDirectory { directory in
            let text = "# api\r\nA=1\r\nB='two'\r\n"
            try Data(text.utf8).write(to: URL(fileURLWithPath: "\(directory)/api.env"))
            #expect(try DotEnvFile.read(path: "\(directory)/api.env") == Array(text.utf8))
            try FileManager.default.createSymbolicLink(atPath: "\(directory)/link.env", withDestinationPath: "\(directory)/api.env")
            let bytes = try #require(try DotEnvFile.read(path: "\(directory)/link.env"))
            #expect(try DotEnvFile.parse(bytes, path: "\(directory)/link.env") == ["A": "1", "B": "two"])
        }
    }

    @Test func noFileIsNilNotAnError() throws {
        try Self.withDirectory { directory in
            #expect(try DotEnvFile.read(path: "\(directory)/absent.env") == nil)
            #expect(try DotEnvFile.read(path: "\(directory)/no-such-directory/api.env") == nil)
            try FileManager.default.createSymbolicLink(atPath: "\(directory)/dangling.env", withDestinationPath: "\(directory)/gone")
            #expect(try DotEnvFile.read(path: "\(directory)/dangling.env") == nil)
        }
    }

    @Test func refusesWhatIsNotARegularFileWithoutBlocking() throws {
        try Self.withDirectory { directory in
            try FileManager.default.createDirectory(atPath: "\(directory)/dir.env", withIntermediateDirectories: false)
            #expect(throws: DotEnvFileError(path: "\(directory)/dir.env", line: nil, problem: .notARegularFile)) {
                try DotEnvFile.read(path: "\(directory)/dir.env")
            }
            // A FIFO with no writer would block a plain open(2) for ever.
            #expect(mkfifo("\(directory)/fifo.env", 0o600) == 0)
            #expect(throws: DotEnvFileError(path: "\(directory)/fifo.env", line: nil, problem: .notARegularFile)) {
                try DotEnvFile.read(path: "\(directory)/fifo.env")
            }
        }
    }

    @Test func aPipeIsReadToItsEndOnlyWhenAllowedAndADirectoryNever() throws {
        try Self.withDirectory { directory in
            let fifo = "\(directory)/secrets.env"
            #expect(mkfifo(fifo, 0o600) == 0)
            // A real writer process, as `--env-file <(sops -d secrets.env)` has.
            let writer = try SpawnedProcess(executable: "/bin/sh", arguments: ["-c", "printf 'A=1\\r\\nB=\"two\"\\r\\n' > \"$0\"", fifo])
            let configuration = DotEnvFile.Configuration(regularFilesOnly: false)
            let bytes = try #require(try DotEnvFile.read(path: fifo, configuration: configuration))
            writer.waitUntilExit()
            #expect(try DotEnvFile.parse(bytes, path: fifo) == ["A": "1", "B": "two"])

            try FileManager.default.createDirectory(atPath: "\(directory)/dir.env", withIntermediateDirectories: false)
            #expect(throws: DotEnvFileError(path: "\(directory)/dir.env", line: nil, problem: .notARegularFile)) {
                try DotEnvFile.read(path: "\(directory)/dir.env", configuration: configuration)
            }
        }
    }

    @Test func aFileThatCannotBeOpenedIsUnreadable() throws {
        try Self.withDirectory { directory in
            // Root reads any file whatever its mode; a symlink loop fails for everyone.
            try FileManager.default.createSymbolicLink(atPath: "\(directory)/loop.env", withDestinationPath: "\(directory)/loop.env")
            #expect(
                throws: DotEnvFileError(path: "\(directory)/loop.env", line: nil, problem: .unreadable(reason: String(cString: strerror(ELOOP))))
            ) {
                try DotEnvFile.read(path: "\(directory)/loop.env")
            }
        }
    }

    @Test func refusesAFileOverTheLimitAtTheLimitPlusOne() throws {
        try Self.withDirectory { directory in
            let path = "\(directory)/big.env"
            let configuration = DotEnvFile.Configuration(maxBytes: 100_000)
            try Data(repeating: UInt8(ascii: "#"), count: 100_000).write(to: URL(fileURLWithPath: path))
            #expect(try DotEnvFile.read(path: path, configuration: configuration)?.count == 100_000)
            try Data(repeating: UInt8(ascii: "#"), count: 100_001).write(to: URL(fileURLWithPath: path))
            #expect(throws: DotEnvFileError(path: path, line: nil, problem: .tooLarge(limit: 100_000))) {
                try DotEnvFile.read(path: path, configuration: configuration)
            }
            #expect(DotEnvFile.Configuration().maxBytes == Limits.envTotalBytes)
            #expect(DotEnvFile.Configuration().regularFilesOnly)
        }
    }
}
