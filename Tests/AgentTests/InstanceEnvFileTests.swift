import Foundation
import Shared
import TestSupport
import Testing

@testable import Agent

@Suite("InstanceEnvFile: <envDir>/<service>.env, in the shared .env dialect, never leaving the host")
struct InstanceEnvFileTests {
    // The dialect itself (comments, quotes, escapes, CRLF, duplicates, every malformed line) is walked by
    // SharedTests/DotEnvFileTests: publish --env-file reads the same files the same way.

    @Test func readsTheSharedDialectWithTheDigestOfTheBytes() throws {
        try TestPaths.withTemporaryDirectorySync("ferry-env") { directory in
            let text = "\u{FEFF}# api\r\nexport DB_URL = postgres://db/app # primary\r\nTOKEN=\"a\\nb\"\r\nPASS='p#ss w0rd'\r\n"
            try Data(text.utf8).write(to: directory.appendingPathComponent("api.env"))
            let env = try InstanceEnvFile.load(service: "api", directory: directory.path)
            #expect(env.values == ["DB_URL": "postgres://db/app", "TOKEN": "a\nb", "PASS": "p#ss w0rd"])
            #expect(env.digest == SHA256.hash(Array(text.utf8)).hex)
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
