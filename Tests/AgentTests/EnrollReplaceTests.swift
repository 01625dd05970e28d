import Foundation
import Shared
import TestSupport
import Testing

/// `ferry-agent enroll` against a live controller: an enrollment token cannot take over an enrolled name; an operator
/// token with `--replace` can, keeping the agent's id and killing its old token.
@Suite struct EnrollReplaceTests {
    /// Runs `body` with a live controller trusting a fresh operator key (its public key file given), in a temporary
    /// directory (`root`) removed afterwards; an error of `body` is recorded, and the controller stopped either way.
    static func withController(
        _ label: String,
        _ body: (_ controller: ControllerHarness, _ root: URL, _ publicKey: String) async throws -> Void
    ) async throws {
        let root = try TestPaths.makeTemporaryDirectory(label)
        defer { try? FileManager.default.removeItem(at: root) }
        let key = try SigningKey.generate()
        let publicKey = root.appendingPathComponent("op.pub").path
        try KeyFile.create(publicKey, contents: try key.publicKey.pemRepresentation(), mode: 0o644)
        let controller = ControllerHarness(
            dataDir: root.appendingPathComponent("controller"),
            logDir: root.appendingPathComponent("logs"),
            trustedKeys: [publicKey]
        )
        try FileManager.default.createDirectory(at: root.appendingPathComponent("logs"), withIntermediateDirectories: true)
        try await controller.start()
        do {
            try await body(controller, root, publicKey)
        } catch {
            Issue.record("\(error)")
        }
        await controller.stop()
    }

    @Test func onlyAnOperatorReplacesAnEnrolledAgent() async throws {
        try await Self.withController("ferry-replace") { controller, root, publicKey in
            let operatorToken = try controller.token(role: "operator")
            let enrollToken = try controller.token(role: "enroll")
            let config = root.appendingPathComponent("agent.json").path
            let state = root.appendingPathComponent("state").path
            let tokenFile = root.appendingPathComponent("token").path
            func enroll(_ token: String, _ extra: [String]) throws -> CommandResult {
                try token.write(toFile: tokenFile, atomically: true, encoding: .utf8)
                return try Command.run(
                    TestPaths.executable("ferry-agent"),
                    [
                        "enroll", "--controller", controller.url, "--token-file", tokenFile, "--config", config, "--trusted-key", publicKey,
                        "--name", "edge-1", "--state-dir", state, "--service", "web", "--process-manager", "builtin",
                    ] + extra
                )
            }
            func agentID() throws -> String? {
                try JSONValue.parse(Array(Data(contentsOf: URL(fileURLWithPath: config))))["agentId"]?.stringValue
            }
            func agentToken() throws -> String {
                try String(contentsOfFile: state + "/agent.token", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            }
            func polls(_ id: String, _ token: String) async throws -> Int {
                try await controller.http.send(
                    HTTPClient.Request(url: "\(controller.url)/v1/agents/\(id)/desired-state", headers: ["Authorization": "Bearer \(token)"])
                ).status
            }

            let first = try enroll(enrollToken, [])
            #expect(first.status == 0, "\(first.stderr)")
            let id = try #require(try agentID())
            let original = try agentToken()
            #expect(try await polls(id, original) == 200)

            // The same name with the enrollment token again: refused, nothing on either side changes.
            let hijack = try enroll(enrollToken, ["--force"])
            #expect(hijack.status != 0)
            #expect(hijack.stderr.contains("agent_exists"), "\(hijack.stderr)")
            #expect(hijack.stderr.contains("ferry-controller agents remove edge-1"), "\(hijack.stderr)")
            #expect(try agentToken() == original)
            #expect(try await polls(id, original) == 200)
            // Asking to replace with it is refused too.
            let asked = try enroll(enrollToken, ["--force", "--replace"])
            #expect(asked.status != 0)
            #expect(asked.stderr.contains("replace_needs_operator"), "\(asked.stderr)")
            #expect(try await polls(id, original) == 200)

            // The operator's --replace: same id, new token, the old one dead at once.
            let replaced = try enroll(operatorToken, ["--force", "--replace"])
            #expect(replaced.status == 0, "\(replaced.stderr)")
            #expect(try agentID() == id)
            let renewed = try agentToken()
            #expect(renewed != original)
            #expect(try await polls(id, original) == 401)
            #expect(try await polls(id, renewed) == 200)
        }
    }
}
