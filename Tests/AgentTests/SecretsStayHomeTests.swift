import Foundation
import Shared
import TestSupport
import Testing

/// Issue 9, point 3: nothing of the instance env file leaves the instance. A real controller, a real agent (builtin
/// supervisor) talking to it through a recording proxy, distinctive secrets planted in the instance env file, then a
/// failing health check whose URL uses them, a crashing app that prints them, and a refused release; afterwards every
/// request the agent sent, the controller's database files, `/v1/fleet`, the dashboard and the agent's log are
/// searched for the values — and for the placeholders, so the search can fail.
@Suite("Secrets stay on the instance", .serialized)
struct SecretsStayHomeTests {
    static func random() -> String { String(UInt64.random(in: 1...UInt64.max), radix: 36) }

    @Test("instance env values appear in no report, database file, fleet JSON, dashboard or agent log", .timeLimit(.minutes(6)))
    func secretsNeverLeaveTheInstance() async throws {
        try await FleetFixture.with { fleet in
            let healthToken = "s3cr3t-\(Self.random())-\(Self.random())"
            let dbPassword = "pw-\(Self.random())-\(Self.random())"
            let secrets = [healthToken, dbPassword]

            // The controller also trusts a second key the agent does not: a release signed with it is accepted on
            // publish and refused by the agent.
            let otherKey = try SigningKey.generate()
            let otherPub = fleet.root.appendingPathComponent("other.pub").path
            try KeyFile.create(otherPub, contents: try otherKey.publicKey.pemRepresentation(), mode: 0o644)
            try await fleet.startController(extraArguments: ["--trusted-key", otherPub, "--status-history", "10000"])
            let proxy = await RecordingProxy(upstream: fleet.controller.url, port: try freeLoopbackPort())
            do {
                try await run(fleet, proxy: proxy, healthToken: healthToken, dbPassword: dbPassword, otherKey: otherKey)
                try await search(fleet, proxy: proxy, secrets: secrets)
            } catch {
                await proxy.stop()
                throw error
            }
            await proxy.stop()
        }
    }

    private func run(_ fleet: FleetFixture, proxy: RecordingProxy, healthToken: String, dbPassword: String, otherKey: SigningKey) async throws {
        let appPort = try freeLoopbackPort()
        let deadPort = try freeLoopbackPort()
        let instanceEnv = ["PORT": "\(appPort)", "DEAD_PORT": "\(deadPort)", "HEALTH_TOKEN": healthToken, "DB_PASSWORD": dbPassword]
        let healthy = try await fleet.controller.upload(try fleet.makeArtifact(version: "1.0.0"), token: fleet.operatorToken)
        let crashing = try await fleet.controller.upload(try crashingArtifact(fleet), token: fleet.operatorToken)

        // Serial 1: healthy, its health URL carries the token.
        try await publish(fleet, serial: 1, artifact: healthy, health: "http://127.0.0.1:${PORT}/healthz?token=${HEALTH_TOKEN}", deadline: 30)
        let config = try await fleet.enrollAgent(name: "edge-s", instanceEnv: instanceEnv, controllerURL: proxy.url)
        _ = try fleet.startAgent(config: config, label: "agent-s")
        try await eventually("serial 1 running", timeout: .seconds(90)) {
            let entry = try await fleet.fleetEntry(agent: "edge-s")
            return entry?["phase"]?.stringValue == "running" && entry?["serial"]?.intValue == 1 ? true : nil
        }

        // Serial 2: signed by a key the agent does not trust: refused, nothing running touched.
        try await publish(
            fleet,
            serial: 2,
            artifact: healthy,
            health: "http://127.0.0.1:${PORT}/healthz?token=${HEALTH_TOKEN}",
            deadline: 30,
            signer: otherKey
        )
        try await eventually("serial 2 refused", timeout: .seconds(90)) { () -> Bool? in
            let failures = await proxy.reports.last?.services.first?.failures ?? []
            return failures.contains { $0.serial == 2 && $0.kind == "refused" } ? true : nil
        }

        // Serial 3: an app that prints its whole environment and crashes with a secret in its error.
        try await publish(fleet, serial: 3, artifact: crashing, health: "http://127.0.0.1:${PORT}/healthz?token=${HEALTH_TOKEN}", deadline: 20)
        try await eventually("serial 3 rolled back", timeout: .seconds(90)) { () -> Bool? in
            let message = try await fleet.fleetEntry(agent: "edge-s")?["message"]?.stringValue ?? ""
            return message.contains("serial 3") && message.contains("rolled back") ? true : nil
        }

        // Serial 4: a failing health check whose URL uses both secrets (nothing listens on DEAD_PORT).
        try await publish(
            fleet,
            serial: 4,
            artifact: healthy,
            health: "http://127.0.0.1:${DEAD_PORT}/healthz/${HEALTH_TOKEN}?db=${DB_PASSWORD}",
            deadline: 4
        )
        let rolledBack = try await eventually("serial 4 rolled back", timeout: .seconds(90)) { () -> String? in
            let entry = try await fleet.fleetEntry(agent: "edge-s")
            guard entry?["phase"]?.stringValue == "rolled-back", let message = entry?["message"]?.stringValue, message.contains("serial 4") else {
                return nil
            }
            return message
        }
        #expect(rolledBack.contains("http://127.0.0.1:${DEAD_PORT}/healthz/${HEALTH_TOKEN}?db=${DB_PASSWORD} did not answer"), "\(rolledBack)")
        // The rollback re-applied serial 1 with a reload (a restart in fork mode): it serves again once it has booted.
        try await eventually("serial 1 serves again after the rollback", timeout: .seconds(30)) {
            await fleet.appAnswer(port: appPort)?.hasPrefix("1.0.0") == true ? true : nil
        }

        // The secrets were really in play: the crashing app printed them into its own log on the instance.
        let logs = fleet.root.appendingPathComponent("edge-s/state/supervisor")
        let appLogs = try Self.files(under: logs).map { (try? Data(contentsOf: $0)) ?? Data() }
        #expect(appLogs.contains { Self.contains($0, dbPassword) }, "the crashing app's own log (local) shows the value")
    }

    private func search(_ fleet: FleetFixture, proxy: RecordingProxy, secrets: [String]) async throws {
        // 1. Every request the agent sent (status reports included).
        let exchanges = await proxy.exchanges
        let reports = exchanges.filter { $0.method == "POST" && $0.path.hasSuffix("/status") }
        #expect(reports.count >= 4, "status reports were recorded")
        for exchange in exchanges {
            for secret in secrets {
                #expect(!Self.contains(Data(exchange.body), secret), "\(exchange.method) \(exchange.path) carries a secret")
                #expect(!exchange.path.contains(secret))
            }
        }
        #expect(reports.contains { Self.contains(Data($0.body), "${HEALTH_TOKEN}") }, "the placeholder is reported")
        #expect(reports.contains { Self.contains(Data($0.body), "${DB_PASSWORD}") }, "the placeholder is reported")

        // 2. The controller's files: database, WAL, artifacts, everything.
        let dataFiles = try Self.files(under: fleet.controller.dataDir)
        let databaseFiles = dataFiles.filter { $0.lastPathComponent.contains(".sqlite") || $0.lastPathComponent.contains(".db") }
        #expect(!databaseFiles.isEmpty, "the database files were found: \(dataFiles.map(\.lastPathComponent))")
        var databaseBytes = Data()
        for file in dataFiles {
            let bytes = try Data(contentsOf: file)
            if databaseFiles.contains(file) { databaseBytes.append(bytes) }
            for secret in secrets { #expect(!Self.contains(bytes, secret), "\(file.path) holds a secret") }
        }
        #expect(Self.contains(databaseBytes, "${HEALTH_TOKEN}"), "the database holds the placeholder")

        // 3. /v1/fleet and 4. the dashboard.
        let fleetJSON = try await fleet.controller.http.send(
            HTTPClient.Request(url: "\(fleet.controller.url)/v1/fleet", headers: ["Authorization": "Bearer \(fleet.viewerToken)"])
        )
        #expect(fleetJSON.isSuccess)
        let credentials = Data("viewer:\(fleet.viewerToken)".utf8).base64EncodedString()
        let dashboard = try await fleet.controller.http.send(
            HTTPClient.Request(url: "\(fleet.controller.url)/", headers: ["Authorization": "Basic \(credentials)"])
        )
        #expect(dashboard.isSuccess)
        for (name, body) in [("/v1/fleet", fleetJSON.body), ("dashboard", dashboard.body)] {
            for secret in secrets { #expect(!Self.contains(Data(body), secret), "\(name) shows a secret") }
            #expect(Self.contains(Data(body), "${HEALTH_TOKEN}"), "\(name) shows the placeholder")
        }

        // 5. The agent's log (and the controller's, for good measure).
        let logDirectory = fleet.root.appendingPathComponent("logs")
        let agentLog = try Data(contentsOf: logDirectory.appendingPathComponent("agent-s.err"))
        #expect(Self.contains(agentLog, "${HEALTH_TOKEN}"), "the agent log names the placeholder")
        for file in try Self.files(under: logDirectory) {
            let bytes = try Data(contentsOf: file)
            for secret in secrets { #expect(!Self.contains(bytes, secret), "\(file.lastPathComponent) shows a secret") }
        }
    }

    // MARK: - Helpers

    private func publish(
        _ fleet: FleetFixture,
        serial: Int64,
        artifact: ArtifactReference,
        health: String,
        deadline: Int64,
        signer: SigningKey? = nil
    ) async throws {
        let now = Date()
        let app = PM2App(
            name: "web-app",
            script: "server.js",
            options: ["max_restarts": .integer(2), "min_uptime": .string("1s"), "kill_timeout": .integer(2000)]
        )
        let release = Release(
            service: "web",
            serial: serial,
            version: "\(serial).0.0",
            createdAt: now,
            expiresAt: now.addingTimeInterval(86_400),
            artifact: artifact,
            env: ["NODE_ENV": "production"],
            pm2: PM2Config(apps: [app]),
            health: HealthCheck(http: health, deadlineSeconds: deadline, stableSeconds: 1)
        )
        let envelope = try Envelope.sign(payload: release.payload(), payloadType: Release.payloadType, with: [signer ?? fleet.operatorKey])
        let (status, body) = try await fleet.controller.publish(envelope, token: fleet.operatorToken)
        guard status == 201 || status == 200 else { throw HarnessError("publish \(serial) refused: \(status) \(body)") }
    }

    /// An app that prints its environment, then dies with a secret in its error.
    private func crashingArtifact(_ fleet: FleetFixture) throws -> URL {
        let tree = fleet.root.appendingPathComponent("build-crash")
        try FileManager.default.createDirectory(at: tree, withIntermediateDirectories: true)
        let server = """
            console.log(JSON.stringify(process.env));
            console.error('cannot connect with password ' + process.env.DB_PASSWORD);
            throw new Error('health token ' + process.env.HEALTH_TOKEN + ' rejected');

            """
        try server.write(to: tree.appendingPathComponent("server.js"), atomically: true, encoding: .utf8)
        let archive = fleet.root.appendingPathComponent("crash.tgz")
        let result = try Command.run("tar", ["czf", archive.path, "-C", tree.path, "."])
        guard result.status == 0 else { throw HarnessError("tar failed: \(result.stderr)") }
        return archive
    }

    static func files(under directory: URL) throws -> [URL] {
        var files: [URL] = []
        let enumerator = FileManager.default.enumerator(at: directory, includingPropertiesForKeys: [.isRegularFileKey])
        while let url = enumerator?.nextObject() as? URL {
            if (try? url.resourceValues(forKeys: [.isRegularFileKey]).isRegularFile) == true { files.append(url) }
        }
        return files
    }

    static func contains(_ data: Data, _ text: String) -> Bool {
        data.range(of: Data(text.utf8)) != nil
    }
}
