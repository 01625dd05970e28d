import ArgumentParser
import Foundation
import Shared
import TestSupport
import Testing

@testable import Agent

@Suite("ferry-agent fetch")
struct FetchCommandTests {
    static let digest = String(repeating: "ab", count: 32)

    @Test func parsesItsOptions() throws {
        let command = try AgentCommand.parseAsRoot([
            "fetch", "--url", "/v1/artifacts/\(Self.digest)", "--sha256", Self.digest, "--size", "12", "--out", "/tmp/x",
            "--state-dir", "/tmp/state", "--controller", "https://ferry.example.com", "--token-file", "/etc/ferry/token",
        ])
        let fetch = try #require(command as? FetchCommand)
        #expect(fetch.size == 12)
        #expect(fetch.stateDir == "/tmp/state")
        #expect(fetch.controller == "https://ferry.example.com")
        #expect(fetch.tokenFile == "/etc/ferry/token")
    }

    @Test(arguments: [
        ["--sha256", "XYZ"],
        ["--size", "0"],
        ["--size", "-1"],
        // Past what a release may name (1 TiB); Int64.max overflowed the free-space check and ended the command.
        ["--size", "1099511627777"],
        ["--size", "9223372036854775807"],
        ["--url", "/v1/artifacts/x"],
    ])
    func refusesBadOptions(_ override: [String]) throws {
        var options = ["--url": "http://127.0.0.1/a", "--sha256": Self.digest, "--size": "5", "--out": "/tmp/x"]
        options[override[0]] = override[1]
        let arguments = ["fetch"] + options.flatMap { [$0.key, $0.value] }
        #expect(throws: (any Error).self) { try AgentCommand.parseAsRoot(arguments) }
    }

    /// The token goes to --controller for a relative URL: plain HTTP to a host that is not loopback is refused unless
    /// allowed, as for enroll and run; the refusal does not show the URL's credentials.
    @Test(
        arguments: [
            (["--controller", "http://ferry.example:8080", "--token-file", "/etc/ferry/token"], "is plain HTTP to ferry.example"),
            (["--controller", "http://ci:s3cret@ferry.example:8080", "--token-file", "t"], "is plain HTTP to ferry.example"),
            (["--controller", "http://ferry.example:8080", "--token-file", "t", "--allow-insecure-http"], nil),
            (["--controller", "http://127.0.0.1:8080", "--token-file", "t"], nil),
            (["--controller", "https://ferry.example", "--token-file", "t"], nil),
            (["--controller", "http://ferry.example:8080"], nil),  // no token, nothing to protect
        ] as [([String], String?)]
    )
    func aTokenIsNotSentOverPlainHTTPUnlessAllowed(_ arguments: [String], _ refusal: String?) {
        let command = ["fetch", "--url", "/v1/artifacts/\(Self.digest)", "--sha256", Self.digest, "--size", "5", "--out", "/tmp/x"] + arguments
        do {
            _ = try AgentCommand.parseAsRoot(command)
            #expect(refusal == nil, "accepted \(arguments)")
        } catch {
            let message = AgentCommand.message(for: error)
            #expect(refusal.map { message.contains($0) } == true, "\(message)")
            #expect(!message.contains("s3cret"), "\(message)")
        }
    }

    @Test func downloadsVerifiesAndExtractsEndToEnd() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-fetch-cli") { root in
            let archive = root.appendingPathComponent("build.tgz").path
            try ArchiveBuilder.write([.directory("app"), .file("app/server.js", "require('http')")], format: .tarGzip, to: archive)
            let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: archive)))
            let digest = SHA256.hash(bytes)
            try await TestFileServer.with { server in
                server.publish(bytes, at: ArtifactReference.controllerPath(for: digest))
                let token = root.appendingPathComponent("token").path
                try Data("secret-agent-token\n".utf8).write(to: URL(fileURLWithPath: token))
                let out = root.appendingPathComponent("release").path
                let result = try await runAgent([
                    "fetch", "--url", ArtifactReference.controllerPath(for: digest), "--controller", server.baseURL, "--token-file", token,
                    "--sha256", digest.hex, "--size", "\(bytes.count)", "--out", out, "--state-dir", root.appendingPathComponent("state").path,
                ])
                #expect(result.status == 0, "\(result.stderr)")
                #expect(result.stdout.contains("verified (downloaded \(bytes.count) bytes)"))
                #expect(result.stdout.contains("extracted 2 entries"))
                #expect(!(result.stdout + result.stderr).contains("secret-agent-token"))
                #expect(try String(contentsOfFile: "\(out)/app/server.js", encoding: .utf8) == "require('http')")
                #expect(server.requests.first?.authorization == "Bearer secret-agent-token")
            }
        }
    }

    @Test func digestMismatchExitsNonZeroNamingBothDigests() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-fetch-cli") { root in
            let bytes = Array("not what was signed".utf8)
            let signed = SHA256.hash(Array("what was signed".utf8))
            try await TestFileServer.with { server in
                server.publish(bytes, at: "/a.tgz")
                let out = root.appendingPathComponent("release").path
                let result = try await runAgent([
                    "fetch", "--url", "\(server.baseURL)/a.tgz", "--sha256", signed.hex, "--size", "\(bytes.count)", "--out", out,
                    "--state-dir", root.appendingPathComponent("state").path,
                ])
                #expect(result.status == 1)
                #expect(result.stderr.contains(signed.hex))
                #expect(result.stderr.contains(SHA256.hash(bytes).hex))
                #expect(!FileManager.default.fileExists(atPath: out))
            }
        }
    }

    @Test func helpDescribesTheCommand() async throws {
        let result = try await runAgent(["fetch", "--help"])
        #expect(result.status == 0)
        for option in ["--url", "--sha256", "--size", "--out", "--state-dir", "--controller", "--token-file"] {
            #expect(result.stdout.contains(option))
        }
    }

    private func runAgent(_ arguments: [String]) async throws -> (status: Int32, stdout: String, stderr: String) {
        try await TestPaths.withTemporaryDirectory("ferry-fetch-cli-output") { directory in
            let stdoutURL = directory.appendingPathComponent("stdout")
            let stderrURL = directory.appendingPathComponent("stderr")
            try Data().write(to: stdoutURL)
            try Data().write(to: stderrURL)
            // Files, not pipes: a chatty child can never block on a full pipe.
            let status = try await runProcess(
                TestPaths.executable("ferry-agent"),
                arguments,
                stdout: try FileHandle(forWritingTo: stdoutURL),
                stderr: try FileHandle(forWritingTo: stderrURL)
            )
            return (status, try String(contentsOf: stdoutURL, encoding: .utf8), try String(contentsOf: stderrURL, encoding: .utf8))
        }
    }
}
