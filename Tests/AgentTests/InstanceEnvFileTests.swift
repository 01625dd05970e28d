import Foundation
import Shared
import TestSupport
import Testing

@testable import Agent

@Suite("InstanceEnvFile: <envDir>/<service>.env, in the shared .env dialect, never leaving the host")
struct InstanceEnvFileTests {
    // The dialect itself (comments, quotes, escapes, CRLF, duplicates, every malformed line) is walked by
    // SharedTests/DotEnvFileTests: publish --env-file reads the same files the same way.

    @Test func readsTheSharedDialectWithTheDigestOfTheVariables() throws {
        try TestPaths.withTemporaryDirectorySync("ferry-env") { directory in
            let text = "\u{FEFF}# api\r\nexport DB_URL = postgres://db/app # primary\r\nTOKEN=\"a\\nb\"\r\nPASS='p#ss w0rd'\r\n"
            try Data(text.utf8).write(to: directory.appendingPathComponent("api.env"))
            let env = try InstanceEnvFile.load(service: "api", directory: directory.path)
            #expect(env.values == ["DB_URL": "postgres://db/app", "TOKEN": "a\nb", "PASS": "p#ss w0rd"])
            #expect(env.digest == InstanceEnvFile.canonicalDigest(env.values))
            #expect(env.fileDigest == SHA256.hash(Array(text.utf8)).hex)
        }
    }

    @Test func errorsNameTheFileAndLine() throws {
        try TestPaths.withTemporaryDirectorySync("ferry-env") { directory in
            let path = directory.appendingPathComponent("api.env").path
            try Data("A=1\nB=2\nnot a line\n".utf8).write(to: URL(fileURLWithPath: path))
            let error = #expect(throws: DotEnvFileError.self) { try InstanceEnvFile.load(service: "api", directory: directory.path) }
            #expect(error?.description == "\(path):3: expected KEY=VALUE")
        }
    }

    /// The agent starts (an upgrade, a reboot) after an edit broke the file: the apps still run with the values they were
    /// started with, and their logs hold them. The mask used to start empty (the file was read with `try?`).
    @Test func aFileThatDoesNotParseStillFeedsTheMask() throws {
        try TestPaths.withTemporaryDirectorySync("ferry-env") { directory in
            let text = "DB_PASSWORD=correct-horse-battery\r\nAPI_KEY = 'k-2f9c81d0e7'\r\nNEW_TOKEN=\"half-written\r\n"
            try Data(text.utf8).write(to: directory.appendingPathComponent("api.env"))
            #expect(throws: DotEnvFileError.self) { try InstanceEnvFile.load(service: "api", directory: directory.path) }
            let values = try #require(InstanceEnvFile.valuesToMask(service: "api", directory: directory.path))
            let secrets = InstanceSecrets()
            secrets.update(service: "api", values: values)
            #expect(secrets.apply("connect correct-horse-battery with k-2f9c81d0e7") == "connect ${DB_PASSWORD} with ${API_KEY}")
            #expect(!secrets.apply("got half-written").contains("half-written"))
            // Nothing to mask where there is no file; a good file gives its values.
            #expect(InstanceEnvFile.valuesToMask(service: "web", directory: directory.path) == [:])
            try Data("A=x\n".utf8).write(to: directory.appendingPathComponent("api.env"))
            #expect(InstanceEnvFile.valuesToMask(service: "api", directory: directory.path) == ["A": "x"])
        }
    }

    @Test func anAbsentFileIsAnEmptyEnvironmentWithTheDigestOfEmptyInput() throws {
        try TestPaths.withTemporaryDirectorySync("ferry-env") { directory in
            let env = try InstanceEnvFile.load(service: "api", directory: directory.path)
            #expect(env.values.isEmpty)
            #expect(env.digest == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
            #expect(env.fileDigest == env.digest)
            // An empty file is the same environment with the same digest: creating it triggers no refresh.
            try Data().write(to: directory.appendingPathComponent("api.env"))
            #expect(try InstanceEnvFile.load(service: "api", directory: directory.path) == env)
        }
    }

    /// Rewrites of a file that change nothing an app sees keep its digest, so they reload (restart) nothing: the bytes
    /// were hashed before, and a config tool writing a dated header, CRLF line endings or another order reloaded every
    /// app of the service. A changed value, name or variable changes it.
    static let rewrites: [(name: String, text: String, same: Bool)] = [
        ("a comment added", "# written by chef at 2026-12-06T10:00:00Z\n# api secrets\nDB_PASSWORD='s3cr3t'\nexport TOKEN=abc\n", true),
        ("CRLF line endings", "# api secrets\r\nDB_PASSWORD='s3cr3t'\r\nexport TOKEN=abc\r\n", true),
        ("lines reordered, no export", "TOKEN=abc\nDB_PASSWORD=s3cr3t\n", true),
        ("double quotes, spaces, a BOM", "\u{FEFF}DB_PASSWORD = \"s3cr3t\"\nTOKEN=abc # the token\n", true),
        ("a value changed", "# api secrets\nDB_PASSWORD='s3cr3t2'\nexport TOKEN=abc\n", false),
        ("a variable added", "# api secrets\nDB_PASSWORD='s3cr3t'\nexport TOKEN=abc\nX=\n", false),
        ("a name changed", "# api secrets\nDB_PASSWORD='s3cr3t'\nexport TOKEn=abc\n", false),
        ("one value's end moved into the next name", "# api secrets\nDB_PASSWORD='s3cr3tT'\nexport OKEN=abc\n", false),
    ]

    @Test(arguments: rewrites)
    func aRewriteThatChangesNoVariableKeepsTheDigest(_ rewrite: (name: String, text: String, same: Bool)) throws {
        try TestPaths.withTemporaryDirectorySync("ferry-env") { directory in
            let file = directory.appendingPathComponent("api.env")
            try Data("# api secrets\nDB_PASSWORD='s3cr3t'\nexport TOKEN=abc\n".utf8).write(to: file)
            let before = try InstanceEnvFile.load(service: "api", directory: directory.path)
            #expect(before.values == ["DB_PASSWORD": "s3cr3t", "TOKEN": "abc"])
            try Data(rewrite.text.utf8).write(to: file)
            let after = try InstanceEnvFile.load(service: "api", directory: directory.path)
            #expect((after.digest == before.digest) == rewrite.same, "\(rewrite.name)")
            #expect(after.fileDigest != before.fileDigest, "\(rewrite.name): the bytes changed")
        }
    }

    /// An agent upgraded from one that recorded the file's digest with the applied release reloads nothing for the same
    /// bytes; once they change, the variables' digest is compared (and recorded at the next reload).
    @Test func theFilesDigestAnOlderAgentRecordedStillMatchesTheSameBytes() throws {
        try TestPaths.withTemporaryDirectorySync("ferry-env") { directory in
            let text = "DB_PASSWORD=s3cr3t\n"
            try Data(text.utf8).write(to: directory.appendingPathComponent("api.env"))
            let env = try InstanceEnvFile.load(service: "api", directory: directory.path)
            let recorded = SHA256.hash(Array(text.utf8)).hex
            #expect(env.continuing(recorded).digest == recorded)
            #expect(env.continuing(env.digest).digest == env.digest)
            #expect(env.continuing("0" + recorded.dropFirst()).digest == env.digest, "another file's digest")
            #expect(env.continuing(nil).digest == env.digest)
        }
    }

    @Test func aBadFileIsAnErrorNamingItsPath() throws {
        try TestPaths.withTemporaryDirectorySync("ferry-env") { directory in
            let path = directory.appendingPathComponent("api.env").path
            try Data("A=1\nnot a line\n".utf8).write(to: URL(fileURLWithPath: path))
            #expect(throws: DotEnvFileError(path: path, line: 2, problem: .expectedAssignment)) {
                try InstanceEnvFile.load(service: "api", directory: directory.path)
            }
            try Data(repeating: UInt8(ascii: "#"), count: Limits.envTotalBytes).write(to: URL(fileURLWithPath: path))
            #expect(try InstanceEnvFile.load(service: "api", directory: directory.path).values.isEmpty)
            try Data(repeating: UInt8(ascii: "#"), count: Limits.envTotalBytes + 1).write(to: URL(fileURLWithPath: path))
            #expect(throws: DotEnvFileError(path: path, line: nil, problem: .tooLarge(limit: Limits.envTotalBytes))) {
                try InstanceEnvFile.load(service: "api", directory: directory.path)
            }
        }
    }

    /// Where the env directory is (`missing`: nowhere; `file`: a file stands there; `empty`: a directory without the
    /// service's file), what the applied release was started with, and whether the load is refused. Before, a missing
    /// directory read as "no secrets" whatever ran: a typo in `FERRY_ENV_DIR` or a secrets volume not yet mounted
    /// restarted every app of the service without its variables.
    static let missingDirectories: [(directory: String, applied: String?, refused: Bool)] = [
        ("missing", "digest-of-variables", true),
        ("file", "digest-of-variables", true),
        ("missing", nil, false),
        ("missing", InstanceEnvFile.emptyDigest, false),
        ("file", nil, false),
        // The directory is there and the file is not: the operator removed it, the variables go.
        ("empty", "digest-of-variables", false),
    ]

    @Test(arguments: missingDirectories)
    func aMissingDirectoryKeepsTheVariablesTheAppsRunWith(_ row: (directory: String, applied: String?, refused: Bool)) throws {
        try TestPaths.withTemporaryDirectorySync("ferry-env") { root in
            let directory = root.appendingPathComponent("env").path
            if row.directory == "file" { try Data("A=x\n".utf8).write(to: URL(fileURLWithPath: directory)) }
            if row.directory == "empty" { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false) }
            do throws(DotEnvFileError) {
                let env = try InstanceEnvFile.load(service: "api", directory: directory, applied: row.applied)
                #expect(!row.refused, "read as \(env.values.count) variables")
                #expect(env.values.isEmpty && env.digest == InstanceEnvFile.emptyDigest)
            } catch {
                #expect(row.refused, "\(error)")
                #expect("\(error)".contains("the env directory \(directory)"), "\(error)")
                #expect(!"\(error)".contains("A=x"))
            }
        }
    }

    @Test func aFileThatExistsButCannotBeReadIsAnErrorNotAnEmptyEnvironment() throws {
        // Reading it as empty would change the digest and reload the apps without their secrets.
        try TestPaths.withTemporaryDirectorySync("ferry-env") { directory in
            let path = directory.appendingPathComponent("api.env").path
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
            #expect(throws: DotEnvFileError(path: path, line: nil, problem: .notARegularFile)) {
                try InstanceEnvFile.load(service: "api", directory: directory.path)
            }
        }
    }
}
