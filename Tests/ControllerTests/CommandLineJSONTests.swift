import Foundation
import Shared
import TestSupport
import Testing

@testable import Controller

/// `--json` of every operator command, run as the built binary against a live controller, parsed, and checked for the
/// field names docs/controller.md promises. (`publish`, `rollout wait`, `status`, `agents show`, `releases` and
/// `events` are also parsed with real agents in AgentTests' InsightEndToEndTests.)
@Suite struct CommandLineJSONTests {
    static func json(_ run: CommandLineEndToEndTests.Run, _ what: String) throws -> JSONValue {
        guard run.status == 0 else { throw FixtureError("\(what) exited \(run.status): \(run.errors)") }
        do {
            return try JSONValue.parse(Array(run.output.utf8))
        } catch {
            throw FixtureError("\(what) --json printed something that is not JSON (\(error)): \(run.output)")
        }
    }

    static func keys(_ value: JSONValue?) -> Set<String> { Set(value?.object?.keys.map { $0 } ?? []) }

    @Test func everyOperatorCommandPrintsParsableJSONWithItsDocumentedFields() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-cli-json") { directory in
            let cli = CommandLineEndToEndTests.cli
            let data = directory.appendingPathComponent("data").path
            let keyPrefix = directory.appendingPathComponent("operator").path

            // keygen
            let keygen = try Self.json(try await cli(["keygen", "--out", keyPrefix, "--json"], [:], nil), "keygen")
            #expect(Self.keys(keygen) == ["keyId", "privateKey", "publicKey"])
            #expect(keygen.object?["publicKey"] == .string(keyPrefix + ".pub"))
            let keyID = try #require(keygen.object?["keyId"].map(FleetDocument.text))

            // token create / list / revoke
            let created = try Self.json(
                try await cli(["token", "create", "--data-dir", data, "--role", "operator", "--name", "ci", "--json"], [:], nil),
                "token create"
            )
            let operatorToken = try #require(created.object?["token"].map(FleetDocument.text))
            #expect(Token.isWellFormed(operatorToken))
            #expect(created.object?["name"] == .string("ci") && created.object?["role"] == .string("operator"))
            let spare = try Self.json(
                try await cli(["token", "create", "--data-dir", data, "--role", "viewer", "--name", "spare", "--json"], [:], nil),
                "token create"
            )
            let enroll = try Self.json(
                try await cli(["token", "create", "--data-dir", data, "--role", "enroll", "--any-service", "--json"], [:], nil),
                "token create"
            )
            let listed = try Self.json(try await cli(["token", "list", "--data-dir", data, "--json"], [:], nil), "token list")
            #expect(FleetDocument.array(listed).count == 3, "an array of token records")
            #expect(!"\(listed)".contains(operatorToken), "a listing never shows a secret")
            let revoked = try Self.json(
                try await cli(["token", "revoke", "--data-dir", data, "spare", "--json"], [:], nil),
                "token revoke"
            )
            #expect(revoked.object?["id"] == spare.object?["id"])
            #expect(revoked.object?["revokedAt"] != nil && revoked.object?["revokedAt"] != .null)

            // sign / verify
            let release = Release(
                service: "api",
                serial: 1,
                version: "1.0.0",
                createdAt: Date(),
                expiresAt: Date().addingTimeInterval(86_400),
                artifact: ArtifactReference(url: "https://example.invalid/a.tgz", sha256: SHA256.hash(Array("a".utf8)), size: 1),
                pm2: PM2Config(apps: [PM2App(name: "api", script: "server.js", options: [:])])
            )
            let releaseFile = directory.appendingPathComponent("release.json")
            try Data(release.payload()).write(to: releaseFile)
            let signed = try await cli(["sign", "--key", keyPrefix + ".key", releaseFile.path, "--json"], [:], nil)
            let envelope = try Self.json(signed, "sign")
            #expect(Self.keys(envelope).isSuperset(of: ["payload", "payloadType", "signatures"]))
            let envelopeFile = directory.appendingPathComponent("envelope.json")
            try Data(signed.output.utf8).write(to: envelopeFile)
            let verified = try Self.json(
                try await cli(["verify", "--trusted-key", keyPrefix + ".pub", envelopeFile.path, "--json"], [:], nil),
                "verify"
            )
            #expect(Self.keys(verified) == ["valid", "service", "serial", "version", "expiresAt", "verifiedBy"])
            #expect(verified.object?["verifiedBy"] == .array([.string(keyID)]))
            let otherKey = directory.appendingPathComponent("other").path
            _ = try await cli(["keygen", "--out", otherKey], [:], nil)
            let refused = try await cli(["verify", "--trusted-key", otherKey + ".pub", envelopeFile.path, "--json"], [:], nil)
            #expect(refused.status == 1)
            let refusal = try JSONValue.parse(Array(refused.output.utf8))
            #expect(refusal.object?["valid"] == .bool(false))
            let reason = FleetDocument.text(refusal.object?["error"])
            #expect(reason.contains("untrusted") || reason.contains("key"), "\(reason)")

            // A live controller for the rest.
            let server = try await ServerProcess(
                arguments: ["--data-dir", data, "--trusted-key", keyPrefix + ".pub", "--poll-seconds", "5"],
                logDirectory: directory
            )
            defer { server.stop() }
            // `FERRY_TRUSTED_KEYS`: what `rollback` checks the release it re-signs against (the keys the controller trusts).
            let environment = [
                "FERRY_CONTROLLER_URL": server.baseURL, "FERRY_TOKEN": operatorToken, "FERRY_KEY": keyPrefix + ".key",
                "FERRY_TRUSTED_KEYS": keyPrefix + ".pub",
            ]
            let artifactV1 = try await CommandLineEndToEndTests.makeArtifact(in: directory, version: "1.0.0")
            let artifactV2 = try await CommandLineEndToEndTests.makeArtifact(in: directory, version: "2.0.0")
            let ecosystem = directory.appendingPathComponent("ecosystem.json")
            try Data(#"{"apps":[{"name":"api","script":"server.js"}]}"#.utf8).write(to: ecosystem)
            func releaseArguments(_ version: String, _ artifact: URL) -> [String] {
                ["--service", "api", "--version", version, "--artifact", artifact.path, "--ecosystem", ecosystem.path]
            }

            // publish: the answer on stdout, progress on stderr.
            let publishRun = try await cli(["publish"] + releaseArguments("1.0.0", artifactV1) + ["--json"], environment, nil)
            let published = try Self.json(publishRun, "publish")
            #expect(published.object?["serial"] == .integer(1) && published.object?["artifactUploaded"] == .bool(true))
            #expect(publishRun.errors.contains("uploading api-1.0.0.tar.gz"))

            // An agent for plan, agents and the staged rollout.
            let http = LiveHTTP()
            let enrolled = try await http.send(
                "POST",
                server.baseURL + "/v1/agents",
                token: FleetDocument.text(enroll.object?["token"]),
                body: EnrollRequest(name: "web-1", hostname: "web-1.internal", services: ["api"]).json.encoded()
            )
            #expect(enrolled.status == 201)
            let agents = try Self.json(try await cli(["agents", "--json"], environment, nil), "agents")
            #expect(FleetDocument.text(FleetDocument.array(agents).first?.object?["name"]) == "web-1", "an array of fleet agents")

            // plan
            let plan = try Self.json(try await cli(["plan"] + releaseArguments("2.0.0", artifactV2) + ["--json"], environment, nil), "plan")
            #expect(Self.keys(plan) == ["service", "serial", "version", "agents", "firstInstall"])
            let planned = try #require(FleetDocument.array(plan.object?["agents"]).first?.object)
            #expect(planned["name"] == .string("web-1"))
            #expect(planned["diff"]?.object?["versionTo"] == .string("2.0.0"))

            // A staged release, then rollout status / pause / resume / abort.
            let staged = try await cli(
                ["publish"] + releaseArguments("2.0.0", artifactV2) + ["--strategy", "one-at-a-time", "--json"],
                environment,
                nil
            )
            #expect(try Self.json(staged, "publish").object?["serial"] == .integer(2))
            let rollout = try Self.json(try await cli(["rollout", "status", "--service", "api", "--json"], environment, nil), "rollout status")
            #expect(FleetDocument.array(rollout.object?["rollouts"]).first?.object?["state"] == .string("rolling"))
            for (action, state) in [("pause", "paused"), ("resume", "rolling"), ("abort", "aborted")] {
                let answer = try Self.json(try await cli(["rollout", action, "--service", "api", "--json"], environment, nil), "rollout \(action)")
                #expect(answer.object?["state"] == .string(state), "rollout \(action)")
            }
            // rollout wait on the aborted rollout: exit 1 with the JSON verdict.
            let wait = try await cli(["rollout", "wait", "--service", "api", "--serial", "2", "--timeout", "10s", "--json"], environment, nil)
            #expect(wait.status == 1)
            let verdict = try JSONValue.parse(Array(wait.output.utf8))
            #expect(Self.keys(verdict) == ["result", "service", "serial", "state", "message", "failures", "rollout"])
            #expect(verdict.object?["result"] == .string("failed") && verdict.object?["state"] == .string("aborted"))

            // releases, events, status, agents show.
            let releases = try Self.json(try await cli(["releases", "--service", "api", "--json"], environment, nil), "releases")
            let newest = try #require(FleetDocument.array(releases.object?["releases"]).first?.object)
            #expect(Set(newest.keys) == ["serial", "version", "artifact", "publishedBy", "keyIds", "createdAt", "rollout"])
            #expect(newest["publishedBy"] == .string("ci") && newest["keyIds"] == .array([.string(keyID)]))
            #expect(newest["rollout"]?.object?["state"] == .string("aborted"))
            let events = try await cli(["events", "--service", "api", "--json"], environment, nil)
            #expect(events.status == 0, "\(events.errors)")
            let kinds = try events.output.split(separator: "\n").map { try JSONValue.parse(Array($0.utf8)).object?["kind"] }
            #expect(kinds.contains(.string("published")) && kinds.contains(.string("aborted")), "\(kinds)")
            let status = try Self.json(try await cli(["status", "--json"], environment, nil), "status")
            #expect(FleetDocument.agents(status).first?["name"] == .string("web-1"))
            let show = try Self.json(try await cli(["agents", "show", "web-1", "--json"], environment, nil), "agents show")
            #expect(Self.keys(show).isSuperset(of: ["id", "name", "hostname", "services", "reports", "stale", "lastSeen"]))

            // rollback, then agents remove.
            let rollback = try Self.json(
                try await cli(["rollback", "--service", "api", "--to-serial", "1", "--json"], environment, nil),
                "rollback"
            )
            #expect(rollback.object?["serial"] == .integer(3))
            #expect(rollback.object?["rolledBackTo"] == .object(["serial": .integer(1), "version": .string("1.0.0")]))
            let removed = try Self.json(try await cli(["agents", "remove", "web-1", "--json"], environment, nil), "agents remove")
            #expect(removed.object?["removed"]?.object?["name"] == .string("web-1"))
        }
    }
}
