import Foundation
import Shared
import TestSupport
import Testing

@testable import Controller

/// The built `ferry-controller` binary end to end: keygen, token create, serve, publish, status, agents, rollback,
/// restart.
@Suite struct CommandLineEndToEndTests {
    struct Run {
        var status: Int32
        var output: String
        var errors: String
    }

    /// Runs the built `ferry-controller` (or `executable`, which gets `arguments` as they are) without the test
    /// process's FERRY_ variables.
    static func cli(_ arguments: [String], environment extra: [String: String] = [:], executable: String? = nil) async throws -> Run {
        var environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("FERRY_") }
        environment.merge(extra) { _, new in new }
        let result = try await CommandRunner.run(
            CommandRunner.Request(
                executable: executable ?? TestPaths.executable("ferry-controller"),
                arguments: arguments,
                environment: environment,
                standardErrorLimit: 16 << 20,
                timeout: .seconds(120)
            )
        )
        let status: Int32 =
            switch result.termination {
            case .exited(let code): code
            case .signalled(let signal): 128 + signal
            }
        return Run(
            status: status,
            output: String(decoding: result.standardOutput, as: UTF8.self),
            errors: String(decoding: result.standardError, as: UTF8.self)
        )
    }

    /// A real gzip'd tarball of a tiny Node service.
    static func makeArtifact(in directory: URL, version: String) async throws -> URL {
        let tree = directory.appendingPathComponent("tree-\(version)")
        try FileManager.default.createDirectory(at: tree, withIntermediateDirectories: true)
        try Data("require('http').createServer((q, s) => s.end('\(version)')).listen(process.env.PORT)\n".utf8)
            .write(to: tree.appendingPathComponent("server.js"))
        try Data(#"{"name":"api","version":"\#(version)"}"#.utf8).write(to: tree.appendingPathComponent("package.json"))
        let archive = directory.appendingPathComponent("api-\(version).tar.gz")
        // The controller treats artifacts as opaque bytes; a real tarball keeps the test honest for the agent later.
        let tar = try await CommandRunner.run(
            CommandRunner.Request(
                executable: "/usr/bin/tar",
                arguments: ["-czf", archive.path, "-C", tree.path, "."],
                environment: ProcessInfo.processInfo.environment,
                timeout: .seconds(60)
            )
        )
        guard tar.termination == .exited(0) else { throw FixtureError("tar failed: \(String(decoding: tar.standardError, as: UTF8.self))") }
        return archive
    }

    @Test func publishStatusRollbackAndRestart() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-cli-e2e") { directory in
            let data = directory.appendingPathComponent("data").path
            let keyPrefix = directory.appendingPathComponent("operator").path
            let keygen = try await Self.cli(["keygen", "--out", keyPrefix])
            #expect(keygen.status == 0, "\(keygen.errors)")
            func token(_ role: String) async throws -> String {
                let scope = role == "enroll" ? ["--any-service"] : []
                let run = try await Self.cli(["token", "create", "--data-dir", data, "--role", role, "--name", "ci-\(role)"] + scope)
                #expect(run.status == 0, "\(run.errors)")
                let text = run.output.trimmingCharacters(in: .whitespacesAndNewlines)
                #expect(Token.isWellFormed(text))
                return text
            }
            let operatorToken = try await token("operator")
            let enrollToken = try await token("enroll")
            let badRole = try await Self.cli(["token", "create", "--data-dir", data, "--role", "agent"])
            #expect(badRole.status != 0)
            #expect(badRole.errors.contains("--role must be one of operator, enroll, viewer"))

            let serveArguments = ["--data-dir", data, "--trusted-key", keyPrefix + ".pub", "--poll-seconds", "5"]
            var server = try await ServerProcess(arguments: serveArguments, logDirectory: directory)
            defer { server.stop() }

            let artifactV1 = try await Self.makeArtifact(in: directory, version: "1.0.0")
            let artifactV2 = try await Self.makeArtifact(in: directory, version: "2.0.0")
            let javascript = directory.appendingPathComponent("ecosystem.config.js")
            try Data(
                """
                module.exports = {
                  apps: [{
                    name: "api", script: "server.js", cwd: __dirname, out_file: "/var/log/api.log", instances: 2, exec_mode: "cluster",
                    env: { PORT: 3000, VERBOSE: false }, env_production: { NODE_ENV: "production" }
                  }, { name: "worker", script: "worker.js" }]
                };
                """.utf8
            ).write(to: javascript)
            let yaml = directory.appendingPathComponent("ecosystem.yaml")
            try Data("apps:\n  - name: api\n    script: server.js\n    env:\n      PORT: 3000\n".utf8).write(to: yaml)

            // Publish through the environment twins.
            // `FERRY_TRUSTED_KEYS`: what `rollback` checks the release it re-signs against (the keys the controller trusts).
            let environment = [
                "FERRY_CONTROLLER_URL": server.baseURL, "FERRY_TOKEN": operatorToken, "FERRY_KEY": keyPrefix + ".key",
                "FERRY_TRUSTED_KEYS": keyPrefix + ".pub",
            ]
            let first = try await Self.cli(
                [
                    "publish", "--service", "api", "--version", "1.0.0", "--artifact", artifactV1.path, "--ecosystem", javascript.path,
                    "--app", "api", "--env-name", "production", "--env", "REGION=eu-west-1",
                ],
                environment: environment
            )
            #expect(first.status == 0, "\(first.errors)")
            #expect(first.output.contains("published service api serial 1 version 1.0.0"))
            #expect(first.output.contains("uploading api-1.0.0.tar.gz: 100%"))
            #expect(first.errors.contains("warning: apps[0].out_file: dropped: Ferry owns log paths"), "\(first.errors)")

            // And through flags, with a YAML ecosystem.
            let second = try await Self.cli([
                "publish", "--controller", server.baseURL, "--token", operatorToken, "--key", keyPrefix + ".key", "--service", "api",
                "--version", "2.0.0", "--artifact", artifactV2.path, "--ecosystem", yaml.path, "--expires-in", "30d",
            ])
            #expect(second.status == 0, "\(second.errors)")
            #expect(second.output.contains("published service api serial 2 version 2.0.0"))

            // What agents receive is exactly what was signed, with PM2's env coerced to strings.
            let http = LiveHTTP()
            let listing = try await http.send("GET", server.baseURL + "/v1/services/api/releases", token: operatorToken)
            let releases = try FleetDocument.array(JSONValue.parse(listing.body).object?["releases"]).map {
                try RollbackCommand.release(from: $0).release
            }
            #expect(releases.map(\.serial) == [2, 1])
            let v1 = releases[1]
            #expect(v1.pm2.apps.map(\.name) == ["api"])
            #expect(
                v1.pm2.apps[0].options["env"] == .object(["PORT": .string("3000"), "VERBOSE": .string("false"), "NODE_ENV": .string("production")])
            )
            #expect(v1.pm2.apps[0].options["cwd"] == nil)
            #expect(v1.env == ["REGION": "eu-west-1"])
            #expect(v1.artifact.sha256 == (try SHA256.hash(fileAt: artifactV1.path)).digest)

            // An agent reports; status and agents show it.
            let enrolled = try await http.send(
                "POST",
                server.baseURL + "/v1/agents",
                token: enrollToken,
                body: EnrollRequest(name: "web-1", hostname: "web-1.internal", services: ["api"]).json.encoded()
            )
            let agent = try EnrollResponse(json: JSONValue.parse(enrolled.body))
            let report = StatusReport(
                agentVersion: "0.1.0",
                hostname: "web-1.internal",
                processManager: "builtin",
                services: [
                    ServiceStatus(
                        service: "api",
                        serial: 2,
                        version: "2.0.0",
                        targetSerial: 2,
                        phase: .running,
                        message: "healthy for 10s",
                        health: .healthy,
                        processes: []
                    )
                ]
            )
            let reported = try await http.send(
                "POST",
                server.baseURL + "/v1/agents/\(agent.agentID)/status",
                token: agent.token,
                body: report.json.encoded()
            )
            #expect(reported.status == 204)

            let status = try await Self.cli(["status", "--service", "api"], environment: environment)
            #expect(status.status == 0, "\(status.errors)")
            let row = try #require(status.output.split(separator: "\n").first { $0.hasPrefix("web-1") })
            #expect(
                row.split(separator: " ", omittingEmptySubsequences: true).prefix(7) == [
                    "web-1", "web-1.internal", "api", "2.0.0", "2", "running", "healthy",
                ]
            )
            #expect(status.output.contains("latest release: api 2.0.0 (serial 2)"))
            let statusJSON = try await Self.cli(["status", "--json"], environment: environment)
            #expect(FleetDocument.agents(try JSONValue.parse(Array(statusJSON.output.utf8))).first?["name"] == .string("web-1"))
            let agents = try await Self.cli(["agents"], environment: environment)
            #expect(agents.output.contains(agent.agentID))

            // Roll back to 1.0.0: a new serial pointing at the old artifact.
            let rollback = try await Self.cli(["rollback", "--service", "api", "--to-version", "1.0.0"], environment: environment)
            #expect(rollback.status == 0, "\(rollback.errors)")
            #expect(rollback.output.contains("rolled back service api to version 1.0.0 (serial 1) as serial 3"))
            let afterRollback = try await http.send("GET", server.baseURL + "/v1/services/api/releases", token: operatorToken)
            let rolled = try FleetDocument.array(JSONValue.parse(afterRollback.body).object?["releases"]).map {
                try RollbackCommand.release(from: $0).release
            }
            #expect(rolled.first?.serial == 3)
            #expect(rolled.first?.version == "1.0.0")
            #expect(rolled.first?.artifact == v1.artifact)
            #expect(rolled.first?.pm2 == v1.pm2)
            let noop = try await Self.cli(["rollback", "--service", "api", "--to-serial", "3"], environment: environment)
            #expect(noop.status != 0)
            #expect(noop.errors.contains("already the latest release"))

            // Restart: everything is still there, and the agent's token still works.
            #expect(server.stop() == 0, "\(server.log)")
            server = try await ServerProcess(arguments: serveArguments, logDirectory: directory)
            let restartedEnvironment = environment.merging(["FERRY_CONTROLLER_URL": server.baseURL]) { _, new in new }
            let restarted = try await Self.cli(["status", "--service", "api"], environment: restartedEnvironment)
            #expect(restarted.output.contains("latest release: api 1.0.0 (serial 3)"), "\(restarted.output)\(restarted.errors)")
            #expect(restarted.output.contains("web-1"))
            let desired = try await http.send("GET", server.baseURL + "/v1/agents/\(agent.agentID)/desired-state", token: agent.token)
            #expect(desired.status == 200)
            let state = try DesiredState(json: JSONValue.parse(desired.body))
            let verified = try TrustPolicy(trustedKeys: [PublicKey(contentsOf: keyPrefix + ".pub")]).verify(
                state.releases[0],
                expecting: Release.payloadType
            )
            #expect(try Release.decode(verified.payload).serial == 3)
            let artifact = try await http.send("GET", server.baseURL + v1.artifact.url, token: agent.token)
            #expect(artifact.status == 200)
            #expect(SHA256.hash(Array(artifact.body)) == v1.artifact.sha256)
        }
    }

    /// `serve` on a port another server holds exits 1 with the bind error, its store closed: it used to leave SQLite's
    /// connections open ("Closing the store failed: CancellationError()"), which stopped a debug build on SQLiteNIO's
    /// assertion (signal 4) instead.
    @Test func serveOnAPortInUseExitsWithTheError() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-cli-port") { directory in
            let keyPrefix = directory.appendingPathComponent("operator").path
            #expect(try await Self.cli(["keygen", "--out", keyPrefix]).status == 0)
            let first = try await ServerProcess(
                arguments: ["--data-dir", directory.appendingPathComponent("first").path, "--trusted-key", keyPrefix + ".pub"],
                logDirectory: directory
            )
            defer { first.stop() }
            let port = try #require(first.baseURL.split(separator: ":").last.map(String.init))
            let second = try await Self.cli([
                "serve", "--listen", "127.0.0.1:\(port)", "--data-dir", directory.appendingPathComponent("second").path,
                "--trusted-key", keyPrefix + ".pub",
            ])
            #expect(second.status == 1, "\(second.errors)")
            #expect(second.errors.contains("Address already in use"), "\(second.errors)")
            #expect(!second.errors.contains("Closing the store failed"), "\(second.errors)")
            #expect(try await LiveHTTP().send("GET", first.baseURL + "/healthz").status == 200, "the first server still answers")
        }
    }

    @Test func publishRefusesABadEnvFileNamingItsLineBeforeUploadingAnything() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-cli-env") { directory in
            let artifact = try await Self.makeArtifact(in: directory, version: "1.0.0")
            let ecosystem = directory.appendingPathComponent("ecosystem.yaml")
            try Data("apps:\n  - name: api\n    script: server.js\n".utf8).write(to: ecosystem)
            let key = directory.appendingPathComponent("k").path
            _ = try await Self.cli(["keygen", "--out", key])
            let envFile = directory.appendingPathComponent("release.env")
            // Nothing listens on port 9: an attempt to upload would fail with a connection error instead.
            let publish = [
                "publish", "--controller", "http://127.0.0.1:9", "--token", Token.generate(), "--key", key + ".key", "--service", "api",
                "--version", "1", "--artifact", artifact.path, "--ecosystem", ecosystem.path, "--env-file", envFile.path,
            ]
            for (text, message) in [
                ("A=1\r\nB='x'\r\nA=2\r\n", "\(envFile.path):3: A is set twice (first on line 1)"),
                ("A=\"s3cr3t\\q\"\n", "\(envFile.path):1: unknown escape at column 10"),
            ] {
                try Data(text.utf8).write(to: envFile)
                let run = try await Self.cli(publish)
                #expect(run.status == 1)
                #expect(run.errors.contains(message), "\(run.errors)")
                #expect(!run.errors.contains("s3cr3t") && !run.errors.contains("127.0.0.1:9"), "\(run.errors)")
            }
        }
    }

    /// A `serve` process on a data directory in `directory`, trusting a key made there (`operator.key`), with an
    /// operator token.
    static func startServer(in directory: URL) async throws -> (server: ServerProcess, keyPrefix: String, operatorToken: String) {
        let data = directory.appendingPathComponent("data").path
        let keyPrefix = directory.appendingPathComponent("operator").path
        #expect(try await cli(["keygen", "--out", keyPrefix]).status == 0)
        let created = try await cli(["token", "create", "--data-dir", data, "--role", "operator", "--name", "ci"])
        let operatorToken = created.output.trimmingCharacters(in: .whitespacesAndNewlines)
        let server = try await ServerProcess(arguments: ["--data-dir", data, "--trusted-key", keyPrefix + ".pub"], logDirectory: directory)
        return (server, keyPrefix, operatorToken)
    }

    /// A second `serve` on the data directory of a running one (a mistaken restart, a second unit) refuses to start,
    /// naming the first one's pid, and leaves it serving. It used to start: its artifact store cleared the temporary files
    /// of the first one's uploads in progress, and both wrote the same SQLite database.
    @Test(.timeLimit(.minutes(3)))
    func aSecondServeOnTheSameDataDirectoryRefusesToStart() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-cli-second-serve") { directory in
            let (server, keyPrefix, _) = try await Self.startServer(in: directory)
            defer { server.stop() }
            let data = directory.appendingPathComponent("data").path
            let second = try await Self.cli(["serve", "--listen", "127.0.0.1:0", "--data-dir", data, "--trusted-key", keyPrefix + ".pub"])
            #expect(second.status == 1, "\(second.output) \(second.errors)")
            #expect(
                second.errors.contains("another ferry-controller serve (pid \(server.process.processIdentifier)) uses the data directory \(data)"),
                "\(second.errors)"
            )
            let health = try await LiveHTTP().send("GET", server.baseURL + "/healthz", token: nil)
            #expect(health.status == 200)
        }
    }

    /// The controller's copy of an artifact is damaged (truncated: a partial restore of its data directory). The next
    /// publish of that artifact uploads it again, which replaces it; it used to skip the upload ("already on the
    /// controller"), and every publish then failed on `artifact_size_mismatch`. (The controller now finds the copy
    /// damaged when it checks it against its digest, and answers 404; the CLI's own check of the size is for older
    /// controllers.)
    @Test(.timeLimit(.minutes(3)))
    func publishUploadsAgainOverADamagedCopy() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-cli-damaged") { directory in
            let (server, keyPrefix, operatorToken) = try await Self.startServer(in: directory)
            defer { server.stop() }
            let artifact = try await Self.makeArtifact(in: directory, version: "1.0.0")
            let ecosystem = directory.appendingPathComponent("ecosystem.yaml")
            try Data("apps:\n  - name: api\n    script: server.js\n".utf8).write(to: ecosystem)
            func publish(_ version: String) async throws -> Run {
                try await Self.cli([
                    "publish", "--controller", server.baseURL, "--token", operatorToken, "--key", keyPrefix + ".key", "--service", "api",
                    "--version", version, "--artifact", artifact.path, "--ecosystem", ecosystem.path,
                ])
            }
            let first = try await publish("1.0.0")
            #expect(first.status == 0, "\(first.errors)")
            let bytes = try Data(contentsOf: artifact)
            let copy = directory.appendingPathComponent("data/artifacts/\(SHA256.hash(Array(bytes)).hex)")
            try bytes.prefix(bytes.count / 2).write(to: copy)

            let second = try await publish("1.0.1")
            #expect(second.status == 0, "\(second.errors)")
            #expect(!second.output.contains("is already on the controller"), "\(second.output)")
            #expect(second.output.contains("uploading api-1.0.0.tar.gz: 100%"), "\(second.output)")
            #expect(server.log.contains("do not match its digest"), "\(server.log)")
            #expect(second.output.contains("published service api serial 2 version 1.0.1"), "\(second.output)")
            #expect(try Data(contentsOf: copy) == bytes, "the upload replaced the damaged copy")
        }
    }

    /// The controller's copy of an artifact keeps its size and modification time but not its bytes (one flipped byte:
    /// a disk error, a restore from a bad backup). After a restart the controller checks the copy against its digest the
    /// first time it answers for it: it removes it and answers 404 (a download is refused, not served damaged), and the
    /// next publish uploads the artifact again. The copy used to be served for good: `publish` compares sizes only,
    /// so it never uploaded again, and every agent refused the download.
    @Test(.timeLimit(.minutes(3)))
    func aCopyWhoseBytesDoNotMatchItsDigestIsRemovedAndUploadedAgain() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-cli-flipped") { directory in
            let (server, keyPrefix, operatorToken) = try await Self.startServer(in: directory)
            defer { server.stop() }
            let artifact = try await Self.makeArtifact(in: directory, version: "1.0.0")
            let ecosystem = directory.appendingPathComponent("ecosystem.yaml")
            try Data("apps:\n  - name: api\n    script: server.js\n".utf8).write(to: ecosystem)
            func publish(_ version: String, to controller: ServerProcess) async throws -> Run {
                try await Self.cli([
                    "publish", "--controller", controller.baseURL, "--token", operatorToken, "--key", keyPrefix + ".key", "--service",
                    "api", "--version", version, "--artifact", artifact.path, "--ecosystem", ecosystem.path,
                ])
            }
            let first = try await publish("1.0.0", to: server)
            #expect(first.status == 0, "\(first.errors)")
            #expect(server.stop() == 0)

            let bytes = try Data(contentsOf: artifact)
            let digest = SHA256.hash(Array(bytes)).hex
            let copy = directory.appendingPathComponent("data/artifacts/\(digest)")
            var info = stat()
            #expect(stat(copy.path, &info) == 0)
            var damaged = bytes
            damaged[damaged.count / 2] ^= 0x01
            try damaged.write(to: copy)
            var times = [info.st_atim, info.st_mtim]
            #expect(utimensat(AT_FDCWD, copy.path, &times, 0) == 0, "the copy keeps its modification time")

            let restarted = try await ServerProcess(
                arguments: ["--data-dir", directory.appendingPathComponent("data").path, "--trusted-key", keyPrefix + ".pub"],
                logDirectory: directory
            )
            defer { restarted.stop() }
            let download = try await LiveHTTP().send("GET", restarted.baseURL + "/v1/artifacts/\(digest)", token: operatorToken)
            #expect(download.status == 404, "\(download.status) \(download.body.count) bytes")
            #expect(!FileManager.default.fileExists(atPath: copy.path), "the damaged copy is removed")
            #expect(restarted.log.contains("do not match its digest"), "\(restarted.log)")

            let second = try await publish("1.0.1", to: restarted)
            #expect(second.status == 0, "\(second.errors)")
            #expect(!second.output.contains("is already on the controller"), "\(second.output)")
            #expect(second.output.contains("published service api serial 2 version 1.0.1"), "\(second.output)")
            #expect(try Data(contentsOf: copy) == bytes, "the upload put the right bytes back")
            let again = try await LiveHTTP().send("GET", restarted.baseURL + "/v1/artifacts/\(digest)", token: operatorToken)
            #expect(again.status == 200)
            #expect(again.body == bytes)
        }
    }

    /// A publish whose answers are lost after the controller stored the release (a load balancer's 502): the CLI sends
    /// the same signed release again, and the controller answers the repeat with the stored release. It used to fail
    /// the publish, and a rerun published the same content again under the next serial.
    @Test(.timeLimit(.minutes(3)))
    func publishSurvivesALostAnswer() async throws {
        try await Self.publishLosing(.init(2, of: .post, "/v1/releases"), label: "ferry-cli-lost") { publish, lost, server, operatorToken in
            #expect(publish.status == 0, "\(publish.errors)")
            #expect(publish.output.contains("published service api serial 1 version 1.0.0"), "\(publish.output)")
            #expect(publish.errors.contains("publish attempt 2 failed"), "\(publish.errors)")
            #expect(publish.output.contains("the controller had stored it at the first attempt"), "\(publish.output)")
            #expect(lost == 2)
            let listing = try await LiveHTTP().send("GET", server.baseURL + "/v1/services/api/releases", token: operatorToken)
            let releases = try FleetDocument.array(JSONValue.parse(listing.body).object?["releases"]).map {
                try RollbackCommand.release(from: $0).release
            }
            #expect(releases.map(\.serial) == [1], "published once")
        }
    }

    /// Publishes version 1.0.0 of `api` (a fresh server, key and artifact in a directory of its own) through a proxy
    /// that loses the answers `losing` names, then runs `check` with the publish's run, how many answers the proxy
    /// lost, the server and an operator token.
    static func publishLosing(
        _ losing: RecordingProxy.Losing,
        label: String,
        _ check: (Run, Int, ServerProcess, String) async throws -> Void
    ) async throws {
        try await TestPaths.withTemporaryDirectory(label) { directory in
            let (server, keyPrefix, operatorToken) = try await Self.startServer(in: directory)
            defer { server.stop() }
            let proxy = await RecordingProxy(upstream: server.baseURL, port: try LoopbackPorts.reserve(), losing: losing)
            do {
                let artifact = try await Self.makeArtifact(in: directory, version: "1.0.0")
                let ecosystem = directory.appendingPathComponent("ecosystem.yaml")
                try Data("apps:\n  - name: api\n    script: server.js\n".utf8).write(to: ecosystem)
                let publish = try await Self.cli([
                    "publish", "--controller", proxy.url, "--token", operatorToken, "--key", keyPrefix + ".key", "--service", "api",
                    "--version", "1.0.0", "--artifact", artifact.path, "--ecosystem", ecosystem.path,
                ])
                try await check(publish, proxy.lost, server, operatorToken)
            } catch {
                await proxy.stop()
                throw error
            }
            await proxy.stop()
        }
    }

    /// The answer to the artifact's upload is lost after the controller stored it (a load balancer's idle timeout while
    /// the controller fsyncs a large artifact, or copies it into PostgreSQL): the publish asks what the controller holds,
    /// finds the artifact whole, and publishes. It failed the publish, which a rerun then repaired.
    @Test(.timeLimit(.minutes(3)))
    func publishSurvivesALostUploadAnswer() async throws {
        try await Self.publishLosing(.init(1, of: .post, "/v1/artifacts"), label: "ferry-cli-lost-upload") { publish, lost, _, _ in
            #expect(publish.status == 0, "\(publish.errors)")
            #expect(lost == 1)
            #expect(publish.output.contains("the upload's answer was lost"), "\(publish.output)")
            #expect(publish.output.contains("published service api serial 1 version 1.0.0"), "\(publish.output)")
        }
    }

    /// The answer to the first attempt is lost after the controller stored the release, and the controller cannot be
    /// reached for the next two seconds (it restarts). The publish asks again through the refused connections and ends
    /// with the stored release: the first refused connection used to fail it at once (exit 1, nothing saying the
    /// release may be stored), and a CI job run again then published the same content as serial 2.
    @Test(.timeLimit(.minutes(3)))
    func publishAsksAgainWhileTheControllerRestartsAfterStoring() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-cli-restart") { directory in
            let (server, keyPrefix, operatorToken) = try await Self.startServer(in: directory)
            defer { server.stop() }
            let port = try LoopbackPorts.reserve()
            let first = await RecordingProxy(upstream: server.baseURL, port: port, losing: .init(1, of: .post, "/v1/releases"))
            var second: RecordingProxy?
            do {
                let artifact = try await Self.makeArtifact(in: directory, version: "1.0.0")
                let ecosystem = directory.appendingPathComponent("ecosystem.yaml")
                try Data("apps:\n  - name: api\n    script: server.js\n".utf8).write(to: ecosystem)
                async let publishing = Self.cli([
                    "publish", "--controller", first.url, "--token", operatorToken, "--key", keyPrefix + ".key", "--service", "api",
                    "--version", "1.0.0", "--artifact", artifact.path, "--ecosystem", ecosystem.path,
                ])
                // The answer is lost: the controller behind the address goes away before the retry, 1 s later.
                try await eventually("the first answer lost", timeout: .seconds(60), interval: .milliseconds(20)) { first.lost == 1 ? true : nil }
                await first.stop()
                try await Task.sleep(for: .milliseconds(2500))
                second = await RecordingProxy(upstream: server.baseURL, port: port)
                let publish = try await publishing
                #expect(publish.status == 0, "\(publish.errors)")
                #expect(publish.output.contains("published service api serial 1 version 1.0.0"), "\(publish.output)")
                #expect(publish.output.contains("the controller had stored it at the first attempt"), "\(publish.output)")
                #expect(publish.errors.contains("publish attempt 2 failed"), "\(publish.errors)")
                let listing = try await LiveHTTP().send("GET", server.baseURL + "/v1/services/api/releases", token: operatorToken)
                let releases = try FleetDocument.array(JSONValue.parse(listing.body).object?["releases"]).map {
                    try RollbackCommand.release(from: $0).release
                }
                #expect(releases.map(\.serial) == [1], "published once")
            } catch {
                await first.stop()
                await second?.stop()
                throw error
            }
            await second?.stop()
        }
    }

    /// `rollout wait` in a CI job outlives a load balancer's 502s (a controller restarting, a database failover): it
    /// asks again until its timeout, and exits with the rollout's outcome. It used to exit 1 at the first 502, which a
    /// pipeline reads as a failed rollout. A rollout it cannot watch at all (an unknown serial) exits 3, not 1.
    @Test(.timeLimit(.minutes(3)))
    func rolloutWaitAsksAgainThroughLostAnswers() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-cli-wait") { directory in
            let (server, keyPrefix, operatorToken) = try await Self.startServer(in: directory)
            defer { server.stop() }
            let artifact = try await Self.makeArtifact(in: directory, version: "1.0.0")
            let ecosystem = directory.appendingPathComponent("ecosystem.yaml")
            try Data("apps:\n  - name: api\n    script: server.js\n".utf8).write(to: ecosystem)
            let publish = try await Self.cli([
                "publish", "--controller", server.baseURL, "--token", operatorToken, "--key", keyPrefix + ".key", "--service", "api",
                "--version", "1.0.0", "--artifact", artifact.path, "--ecosystem", ecosystem.path,
            ])
            try #require(publish.status == 0, "\(publish.errors)")
            let proxy = await RecordingProxy(
                upstream: server.baseURL,
                port: try LoopbackPorts.reserve(),
                losing: .init(3, of: .get, "/v1/rollouts/api/1")
            )
            do {
                let wait = try await Self.cli([
                    "rollout", "wait", "--controller", proxy.url, "--token", operatorToken, "--service", "api", "--serial", "1", "--timeout", "60s",
                    "--json",
                ])
                #expect(wait.status == 0, "\(wait.errors)")
                #expect(proxy.lost == 3)
                #expect(wait.errors.contains("cannot look at the rollout") && wait.errors.contains("502"), "\(wait.errors)")
                let verdict = try JSONValue.parse(Array(wait.output.utf8))
                #expect(verdict.object?["result"] == .string("completed"), "\(wait.output)")
                let unknown = try await Self.cli([
                    "rollout", "wait", "--controller", proxy.url, "--token", operatorToken, "--service", "api", "--serial", "99", "--timeout", "60s",
                ])
                #expect(unknown.status == 3, "\(unknown.errors)")
                #expect(unknown.errors.contains("cannot watch the rollout of api serial 99") && unknown.errors.contains("404"), "\(unknown.errors)")
                // No token: it cannot be watched (3, as documented), not a usage error (64, what it exited before).
                let tokenless = try await Self.cli(["rollout", "wait", "--controller", proxy.url, "--service", "api", "--serial", "1"])
                #expect(tokenless.status == 3, "\(tokenless.errors)")
                #expect(tokenless.errors.contains("cannot watch the rollout of api serial 1"), "\(tokenless.errors)")
            } catch {
                server.stop()
                await proxy.stop()
                throw error
            }
            // The server first: `rollout wait`'s event stream is still open through the proxy (the CLI is gone, the
            // forwarded request is not), and the proxy's shutdown would wait out its 120 s timeout.
            server.stop()
            await proxy.stop()
        }
    }

    @Test func publishExplainsAMissingNode() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-cli-node") { directory in
            let ecosystem = directory.appendingPathComponent("ecosystem.config.js")
            try Data("module.exports = { apps: [] }".utf8).write(to: ecosystem)
            let artifact = directory.appendingPathComponent("a.tgz")
            try Data("x".utf8).write(to: artifact)
            let key = directory.appendingPathComponent("k").path
            _ = try await Self.cli(["keygen", "--out", key])
            let run = try await Self.cli(
                [
                    "publish", "--controller", "http://127.0.0.1:9", "--token", Token.generate(), "--key", key + ".key", "--service", "api",
                    "--version", "1", "--artifact", artifact.path, "--ecosystem", ecosystem.path,
                ],
                environment: ["PATH": directory.path]
            )
            #expect(run.status != 0)
            #expect(run.errors.contains("needs node, which is not on PATH"))
        }
    }
}
