import Foundation
import Shared
import TestSupport
import Testing

/// Keys that change, for real: a live `ferry-controller`, real `ferry-agent run` processes, the operator's key ceremony
/// through the real CLI (`keygen`, `root init`, `root sign`, `root publish`, `status`, `approve`).
///
/// The fleet starts as every fleet before trust roots did — agents enrolled with `--trusted-key op.pub`, so root 1 is
/// that key — and rotates to a root 2 with a new release key, signed by the old key and the new root key.
@Suite("Trust root end to end", .serialized)
struct TrustRootEndToEndTests {
    @Test(
        "rotate the release key on a running fleet: agents pick up root 2, accept the new key's releases, refuse the old key's",
        .timeLimit(.minutes(6)),
        arguments: Backend.allCases
    )
    func rotation(backend: Backend) async throws {
        _ = try backend.pm2Binary()
        try await FleetFixture.with { fleet in try await rotate(fleet, backend: backend) }
    }

    @Test(
        "two-person rule: a release signed by CI alone is stored, served to no agent, and rolls out once a second key approves",
        .timeLimit(.minutes(5))
    )
    func approval() async throws {
        // The approval is the controller's and the CLI's; the process manager plays no part: the builtin one suffices.
        try await FleetFixture.with { fleet in try await approve(fleet) }
    }

    @Test(
        "a fleet pinned to a signed root file from day one: controller and agents pin root 1, follow root 2 from the controller",
        .timeLimit(.minutes(5))
    )
    func pinnedRootFile() async throws {
        // How roots are pinned is the controller's and the agent's; the builtin process manager suffices.
        try await FleetFixture.with { fleet in try await pinRootFile(fleet) }
    }

    // MARK: Rotation

    private func rotate(_ fleet: FleetFixture, backend: Backend) async throws {
        try await fleet.startController()
        let cli = OperatorCLI(fleet: fleet)
        try await fleet.publish(serial: 1, version: "1.0.0", port: 0)
        let ports = [try freeLoopbackPort(), try freeLoopbackPort()]
        var configs: [String] = []
        for (index, port) in ports.enumerated() {
            let config = try await fleet.enrollAgent(name: "edge-\(index + 1)", backend: backend, instanceEnv: ["PORT": "\(port)"])
            _ = try fleet.startAgent(config: config, label: "agent-\(index + 1)")
            configs.append(config)
        }
        for port in ports {
            try await eventually("v1 serving on \(port)", timeout: .seconds(90)) {
                await fleet.appAnswer(port: port)?.hasPrefix("1.0.0") == true ? true : nil
            }
        }

        // The ceremony: a root key kept offline, a new CI release key; root 2 signed by root 1's key (the old
        // --trusted-key) and by its own root key.
        let rootKey = try await cli.keygen("root")
        let ciKey = try await cli.keygen("ci-2026")
        let rootFile = fleet.root.appendingPathComponent("root-2.json").path
        try await cli.run([
            "root", "init", "--version", "2", "--root-key", rootKey.pub, "--release-key", ciKey.pub, "--expires", "30d", "--out", rootFile,
        ])
        let unsigned = try await cli.run(["root", "publish", rootFile] + cli.controller, expectSuccess: false)
        #expect(unsigned.stderr.contains("not signed yet"), "\(unsigned.stderr)")
        let oneSigned = try await cli.run(["root", "sign", "--key", fleet.operatorKeyPath, rootFile])
        #expect(oneSigned.stdout.contains("0 of 1 required signature(s) by its own root keys — not enough yet"), "\(oneSigned.stdout)")
        let refused = try await cli.run(["root", "publish", rootFile] + cli.controller, expectSuccess: false)
        #expect(refused.stderr.contains("root_not_signed_by_itself"), "\(refused.stderr)")
        try await cli.run(["root", "sign", "--key", rootKey.key, rootFile])
        let published = try await cli.run(["root", "publish", rootFile] + cli.controller)
        #expect(published.stdout.contains("published trust root version 2"), "\(published.stdout)")

        // Every agent picks up root 2 (long-polls are woken) and says so in its reports.
        for name in ["edge-1", "edge-2"] {
            try await eventually("\(name) reports trust root 2", timeout: .seconds(60)) { () -> Bool? in
                let agent = try await fleet.controller.fleet(token: fleet.viewerToken)["agents"]?.arrayValue.first { $0["name"]?.stringValue == name }
                return agent?["trustRoot"]?["version"]?.intValue == 2 ? true : nil
            }
        }
        let shown = try await cli.run(["root", "show"] + cli.controller)
        #expect(shown.stdout.contains("version 2: expires"), "\(shown.stdout)")

        // The old key's release: the controller refuses it.
        let v2Archive = try fleet.makeArtifact(version: "2.0.0")
        let v2Artifact = try await fleet.controller.upload(v2Archive, token: fleet.operatorToken)
        let oldKeyV2 = try fleet.release(serial: 2, version: "2.0.0", artifact: v2Artifact, port: 0)
        let (oldStatus, oldBody) = try await fleet.controller.publish(oldKeyV2, token: fleet.operatorToken)
        #expect(oldStatus == 422 && oldBody.contains("untrusted_key"), "\(oldStatus) \(oldBody)")

        // The new key's release: accepted and installed everywhere.
        let newKey = try SigningKey(contentsOf: ciKey.key)
        let newKeyV2 = try fleet.release(serial: 2, version: "2.0.0", artifact: v2Artifact, port: 0, signer: newKey)
        let (newStatus, newBody) = try await fleet.controller.publish(newKeyV2, token: fleet.operatorToken)
        #expect(newStatus == 201, "\(newBody)")
        for port in ports {
            try await eventually("v2 serving on \(port)", timeout: .seconds(90)) {
                await fleet.appAnswer(port: port)?.hasPrefix("2.0.0") == true ? true : nil
            }
        }

        // A compromised controller serving the revoked key's release: every agent refuses it and keeps serving v2.
        let controllerPort = fleet.controller.port
        await fleet.controller.stop()
        let rogue = RogueController(port: controllerPort)
        let v3Archive = try fleet.makeArtifact(version: "3.0.0")
        let digest = try SHA256.hash(fileAt: v3Archive.path)
        let v3 = try fleet.release(
            serial: 3,
            version: "3.0.0",
            artifact: ArtifactReference(url: ArtifactReference.controllerPath(for: digest.digest), sha256: digest.digest, size: digest.size),
            port: 0
        )
        await rogue.serve([v3], agentID: try Self.agentID(config: configs[0]))
        let ids = try configs.map(Self.agentID(config:))
        let refusal = try await eventually("every agent reports serial 3 refused", timeout: .seconds(60)) { () -> [ReleaseFailure]? in
            let byAgent = await rogue.recorder.reportsByAgent
            let found = ids.compactMap { id -> ReleaseFailure? in
                guard let report = byAgent[id]?.last, report.trustRoot?.version == 2 else { return nil }
                return report.services.first?.failures.first { $0.serial == 3 && $0.kind == "refused" }
            }
            return found.count == ids.count ? found : nil
        }
        for failure in refusal {
            #expect(failure.reason.contains("signature check failed"), "\(failure.reason)")
            #expect(failure.reason.contains("not trusted here"), "\(failure.reason)")
        }
        for port in ports { #expect(await fleet.appAnswer(port: port)?.hasPrefix("2.0.0") == true) }
        await rogue.stop()
    }

    // MARK: A root file pinned at enroll

    private func pinRootFile(_ fleet: FleetFixture) async throws {
        // Root 1, made offline before any controller exists: two root keys (both must sign), CI's release key.
        let cli = OperatorCLI(fleet: fleet)
        let alice = try await cli.keygen("root-alice")
        let bob = try await cli.keygen("root-bob")
        let ci = try await cli.keygen("ci")
        let ciNext = try await cli.keygen("ci-next")
        let rootOne = fleet.root.appendingPathComponent("root-1.json").path
        try await cli.run([
            "root", "init", "--root-key", alice.pub, "--root-key", bob.pub, "--root-threshold", "2", "--release-key", ci.pub, "--out", rootOne,
        ])
        try await cli.run(["root", "sign", "--key", alice.key, rootOne])

        // Signed by one root key of two, the file is refused as a pin, before anything is written.
        try await fleet.startController()
        let halfSigned = try await fleet.runEnroll(name: "early", caFile: nil, trustRoot: rootOne)
        #expect(halfSigned.status != 0)
        #expect(halfSigned.stderr.contains("not signed by enough of its own root keys"), "\(halfSigned.stderr)")
        #expect(!FileManager.default.fileExists(atPath: fleet.root.appendingPathComponent("early/agent.json").path))
        await fleet.controller.stop()

        // Fully signed, the controller pins it (`serve --trust-root`): the operator key it was started with before no
        // longer counts, CI's key does.
        try await cli.run(["root", "sign", "--key", bob.key, rootOne])
        try await fleet.controller.start(trustRoot: rootOne)
        let v1Archive = try fleet.makeArtifact(version: "1.0.0")
        let v1Artifact = try await fleet.controller.upload(v1Archive, token: fleet.operatorToken)
        let byOperatorKey = try fleet.release(serial: 1, version: "1.0.0", artifact: v1Artifact, port: 0)
        let (refusedStatus, refusedBody) = try await fleet.controller.publish(byOperatorKey, token: fleet.operatorToken)
        #expect(refusedStatus == 422 && refusedBody.contains("untrusted_key"), "\(refusedStatus) \(refusedBody)")
        let byCI = try fleet.release(serial: 1, version: "1.0.0", artifact: v1Artifact, port: 0, signer: try SigningKey(contentsOf: ci.key))
        let (status, body) = try await fleet.controller.publish(byCI, token: fleet.operatorToken)
        #expect(status == 201, "\(body)")

        // The agent pins the same file at enroll: its config names the root, not keys.
        let port = try freeLoopbackPort()
        let config = try await fleet.enrollAgent(name: "edge-1", instanceEnv: ["PORT": "\(port)"], trustRoot: rootOne)
        let configJSON = try JSONValue.parse(Array(try Data(contentsOf: URL(fileURLWithPath: config))))
        #expect(configJSON["trustRoot"]?.stringValue == rootOne, "\(configJSON)")
        #expect(configJSON["trustedKeys"]?.arrayValue.isEmpty ?? true, "\(configJSON)")
        // ... and its digest beside its state (`TrustPin`), which the agent checks the file against at every start.
        let pin = try JSONValue.parse(Array(try Data(contentsOf: fleet.root.appendingPathComponent("edge-1/state/trust-pin.json"))))
        #expect(pin["trustRootSha256"]?.stringValue == SHA256.hash(Array(try Data(contentsOf: URL(fileURLWithPath: rootOne)))).description)
        _ = try fleet.startAgent(config: config, label: "agent")
        try await eventually("v1 serving", timeout: .seconds(90)) { await fleet.appAnswer(port: port)?.hasPrefix("1.0.0") == true ? true : nil }
        try await eventually("the agent reports trust root 1") { () -> Bool? in
            let agent = try await fleet.controller.fleet(token: fleet.viewerToken)["agents"]?.arrayValue.first
            return agent?["trustRoot"]?["version"]?.intValue == 1 ? true : nil
        }

        // Root 1 starts the controller's chain; root 2, made from the controller's newest root by `root rotate`,
        // replaces CI's release key. Both root keys sign it (the threshold of root 1 and of root 2 alike).
        try await cli.run(["root", "publish", rootOne] + cli.controller)
        let rootTwo = fleet.root.appendingPathComponent("root-2.json").path
        let rotated = try await cli.run(
            ["root", "rotate", "--remove-release-key", ci.pub, "--add-release-key", ciNext.pub, "--out", rootTwo, "--trust-root", rootOne]
                + cli.controller
        )
        #expect(rotated.stdout.contains("trust root version 2"), "\(rotated.stdout)")
        try await cli.run(["root", "sign", "--key", alice.key, "--key", bob.key, rootTwo])
        try await cli.run(["root", "publish", rootTwo] + cli.controller)
        try await eventually("the agent reports trust root 2") { () -> Bool? in
            let agent = try await fleet.controller.fleet(token: fleet.viewerToken)["agents"]?.arrayValue.first
            return agent?["trustRoot"]?["version"]?.intValue == 2 ? true : nil
        }
        // The agent keeps the roots it accepted after its pin (root 2) next to its state.
        let stored = try JSONValue.parse(Array(try Data(contentsOf: fleet.root.appendingPathComponent("edge-1/state/trust-root.json"))))
        let chain = try stored["chain"]?.arrayValue.map { try TrustedRoot.decode(try Envelope(json: $0, path: "chain")).version }
        #expect(chain == [2], "\(stored)")

        // CI's old key is revoked; the new one's release rolls out.
        let v2Archive = try fleet.makeArtifact(version: "2.0.0")
        let v2Artifact = try await fleet.controller.upload(v2Archive, token: fleet.operatorToken)
        let oldKey = try fleet.release(serial: 2, version: "2.0.0", artifact: v2Artifact, port: 0, signer: try SigningKey(contentsOf: ci.key))
        let (oldStatus, oldBody) = try await fleet.controller.publish(oldKey, token: fleet.operatorToken)
        #expect(oldStatus == 422 && oldBody.contains("untrusted_key"), "\(oldStatus) \(oldBody)")
        let newKey = try fleet.release(serial: 2, version: "2.0.0", artifact: v2Artifact, port: 0, signer: try SigningKey(contentsOf: ciNext.key))
        let (newStatus, newBody) = try await fleet.controller.publish(newKey, token: fleet.operatorToken)
        #expect(newStatus == 201, "\(newBody)")
        try await eventually("v2 serving", timeout: .seconds(90)) { await fleet.appAnswer(port: port)?.hasPrefix("2.0.0") == true ? true : nil }

        // Started again with --trusted-key instead of the root file, the controller refuses to serve: the stored roots
        // do not follow from that pin.
        await fleet.controller.stop()
        let wrongPin = try await CommandRunner.run(
            CommandRunner.Request(
                executable: TestPaths.executable("ferry-controller"),
                arguments: [
                    "serve", "--listen", "127.0.0.1:0", "--data-dir", fleet.controller.dataDir.path, "--trusted-key", fleet.operatorPublicKeyPath,
                ],
                environment: ["PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": fleet.root.path],
                timeout: .seconds(60)
            )
        )
        let stderr = String(decoding: wrongPin.standardError, as: UTF8.self)
        #expect(wrongPin.termination != .exited(0), "\(stderr)")
        #expect(stderr.contains("do not follow from the root it pins"), "\(stderr)")
    }

    // MARK: Approval

    private func approve(_ fleet: FleetFixture) async throws {
        try await fleet.startController()
        let cli = OperatorCLI(fleet: fleet)
        let port = try freeLoopbackPort()
        try await fleet.publish(serial: 1, version: "1.0.0", port: 0)
        let config = try await fleet.enrollAgent(name: "edge-1", instanceEnv: ["PORT": "\(port)"])
        _ = try fleet.startAgent(config: config, label: "agent")
        try await eventually("v1 serving", timeout: .seconds(90)) { await fleet.appAnswer(port: port)?.hasPrefix("1.0.0") == true ? true : nil }

        // Root 2: CI's key and Alice's key may sign releases, two of them must.
        let rootKey = try await cli.keygen("root")
        let ciKey = try await cli.keygen("ci")
        let aliceKey = try await cli.keygen("alice")
        let rootFile = fleet.root.appendingPathComponent("root-2.json").path
        try await cli.run([
            "root", "init", "--version", "2", "--root-key", rootKey.pub, "--release-key", ciKey.pub, "--release-key", aliceKey.pub,
            "--release-threshold", "2", "--out", rootFile,
        ])
        try await cli.run(["root", "sign", "--key", fleet.operatorKeyPath, "--key", rootKey.key, rootFile])
        try await cli.run(["root", "publish", rootFile] + cli.controller)
        try await eventually("the agent reports trust root 2") { () -> Bool? in
            let agent = try await fleet.controller.fleet(token: fleet.viewerToken)["agents"]?.arrayValue.first
            return agent?["trustRoot"]?["version"]?.intValue == 2 ? true : nil
        }

        // CI publishes v2 signed by its key alone: stored, awaiting approval.
        let archive = try fleet.makeArtifact(version: "2.0.0")
        let artifact = try await fleet.controller.upload(archive, token: fleet.operatorToken)
        let envelope = try fleet.release(serial: 2, version: "2.0.0", artifact: artifact, port: 0, signer: try SigningKey(contentsOf: ciKey.key))
        let (status, body) = try await fleet.controller.publish(envelope, token: fleet.operatorToken)
        #expect(status == 201 && body.contains("\"awaitingApproval\":true"), "\(status) \(body)")

        // `status` shows it, with the key that signed; the agent's desired state still holds serial 1 only.
        let statusOutput = try await cli.run(["status"] + cli.controller)
        let ciKeyID = try PublicKey(contentsOf: ciKey.pub).keyID
        #expect(statusOutput.stdout.contains("awaiting approval: web serial 2 (2.0.0)"), "\(statusOutput.stdout)")
        #expect(statusOutput.stdout.contains("1 of 2 signatures (signed by \(ciKeyID.prefix(12)))"), "\(statusOutput.stdout)")
        let agentID = try Self.agentID(config: config)
        let agentToken = try String(contentsOfFile: fleet.root.appendingPathComponent("edge-1/state/agent.token").path, encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let desired = try DesiredState(json: try await fleet.controller.get("/v1/agents/\(agentID)/desired-state", token: agentToken))
        #expect(try desired.releases.map { try Release.decode($0.payload).serial } == [1])
        #expect(desired.rootVersion == 2)

        // Without a terminal and without --yes nothing is signed; with --yes the plan is shown, then the signature sent.
        // The approver checks the controller's chain from the key the fleet trusted before root 2 (`--trusted-key`).
        let pin = ["--trusted-key", fleet.operatorPublicKeyPath]
        let unconfirmed = try await cli.run(
            ["approve", "--service", "web", "--serial", "2", "--key", aliceKey.key] + pin + cli.controller,
            expectSuccess: false
        )
        #expect(unconfirmed.stderr.contains("pass --yes"), "\(unconfirmed.stderr)")
        let approved = try await cli.run(["approve", "--service", "web", "--serial", "2", "--key", aliceKey.key, "--yes"] + pin + cli.controller)
        // The first signer as verified on the approver's machine, not as the controller names it.
        #expect(approved.stdout.contains("(signed by \(ciKeyID.prefix(12)), verified here against trust root version 2)"), "\(approved.stdout)")
        #expect(approved.stdout.contains("edge-1 (now serial 1, version 1.0.0):"), "\(approved.stdout)")
        #expect(approved.stdout.contains("approved: serial 2 of web has 2 of 2 signatures"), "\(approved.stdout)")

        try await eventually("v2 serving after the approval", timeout: .seconds(90)) {
            await fleet.appAnswer(port: port)?.hasPrefix("2.0.0") == true ? true : nil
        }
        let events = try await fleet.controller.get("/v1/events?service=web", token: fleet.viewerToken)
        #expect(events["events"]?.arrayValue.contains { $0["kind"]?.stringValue == "approved" } == true, "\(events)")

        // The same for a script: `approve --json --yes` prints the controller's answer and nothing else on stdout.
        let v3 = try fleet.release(serial: 3, version: "3.0.0", artifact: artifact, port: 0, signer: try SigningKey(contentsOf: ciKey.key))
        let (v3Status, v3Body) = try await fleet.controller.publish(v3, token: fleet.operatorToken)
        #expect(v3Status == 201 && v3Body.contains("\"awaitingApproval\":true"), "\(v3Status) \(v3Body)")
        let scripted = try await cli.run(
            ["approve", "--service", "web", "--serial", "3", "--key", aliceKey.key, "--yes", "--json"] + pin + cli.controller
        )
        let answer = try JSONValue.parse(Array(scripted.stdout.utf8))
        #expect(answer["serial"]?.intValue == 3 && answer["awaitingApproval"]?.boolValue == false, "\(scripted.stdout)")
        let aliceKeyID = try PublicKey(contentsOf: aliceKey.pub).keyID
        #expect(Set(answer["signedBy"]?.arrayValue.compactMap(\.stringValue) ?? []) == [ciKeyID, aliceKeyID], "\(scripted.stdout)")
        #expect(answer["rollout"]?["state"]?.stringValue != nil, "\(scripted.stdout)")

        // A rollback signed by one key under the two-person rule is stored, not live: the CLI must not say "rolled back".
        // v1 was signed by the key root 1 (the flags) trusts and root 2 no longer counts: re-signed only when asked.
        let unasked = try await cli.run(
            ["rollback", "--service", "web", "--to-version", "1.0.0", "--key", ciKey.key] + pin + cli.controller,
            expectSuccess: false
        )
        #expect(unasked.stderr.contains("that the newest root (version 2) no longer counts"), "\(unasked.stderr)")
        #expect(unasked.stderr.contains("--allow-earlier-keys"), "\(unasked.stderr)")
        let rollback = try await cli.run(
            ["rollback", "--service", "web", "--to-version", "1.0.0", "--key", ciKey.key, "--allow-earlier-keys"] + pin + cli.controller
        )
        #expect(
            rollback.stdout.contains("NOT rolled back yet: the rollback of service web to version 1.0.0 (serial 1) is stored as serial 4"),
            "\(rollback.stdout)"
        )
        #expect(rollback.stdout.contains("awaiting approval: signed by 1 of the 2 release key(s) required"), "\(rollback.stdout)")
        #expect(!rollback.stdout.contains("rolled back service"), "\(rollback.stdout)")

        // A release that expired while it waited: refused before the plan is reviewed or anything is signed.
        let short = try fleet.release(
            serial: 5,
            version: "5.0.0",
            artifact: artifact,
            port: 0,
            signer: try SigningKey(contentsOf: ciKey.key),
            expiresIn: 10
        )
        // Ten seconds to publish it in (a loaded machine), then waited out to its expiry, not for a fixed time.
        let (shortStatus, shortBody) = try await fleet.controller.publish(short, token: fleet.operatorToken)
        #expect(shortStatus == 201 && shortBody.contains("\"awaitingApproval\":true"), "\(shortStatus) \(shortBody)")
        let expiry = try Release.decode(short.payload).expiresAt
        while Date() <= expiry { try await Task.sleep(for: .milliseconds(200)) }
        let expired = try await cli.run(
            ["approve", "--service", "web", "--serial", "5", "--key", aliceKey.key, "--yes"] + pin + cli.controller,
            expectSuccess: false
        )
        #expect(expired.stderr.contains("serial 5 of web expired at "), "\(expired.stderr)")
        #expect(expired.stderr.contains("nothing signed"), "\(expired.stderr)")
        #expect(!expired.stdout.contains("approved"), "\(expired.stdout)")

        // `root show --json` without a file: the controller's chain as it serves it.
        let chain = try JSONValue.parse(Array(try await cli.run(["root", "show", "--json"] + cli.controller).stdout.utf8))
        #expect(chain["roots"]?.arrayValue.compactMap { $0["version"]?.intValue } == [2], "\(chain)")
    }

    private static func agentID(config: String) throws -> String {
        let json = try JSONValue.parse(Array(try Data(contentsOf: URL(fileURLWithPath: config))))
        guard let id = json["agentId"]?.stringValue else { throw HarnessError("no agentId in \(config)") }
        return id
    }
}

/// The real `ferry-controller` operator CLI, run as a child process.
struct OperatorCLI {
    let fleet: FleetFixture

    struct Output {
        var stdout: String
        var stderr: String
    }

    /// `--controller URL --token OPERATOR`.
    var controller: [String] { ["--controller", fleet.controller.url, "--token", fleet.operatorToken] }

    /// `ferry-controller keygen --out <root>/<name>`: the two files.
    func keygen(_ name: String) async throws -> (key: String, pub: String) {
        let prefix = fleet.root.appendingPathComponent(name).path
        try await run(["keygen", "--out", prefix])
        return (prefix + ".key", prefix + ".pub")
    }

    @discardableResult
    func run(_ arguments: [String], expectSuccess: Bool = true) async throws -> Output {
        let result = try await CommandRunner.run(
            CommandRunner.Request(
                executable: TestPaths.executable("ferry-controller"),
                arguments: arguments,
                environment: ["PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": fleet.root.path],
                workingDirectory: fleet.root.path,
                timeout: .seconds(60)
            )
        )
        let output = Output(
            stdout: String(decoding: result.standardOutput, as: UTF8.self),
            stderr: String(decoding: result.standardError, as: UTF8.self)
        )
        if expectSuccess, result.termination != .exited(0) {
            throw HarnessError(
                "ferry-controller \(arguments.prefix(3).joined(separator: " ")) failed (\(result.termination)): \(output.stderr) \(output.stdout)"
            )
        }
        if !expectSuccess, result.termination == .exited(0) {
            throw HarnessError("ferry-controller \(arguments.prefix(3).joined(separator: " ")) succeeded, expected a refusal: \(output.stdout)")
        }
        return output
    }
}
