import Foundation
import Shared
import TestSupport
import Testing

@testable import Controller

/// Issue 9: `min_uptime: "999999999999999999h"` in a release crashed `ferry-controller sign` and killed the controller
/// on publish. Both binaries, for real: `sign` exits 1 naming the field; `serve` answers 422 naming it and keeps serving.
@Suite struct OverflowEndToEndTests {
    struct Row: Sendable, CustomTestStringConvertible {
        var option: String
        var literal: String
        var reason: String
        var testDescription: String { "\(option): \(literal)" }
    }

    static let rows: [Row] = [
        Row(option: "min_uptime", literal: #""999999999999999999h""#, reason: #""999999999999999999h" is too long: at most 86400000 ms"#),
        Row(
            option: "max_memory_restart",
            literal: #""99999999999999999999G""#,
            reason: #""99999999999999999999G" is too large: at most 1125899906842624 bytes"#
        ),
        Row(option: "kill_timeout", literal: "1e300", reason: "1e+300 is outside 0...3600000"),
    ]

    /// A release document with `option` set to the JSON text `literal`, as an operator would write it.
    static func releaseText(_ row: Row, digest: String, size: Int) -> String {
        """
        {"service":"api","serial":1,"version":"1.0.0","createdAt":"2026-01-01T00:00:00Z","expiresAt":"2036-01-01T00:00:00Z",
         "artifact":{"url":"/v1/artifacts/\(digest)","sha256":"\(digest)","size":\(size)},
         "pm2":{"apps":[{"name":"api","script":"server.js","\(row.option)":\(row.literal)}]}}
        """
    }

    @Test("sign exits 1 naming the field", arguments: rows)
    func signRefusesOverflow(_ row: Row) async throws {
        try await TestPaths.withTemporaryDirectory("ferry-overflow-sign") { directory in
            let keyPrefix = directory.appendingPathComponent("operator").path
            #expect(try await CommandLineEndToEndTests.cli(["keygen", "--out", keyPrefix]).status == 0)
            let file = directory.appendingPathComponent("release.json")
            try Data(Self.releaseText(row, digest: String(repeating: "ab", count: 32), size: 10).utf8).write(to: file)
            let run = try await CommandLineEndToEndTests.cli(["sign", "--key", keyPrefix + ".key", file.path])
            #expect(run.status == 1, "exit status \(run.status): \(run.errors)")
            #expect(run.errors.contains("pm2.apps[0].\(row.option): \(row.reason)"), "\(run.errors)")
            #expect(run.output.isEmpty)
        }
    }

    @Test("the controller answers 422 naming the field and keeps serving")
    func serveRefusesOverflow() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-overflow-serve") { directory in
            let data = directory.appendingPathComponent("data").path
            let key = try SigningKey.generate()
            let pub = directory.appendingPathComponent("op.pub").path
            try KeyFile.create(pub, contents: try key.publicKey.pemRepresentation(), mode: 0o644)
            let token = try await CommandLineEndToEndTests.cli(["token", "create", "--data-dir", data, "--role", "operator", "--name", "ci"])
            #expect(token.status == 0, "\(token.errors)")
            let operatorToken = token.output.trimmingCharacters(in: .whitespacesAndNewlines)
            let server = try await ServerProcess(arguments: ["--data-dir", data, "--trusted-key", pub], logDirectory: directory)
            defer { server.stop() }
            let http = LiveHTTP()

            let artifact = Data("artifact bytes".utf8)
            let upload = try await http.send("POST", "\(server.baseURL)/v1/artifacts", token: operatorToken, body: artifact)
            #expect(upload.status == 201 || upload.status == 200, "upload: \(upload.status)")
            let digest = SHA256.hash(Array(artifact)).hex
            for row in Self.rows {
                // Signed in-process: `sign` itself refuses these documents.
                let payload = Array(Self.releaseText(row, digest: digest, size: artifact.count).utf8)
                let envelope = try Envelope.sign(payload: payload, payloadType: Release.payloadType, with: [key])
                let response = try await http.send(
                    "POST",
                    "\(server.baseURL)/v1/releases",
                    token: operatorToken,
                    headers: ["Content-Type": "application/json"],
                    body: envelope.encoded()
                )
                let body = String(decoding: response.body, as: UTF8.self)
                #expect(response.status == 422, "\(row.option): \(response.status) \(body)")
                #expect(body.contains("invalid_release"), "\(body)")
                #expect(body.contains("pm2.apps[0].\(row.option): \(row.reason.replacingOccurrences(of: "\"", with: "\\\""))"), "\(body)")
                #expect(server.process.isRunning, "the controller is still running after \(row.option)")
            }
            let health = try await http.send("GET", "\(server.baseURL)/healthz")
            #expect(health.status == 200)
        }
    }
}
