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

    /// An enrolment that fails halfway (here its machine record cannot be written: a directory stands where the file
    /// goes) puts back every file it had replaced — pin, config, and the token but with `--replace` (which revoked the
    /// old one) — and removes the ones that were not there, so the earlier enrolment still works; a second try, once the cause is gone, is answered with the same enrolment. It
    /// used to leave the new token beside the old config (the agent polled as the old agent with the new agent's token:
    /// 401) and the new pin beside it (the agent refused to start).
    @Test func anEnrolmentThatFailsHalfwayPutsTheEarlierOneBack() async throws {
        try await Self.withController("ferry-enroll-halfway") { controller, root, publicKey in
            let operatorToken = try controller.token(role: "operator")
            let config = root.appendingPathComponent("agent.json").path
            let state = root.appendingPathComponent("state").path
            let tokenFile = root.appendingPathComponent("token").path
            let machineID = root.appendingPathComponent("machine-id").path
            try "0123456789abcdef0123456789abcdef\n".write(toFile: machineID, atomically: true, encoding: .utf8)
            func enroll(_ extra: [String]) throws -> CommandResult {
                try operatorToken.write(toFile: tokenFile, atomically: true, encoding: .utf8)
                return try Command.run(
                    TestPaths.executable("ferry-agent"),
                    [
                        "enroll", "--controller", controller.url, "--token-file", tokenFile, "--config", config, "--trusted-key", publicKey,
                        "--name", "edge-1", "--state-dir", state, "--service", "web", "--process-manager", "builtin",
                    ] + extra
                )
            }
            let first = try enroll(["--machine-identity", "none"])
            #expect(first.status == 0, "\(first.stderr)")
            let files = ["\(state)/trust-pin.json", config]
            let before = try files.map { try Data(contentsOf: URL(fileURLWithPath: $0)) }
            let originalToken = try String(contentsOfFile: "\(state)/agent.token", encoding: .utf8)
            let machineFile = "\(state)/machine.json"
            try FileManager.default.createDirectory(atPath: machineFile + "/in-the-way", withIntermediateDirectories: true)

            let failed = try enroll([
                "--force", "--replace", "--machine-identity", "machine-id", "--machine-id-file", machineID, "--poll-seconds", "7",
            ])
            #expect(failed.status != 0)
            #expect(failed.stderr.contains("the files of the earlier enrolment, if any, were put back, but for the new token"), "\(failed.stderr)")
            for (path, bytes) in zip(files, before) {
                #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == bytes, "\(path) is as the first enrolment left it")
            }
            // --replace revoked the old token when the controller answered: the new one stays, and the earlier config
            // (same agent id) polls with it.
            let token = try String(contentsOfFile: "\(state)/agent.token", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(token != originalToken.trimmingCharacters(in: .whitespacesAndNewlines))
            let id = try #require(try JSONValue.parse(Array(Data(contentsOf: URL(fileURLWithPath: config))))["agentId"]?.stringValue)
            let poll = try await controller.http.send(
                HTTPClient.Request(url: "\(controller.url)/v1/agents/\(id)/desired-state", headers: ["Authorization": "Bearer \(token)"])
            )
            #expect(poll.status == 200, "the agent polls with what the failed enrolment left")
            #expect(FileManager.default.fileExists(atPath: "\(state)/agent.token.pending"), "the enrolment offered is kept for the next try")

            try FileManager.default.removeItem(atPath: machineFile)
            let again = try enroll([
                "--force", "--replace", "--machine-identity", "machine-id", "--machine-id-file", machineID, "--poll-seconds", "7",
            ])
            #expect(again.status == 0, "\(again.stderr)")
            let written = try JSONValue.parse(Array(Data(contentsOf: URL(fileURLWithPath: config))))
            #expect(written["pollSeconds"]?.intValue == 7, "\(written)")
            #expect(FileManager.default.fileExists(atPath: machineFile))
            #expect(!FileManager.default.fileExists(atPath: "\(state)/agent.token.pending"))
        }
    }
}
