import Foundation
import Shared
import TestSupport
import Testing

@testable import Controller

/// The controller's files are private whatever the umask: the built binary runs under umask 000 and 022 on a data
/// directory an older version left loose, with the temporary file of a killed upload in it.
@Suite struct ControllerFileModeTests {
    static func mode(_ path: String) -> mode_t? {
        var info = stat()
        guard lstat(path, &info) == 0 else { return nil }
        return info.st_mode & 0o777
    }

    /// Runs the built `ferry-controller` under `umask`.
    static func cli(_ arguments: [String], umask: String) async throws -> CommandLineEndToEndTests.Run {
        try await CommandLineEndToEndTests.cli(
            ["-c", "umask \(umask) && exec \"$0\" \"$@\"", TestPaths.executable("ferry-controller")] + arguments,
            executable: "/bin/sh"
        )
    }

    @Test(arguments: ["000", "022"])
    func filesArePrivateWhateverTheUmask(_ umask: String) async throws {
        try await TestPaths.withTemporaryDirectory("ferry-modes") { directory in
            let data = directory.appendingPathComponent("data").path
            let artifacts = data + "/artifacts"
            // What an older version, or a killed upload, left behind.
            try FileManager.default.createDirectory(atPath: artifacts + "/tmp", withIntermediateDirectories: true)
            #expect(chmod(data, 0o755) == 0)
            let stale = artifacts + "/tmp/upload-\(UUID().uuidString)"
            #expect(FileManager.default.createFile(atPath: stale, contents: Data("half an upload".utf8)))
            let oldDigest = SHA256.hash(Array("old artifact".utf8))
            let oldArtifact = artifacts + "/" + oldDigest.hex
            #expect(FileManager.default.createFile(atPath: oldArtifact, contents: Data("old artifact".utf8), attributes: [.posixPermissions: 0o644]))

            let keyPrefix = directory.appendingPathComponent("operator").path
            #expect(try await CommandLineEndToEndTests.cli(["keygen", "--out", keyPrefix]).status == 0)
            let created = try await Self.cli(["token", "create", "--data-dir", data, "--role", "operator"], umask: umask)
            #expect(created.status == 0, "\(created.errors)")
            let token = created.output.trimmingCharacters(in: .whitespacesAndNewlines)
            let server = try await ServerProcess(
                arguments: ["--data-dir", data, "--trusted-key", keyPrefix + ".pub"],
                logDirectory: directory,
                umask: umask
            )
            defer { server.stop() }
            let bytes = Data("new artifact".utf8)
            let upload = try await LiveHTTP().send("POST", server.baseURL + "/v1/artifacts", token: token, body: bytes)
            #expect(upload.status == 201)

            #expect(!FileManager.default.fileExists(atPath: stale), "the killed upload's temporary file is removed at start")
            let expected: [(String, mode_t)] = [
                (data, 0o700), (data + "/ferry.sqlite", 0o600), (data + "/ferry.sqlite-wal", 0o600), (data + "/ferry.sqlite-shm", 0o600),
                (data + "/token-revocations", 0o600), (artifacts, 0o700), (artifacts + "/tmp", 0o700),
                (artifacts + "/" + SHA256.hash(Array(bytes)).hex, 0o600), (oldArtifact, 0o600),
            ]
            for (path, mode) in expected {
                #expect(Self.mode(path) == mode, "\(path): \(String(Self.mode(path) ?? 0, radix: 8)) under umask \(umask)")
            }
            // Revoking from another process under the same umask keeps the signal file private.
            let revoke = try await Self.cli(["token", "revoke", "--data-dir", data, "operator"], umask: umask)
            #expect(revoke.status == 0, "\(revoke.errors)")
            #expect(Self.mode(data + "/token-revocations") == 0o600)
        }
    }
}
