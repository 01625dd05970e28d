import Foundation
import Shared
import TestSupport
import Testing

@testable import Agent

/// Everything an end-to-end test needs: keys, a live controller, a small HTTP app packed as tar.gz releases, and
/// agents started as real `ferry-agent` processes under the builtin supervisor or real PM2 (`Backend`).
final class FleetFixture {
    let root: URL
    let operatorKey: SigningKey
    let operatorKeyPath: String
    let operatorPublicKeyPath: String
    let controller: ControllerHarness
    private(set) var operatorToken = ""
    private(set) var enrollToken = ""
    private(set) var viewerToken = ""
    private var agents: [ChildProcess] = []
    private var supervisorHomes: [String] = []
    private var pm2Homes: [(binary: String, home: String)] = []
    /// What the test can do behind each agent's back, by agent name.
    private(set) var controls: [String: BackendControl] = [:]
    /// Processes the test started itself (bystanders), ended by PID at tear-down.
    private var strays: [ChildProcess] = []

    /// - Parameters:
    ///   - tls: the controller serves HTTPS with certificates of a test CA, which the agents and the test trust.
    ///   - database: the controller's PostgreSQL database (`nil`: SQLite in its data directory).
    init(label: String = "fe", tls: Bool = false, database: String? = nil) throws {
        root = try TestPaths.makeTemporaryDirectory(label)
        operatorKey = try SigningKey.generate()
        operatorKeyPath = root.appendingPathComponent("op.key").path
        operatorPublicKeyPath = root.appendingPathComponent("op.pub").path
        try KeyFile.create(operatorKeyPath, contents: try operatorKey.pemRepresentation(), mode: 0o600)
        try KeyFile.create(operatorPublicKeyPath, contents: try operatorKey.publicKey.pemRepresentation(), mode: 0o644)
        try FileManager.default.createDirectory(at: root.appendingPathComponent("logs"), withIntermediateDirectories: true)
        var certificates: TestCertificates?
        if tls {
            let pki = root.appendingPathComponent("pki")
            try FileManager.default.createDirectory(at: pki, withIntermediateDirectories: true)
            certificates = try TestCertificates.make(in: pki)
        }
        controller = ControllerHarness(
            dataDir: root.appendingPathComponent("controller"),
            logDir: root.appendingPathComponent("logs"),
            trustedKeys: [operatorPublicKeyPath],
            certificates: certificates,
            database: database
        )
    }

    /// The test PKI when the controller serves HTTPS.
    var certificates: TestCertificates? { controller.certificates }

    /// Runs `body` with a fresh fixture, records any error together with every process's log, and always tears the
    /// fixture down (agents, supervisors, pm2 daemons, controller, directory).
    static func with(tls: Bool = false, _ body: (FleetFixture) async throws -> Void) async throws {
        let fleet = try FleetFixture(tls: tls)
        do {
            try await body(fleet)
        } catch {
            Issue.record("\(error)\n\(fleet.logs())")
        }
        await fleet.tearDown()
    }

    /// Starts the controller (pinning `trustRoot` instead of the operator key when given, with `extraArguments` for
    /// `serve`) and creates the tokens.
    func startController(trustRoot: String? = nil, extraArguments: [String] = []) async throws {
        try await controller.start(trustRoot: trustRoot, extraArguments: extraArguments)
        operatorToken = try controller.token(role: "operator", name: "ci")
        enrollToken = try controller.token(role: "enroll")
        viewerToken = try controller.token(role: "viewer")
    }

    /// A tar.gz of a Node HTTP app that answers `GET /` with its version and pid (or crashes at boot when `crash`, or
    /// while the file `crashWhen` exists; or, while the file `crashLater` exists at its start, crashes 1.5 s after it,
    /// long enough to count as a stable run for `min_uptime` 1000; or, running, crashes once the file `crashOnceExists`
    /// appears, looked for every 100 ms). On SIGINT (how PM2 and the supervisor stop an instance) it stops accepting,
    /// finishes what it serves, and exits: what an app does to take part in a zero-downtime reload.
    func makeArtifact(
        version: String,
        crash: Bool = false,
        crashWhen trigger: String? = nil,
        crashLater laterTrigger: String? = nil,
        crashOnceExists goTrigger: String? = nil,
        padding: Int = 0
    ) throws -> URL {
        let tree = root.appendingPathComponent("build-\(version)")
        try FileManager.default.createDirectory(at: tree, withIntermediateDirectories: true)
        var guardLine = trigger.map { "if (require('fs').existsSync('\($0)')) throw new Error('asked to crash by \($0)');\n" } ?? ""
        if let laterTrigger {
            guardLine +=
                "if (require('fs').existsSync('\(laterTrigger)')) setTimeout(() => { throw new Error('asked to crash later by \(laterTrigger)'); }, 1500);\n"
        }
        if let goTrigger {
            guardLine +=
                "setInterval(() => { if (require('fs').existsSync('\(goTrigger)')) throw new Error('asked to crash by \(goTrigger)'); }, 100);\n"
        }
        let server =
            crash
            ? "throw new Error('release \(version) is broken at boot');\n"
            : guardLine + """
                const http = require('http'), fs = require('fs'), path = require('path');
                const version = fs.readFileSync(path.join(__dirname, 'VERSION'), 'utf8').trim();
                const server = http.createServer((req, res) => {
                    res.setHeader('Connection', 'close');
                    res.end(version + ' ' + (process.env.GREETING || '') + ' pid=' + process.pid);
                }).listen(Number(process.env.PORT), '127.0.0.1');
                // Graceful stop: a cluster worker disconnects (its servers close first, then the IPC channel, so a
                // connection the master is handing over is sent back to another worker); a forked process closes and exits.
                process.on('SIGINT', () => {
                    const worker = require('cluster').worker;
                    if (worker) worker.disconnect(); else server.close(() => process.exit(0));
                    setTimeout(() => process.exit(0), 3000).unref();
                });

                """
        try server.write(to: tree.appendingPathComponent("server.js"), atomically: true, encoding: .utf8)
        try version.write(to: tree.appendingPathComponent("VERSION"), atomically: true, encoding: .utf8)
        if padding > 0 {
            // Incompressible bytes, so a download takes long enough to be interrupted.
            var generator = SystemRandomNumberGenerator()
            let bytes = (0..<padding).map { _ in UInt8.random(in: 0...255, using: &generator) }
            try Data(bytes).write(to: tree.appendingPathComponent("padding.bin"))
            for index in 0..<200 {
                try "file \(index)\n".write(to: tree.appendingPathComponent("f\(index).txt"), atomically: true, encoding: .utf8)
            }
        }
        let archive = root.appendingPathComponent("web-\(version).tgz")
        let result = try Command.run("tar", ["czf", archive.path, "-C", tree.path, "."])
        guard result.status == 0 else { throw HarnessError("tar failed: \(result.stderr)") }
        return archive
    }

    /// A signed release of the web app.
    func release(
        serial: Int64,
        version: String,
        artifact: ArtifactReference,
        port: Int,
        service: String = "web",
        deadline: Int64 = 20,
        stable: Int64 = 2,
        appOptions: [String: JSONValue] = [:],
        signer: SigningKey? = nil,
        healthURL: String? = nil,
        appName: String? = nil,
        expiresIn: TimeInterval = 86_400
    ) throws -> Envelope {
        let now = Date()
        var options: [String: JSONValue] = [
            // Port 0: each instance sets PORT in its own env file, and the health URL names it.
            "env": .object(port == 0 ? [:] : ["PORT": .string("\(port)")]),
            "max_restarts": .integer(2),
            "min_uptime": .integer(1000),
            "kill_timeout": .integer(2000),
        ]
        options.merge(appOptions) { _, new in new }
        let app = PM2App(name: appName ?? "\(service)-app", script: "server.js", options: options)
        let release = Release(
            service: service,
            serial: serial,
            version: version,
            createdAt: now,
            expiresAt: now.addingTimeInterval(expiresIn),
            artifact: artifact,
            env: ["NODE_ENV": "production"],
            pm2: PM2Config(apps: [app]),
            health: HealthCheck(
                http: healthURL ?? (port == 0 ? "http://127.0.0.1:${PORT}/" : "http://127.0.0.1:\(port)/"),
                deadlineSeconds: deadline,
                stableSeconds: stable
            )
        )
        return try Envelope.sign(payload: release.payload(), payloadType: Release.payloadType, with: [signer ?? operatorKey])
    }

    /// Publishes a new version: uploads the artifact, signs, posts. Throws unless the controller accepts it.
    @discardableResult
    func publish(
        serial: Int64,
        version: String,
        port: Int,
        crash: Bool = false,
        crashWhen trigger: String? = nil,
        crashLater laterTrigger: String? = nil,
        padding: Int = 0,
        service: String = "web",
        appOptions: [String: JSONValue] = [:],
        query: String = "",
        healthURL: String? = nil,
        deadline: Int64 = 20,
        appName: String? = nil
    ) async throws -> Envelope {
        let archive = try makeArtifact(version: version, crash: crash, crashWhen: trigger, crashLater: laterTrigger, padding: padding)
        let artifact = try await controller.upload(archive, token: operatorToken)
        let envelope = try release(
            serial: serial,
            version: version,
            artifact: artifact,
            port: port,
            service: service,
            deadline: deadline,
            appOptions: appOptions,
            healthURL: healthURL,
            appName: appName
        )
        let (status, body) = try await controller.publish(envelope, token: operatorToken, query: query)
        guard status == 201 || status == 200 else { throw HarnessError("publish \(version) refused: \(status) \(body)") }
        return envelope
    }

    /// Publishes `serial` of the web service with two apps: the web app (`web-app`, the node server of
    /// `makeArtifact`, with `webOptions`) and a shell app (`web-<shell.name>`, `interpreter: none`, the script
    /// `shell.script` beside the server in the artifact; it needs no PATH when it names its programs by path).
    func publishWithShellApp(
        serial: Int64,
        version: String,
        shell: (name: String, script: String),
        webOptions: [String: JSONValue] = [:],
        health: HealthCheck
    ) async throws {
        _ = try makeArtifact(version: version)
        let tree = root.appendingPathComponent("build-\(version)")
        let script = tree.appendingPathComponent("\(shell.name).sh")
        try shell.script.write(to: script, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: script.path)
        let archive = root.appendingPathComponent("web-\(version)-\(shell.name).tgz")
        let tar = try await Command.run("tar", ["czf", archive.path, "-C", tree.path, "."])
        guard tar.status == 0 else { throw HarnessError("tar failed: \(tar.stderr)") }
        let artifact = try await controller.upload(archive, token: operatorToken)
        let now = Date()
        let release = Release(
            service: "web",
            serial: serial,
            version: version,
            createdAt: now,
            expiresAt: now.addingTimeInterval(86_400),
            artifact: artifact,
            env: [:],
            pm2: PM2Config(apps: [
                PM2App(name: "web-app", script: "server.js", options: webOptions.merging(["kill_timeout": .integer(2000)]) { given, _ in given }),
                PM2App(
                    name: "web-\(shell.name)",
                    script: "./\(shell.name).sh",
                    options: ["interpreter": .string("none"), "kill_timeout": .integer(2000)]
                ),
            ]),
            health: health
        )
        let envelope = try Envelope.sign(payload: release.payload(), payloadType: Release.payloadType, with: [operatorKey])
        let (status, body) = try await controller.publish(envelope, token: operatorToken, query: "")
        guard status == 201 else { throw HarnessError("publish \(version) refused: \(status) \(body)") }
    }

    /// Enrolls an agent with the real `ferry-agent enroll` and returns its config path.
    func enrollAgent(
        name: String,
        services: [String] = ["web"],
        reportSeconds: Int = 2,
        longPollSeconds: Int = 10,
        backend: Backend = .builtin,
        instanceEnv: [String: String] = [:],
        tokenOnStandardInput: Bool = false,
        controllerURL: String? = nil,
        trustRoot: String? = nil,
        extraArguments: [String] = []
    ) async throws -> String {
        let result = try await runEnroll(
            name: name,
            services: services,
            backend: backend,
            instanceEnv: instanceEnv,
            tokenOnStandardInput: tokenOnStandardInput,
            caFile: certificates?.caFile,
            controllerURL: controllerURL,
            trustRoot: trustRoot,
            extraArguments: extraArguments
        )
        guard result.status == 0 else { throw HarnessError("enroll failed: \(result.stdout) \(result.stderr)") }
        let config = root.appendingPathComponent(name).appendingPathComponent("agent.json").path
        // Faster reports and shorter long-polls than production, so the test does not wait for them.
        var text = try String(contentsOfFile: config, encoding: .utf8)
        text = text.replacingOccurrences(of: "\"reportSeconds\":30", with: "\"reportSeconds\":\(reportSeconds)")
        text = text.replacingOccurrences(of: "\"longPollSeconds\":30", with: "\"longPollSeconds\":\(longPollSeconds)")
        try text.write(toFile: config, atomically: true, encoding: .utf8)
        return config
    }

    /// Runs the real `ferry-agent enroll` (trusting `caFile` for the controller's certificate; pinning `trustRoot`
    /// instead of the operator key when given) and returns its result, whatever it is. The agent's process-manager
    /// controls are recorded for tear-down either way.
    func runEnroll(
        name: String,
        services: [String] = ["web"],
        backend: Backend = .builtin,
        instanceEnv: [String: String] = [:],
        tokenOnStandardInput: Bool = false,
        caFile: String?,
        controllerURL: String? = nil,
        trustRoot: String? = nil,
        extraArguments: [String] = []
    ) async throws -> CommandResult {
        let pm2 = try backend.pm2Binary()
        let agentRoot = root.appendingPathComponent(name)
        if !instanceEnv.isEmpty {
            let envDir = agentRoot.appendingPathComponent("env")
            try FileManager.default.createDirectory(at: envDir, withIntermediateDirectories: true)
            let text = instanceEnv.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)\n" }.joined()
            for service in services { try text.write(to: envDir.appendingPathComponent("\(service).env"), atomically: true, encoding: .utf8) }
        }
        let config = agentRoot.appendingPathComponent("agent.json").path
        let state = agentRoot.appendingPathComponent("state").path
        // The token goes through a file, not the command line (arguments are visible to every user in /proc).
        try FileManager.default.createDirectory(at: agentRoot, withIntermediateDirectories: true)
        let tokenFile = agentRoot.appendingPathComponent("enroll.token")
        try enrollToken.write(to: tokenFile, atomically: true, encoding: .utf8)
        var arguments = [
            "enroll", "--controller", controllerURL ?? controller.url, "--token-file", tokenOnStandardInput ? "-" : tokenFile.path, "--config",
            config,
            "--name", name, "--state-dir", state,
            "--env-dir", agentRoot.appendingPathComponent("env").path, "--poll-seconds", "1",
        ]
        arguments += trustRoot.map { ["--trust-root", $0] } ?? ["--trusted-key", operatorPublicKeyPath]
        var pm2Home: String?
        if let pm2 {
            let home = agentRoot.appendingPathComponent("pm2-home").path
            arguments += ["--process-manager", "pm2", "--pm2", pm2, "--pm2-home", home]
            pm2Homes.append((pm2, home))
            pm2Home = home
        } else {
            arguments += ["--process-manager", "builtin"]
        }
        for service in services { arguments += ["--service", service] }
        if let caFile { arguments += ["--ca-file", caFile] }
        arguments += extraArguments
        supervisorHomes.append("\(state)/supervisor")
        controls[name] = BackendControl(backend: backend, pm2: pm2, pm2Home: pm2Home, supervisorHome: "\(state)/supervisor", home: root.path)
        // On a thread of its own (`Command.run`'s async form): the command may talk to an in-process stand-in (the
        // metadata service, a proxy), which must not be starved of the cooperative pool's two threads meanwhile.
        return try await Command.run(
            TestPaths.executable("ferry-agent"),
            arguments,
            stdin: tokenOnStandardInput ? Data((enrollToken + "\n").utf8) : nil
        )
    }

    /// Starts `ferry-agent run`.
    func startAgent(config: String, label: String, environment extra: [String: String] = [:]) throws -> ChildProcess {
        var environment = ["PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": root.path, "FERRY_LOG_LEVEL": "debug"]
        for (key, value) in extra { environment[key] = value }
        let agent = try ChildProcess(
            TestPaths.executable("ferry-agent"),
            ["run", "--config", config],
            environment: environment,
            logDirectory: root.appendingPathComponent("logs"),
            label: label
        )
        agents.append(agent)
        return agent
    }

    /// Starts a process the agent does not own (a bystander), ended by PID at tear-down.
    func startStray(_ executable: String, _ arguments: [String], label: String) throws -> ChildProcess {
        let stray = try ChildProcess(
            executable,
            arguments,
            environment: ["PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": root.path],
            logDirectory: root.appendingPathComponent("logs"),
            label: label
        )
        strays.append(stray)
        return stray
    }

    /// `GET http://127.0.0.1:port/` of the app, or `nil` when nothing answers.
    func appAnswer(port: Int) async -> String? {
        let client = HTTPClient()
        guard let response = try? await client.send(HTTPClient.Request(url: "http://127.0.0.1:\(port)/", timeout: .seconds(2))),
            response.isSuccess
        else { return nil }
        return String(decoding: response.body, as: UTF8.self)
    }

    /// The fleet entry of `service` on the agent named `agent`.
    func fleetEntry(agent: String, service: String = "web") async throws -> JSONValue? {
        let fleet = try await controller.fleet(token: viewerToken)
        guard let record = fleet["agents"]?.arrayValue.first(where: { $0["name"]?.stringValue == agent }) else { return nil }
        return record["services"]?.arrayValue.first { $0["service"]?.stringValue == service }
    }

    /// The messages of `service` in the agent's stored reports (`GET /v1/agents/NAME`: the newest ten, each kept when it
    /// differs from the one before) received at or after `since`, newest first. The controller writes whole seconds, so
    /// a report of the second before `since` counts too.
    func reportedMessages(agent: String, service: String = "web", since: Date) async throws -> [String] {
        let detail = try await controller.get("/v1/agents/\(agent)", token: viewerToken)
        let from = since.addingTimeInterval(-1)
        return (detail["reports"]?.arrayValue ?? []).flatMap { report -> [String] in
            guard let received = report["receivedAt"]?.stringValue.flatMap(Timestamp.parse), received >= from else { return [] }
            return (report["services"]?.arrayValue ?? []).filter { $0["service"]?.stringValue == service }.compactMap { $0["message"]?.stringValue }
        }
    }

    /// Waits until `version` answers on `port` and the fleet shows `agent`'s service running (past its health gate).
    func waitUntilRunning(_ version: String, port: Int, agent: String, service: String = "web", timeout: Duration = .seconds(90)) async throws {
        try await eventually("\(version) serving", timeout: timeout) { await appAnswer(port: port)?.hasPrefix(version) == true ? true : nil }
        try await eventually("the fleet shows \(agent) running", timeout: timeout) {
            try await fleetEntry(agent: agent, service: service)?["phase"]?.stringValue == "running" ? true : nil
        }
    }

    /// Stops every agent, every supervisor daemon and the controller, then removes the directory.
    func tearDown() async {
        for agent in agents { await agent.terminate() }
        for stray in strays { await stray.terminate() }
        for home in supervisorHomes {
            _ = try? await Command.run(TestPaths.executable("ferry-agent"), ["supervisor", "--stop", "--home", home])
        }
        // pm2 through the agent's runner, as BackendControl does (see there why not Foundation's Process).
        for (binary, home) in pm2Homes {
            let kill = PM2Command(
                executable: binary,
                arguments: ["kill"],
                environment: ["PM2_HOME": home, "PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": root.path],
                workingDirectory: "/",
                timeout: .seconds(60)
            )
            _ = try? await PM2CommandRunner().run(kill)
        }
        await controller.stop()
        // Whatever still runs from the fixture's directory (an app a failed scenario left outside every table): ended
        // here, so no test leaves a process holding a port behind it.
        let leftovers = Self.processes(under: root.path)
        for pid in leftovers { kill(pid, SIGKILL) }
        if !leftovers.isEmpty {
            _ = try? await eventually(
                "the fixture's leftover processes \(leftovers.sorted()) gone",
                timeout: .seconds(10),
                interval: .milliseconds(20)
            ) {
                Self.processes(under: root.path).isEmpty ? true : nil
            }
        }
        if ProcessInfo.processInfo.environment["FERRY_KEEP_TEST_DIRS"] == nil {
            try? FileManager.default.removeItem(at: root)
        } else {
            print("kept \(root.path)")
        }
    }

    /// Live processes (not zombies), other than this one, that run in `directory` or name it on their command line.
    static func processes(under directory: String) -> Set<Int32> {
        var found: Set<Int32> = []
        for name in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = Int32(name), pid != getpid(), let stat = SmallFile.text("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")"),
                let state = stat[stat.index(after: close)...].split(separator: " ").first, state != "Z", state != "X"
            else { continue }
            let cwd = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/cwd")) ?? ""
            let command = (try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline"))).map { String(decoding: $0, as: UTF8.self) } ?? ""
            if cwd == directory || cwd.hasPrefix(directory + "/") || command.contains(directory) { found.insert(pid) }
        }
        return found
    }

    /// Dumps the logs, for a failing test's message.
    func logs() -> String {
        let directory = root.appendingPathComponent("logs")
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        var files: [(label: String, path: String, limit: Int)] = []
        // First (a long log can be cut) what the process managers saw: a daemon's own log and the apps' stderr (a crash-looping app says why there).
        for home in supervisorHomes {
            files.append((label: "\(home)/supervisor.log", path: "\(home)/supervisor.log", limit: 3000))
            for name in ((try? FileManager.default.contentsOfDirectory(atPath: "\(home)/logs")) ?? []).sorted() where name.hasSuffix("-err.log") {
                files.append((label: "\(home)/logs/\(name)", path: "\(home)/logs/\(name)", limit: 1500))
            }
        }
        for (_, home) in pm2Homes {
            files.append((label: "\(home)/pm2.log", path: "\(home)/pm2.log", limit: 3000))
            for name in ((try? FileManager.default.contentsOfDirectory(atPath: "\(home)/logs")) ?? []).sorted() where name.hasSuffix("-error.log") {
                files.append((label: "\(home)/logs/\(name)", path: "\(home)/logs/\(name)", limit: 1500))
            }
        }
        files += names.sorted().map { (label: $0, path: directory.appendingPathComponent($0).path, limit: 6000) }
        let texts = files.compactMap { file -> String? in
            guard let text = try? String(contentsOf: URL(fileURLWithPath: file.path), encoding: .utf8) else { return nil }
            // The start of a long log too: how a crash loop began is at its head, not its tail.
            let head = text.count > 2 * file.limit ? "\(text.prefix(file.limit / 2))\n  [...]\n" : ""
            return "== \(file.label)\n\(head)\(text.suffix(file.limit))"
        }
        return (texts + ["== TCP sockets on the test ports\n\(LoopbackPorts.holders())"]).joined(separator: "\n")
    }
}

/// A TCP port on 127.0.0.1 free now and not handed out before in this run (`LoopbackPorts`).
func freeLoopbackPort() throws -> Int { try LoopbackPorts.reserve() }
