import Foundation
import Shared
import Synchronization
import TestSupport
import Testing

/// nginx from Debian's nginx-light (scripts/install-deps).
private let nginxPath = "/usr/sbin/nginx"

/// Several controllers on one PostgreSQL database, for real: a PostgreSQL server from the Debian binaries, two
/// `ferry-controller serve --database` processes behind nginx, three `ferry-agent` processes talking to nginx.
@Suite(
    "High availability end to end",
    .serialized,
    .enabled(
        if: PostgresTestServer.unavailableReason == nil && FileManager.default.isExecutableFile(atPath: nginxPath),
        "needs PostgreSQL and nginx (scripts/install-deps installs both; CI always runs this)"
    )
)
struct HighAvailabilityEndToEndTests {
    /// Publish through A while agents poll through nginx (parked on both controllers); kill -9 the rollout leader
    /// mid-wave and the rollout completes through the other; kill -9 a controller while an agent reports and every
    /// acknowledged report is in the database; restart everything (PostgreSQL included) and the state is the same.
    @Test(.timeLimit(.minutes(10)))
    func twoControllersBehindNginxSurviveKillsAndRestarts() async throws {
        let postgres = try await PostgresTestServer.start(fast: false)
        do {
            let database = try await postgres.createDatabase()
            let url = postgres.url(database: database)
            let fleet = try FleetFixture(label: "ha", database: url)
            let b = ControllerHarness(
                dataDir: fleet.root.appendingPathComponent("controller-b"),
                logDir: fleet.root.appendingPathComponent("logs"),
                trustedKeys: [fleet.operatorPublicKeyPath],
                database: url,
                label: "controller-b"
            )
            var balancer: ChildProcess?
            do {
                try await run(fleet, b, postgres: postgres, database: database) { balancer = $0 }
            } catch {
                Issue.record("\(error)\n\(fleet.logs())")
            }
            await balancer?.terminate()
            await b.stop()
            await fleet.tearDown()
        } catch {
            Issue.record("\(error)")
        }
        await postgres.remove()
    }

    /// The rollout leader cut off from the database by a real network partition (its link to the database dropped in
    /// a pair of network namespaces of the test's own, no reset sent either way): it stops driving within seconds, the
    /// database frees its lock once its keepalives go unanswered, the other controller takes over — never both at
    /// once — and when the link is back the old leader stays a follower.
    @Test(
        .timeLimit(.minutes(5)),
        .enabled(if: PrivateNetwork.unavailableReason == nil, "needs network namespaces (root and iproute2)")
    )
    func aPartitionedLeaderStepsDownAndTheOtherTakesOver() async throws {
        let network = try PrivateNetwork()
        defer { network.remove() }
        let postgres = try await PostgresTestServer.start(listenAddresses: [network.databaseAddress], namespace: network.databaseNamespace)
        let root = try TestPaths.makeTemporaryDirectory("ferry-partition")
        var controllers: [ControllerHarness] = []
        do {
            let database = try await postgres.createDatabase()
            let key = try SigningKey.generate()
            let publicKey = root.appendingPathComponent("op.pub").path
            try KeyFile.create(publicKey, contents: try key.publicKey.pemRepresentation(), mode: 0o644)
            let logs = root.appendingPathComponent("logs")
            try FileManager.default.createDirectory(at: logs, withIntermediateDirectories: true)
            // A reaches the database over the link; B runs next to it and never loses it.
            let a = ControllerHarness(
                dataDir: root.appendingPathComponent("a"),
                logDir: logs,
                trustedKeys: [publicKey],
                database: "postgres://postgres@\(network.databaseAddress):\(postgres.port)/\(database)?sslmode=disable",
                label: "controller-a"
            )
            a.wrapper = network.inside(network.controllerNamespace)
            let b = ControllerHarness(
                dataDir: root.appendingPathComponent("b"),
                logDir: logs,
                trustedKeys: [publicKey],
                database: postgres.url(database: database),
                label: "controller-b"
            )
            b.wrapper = network.inside(network.databaseNamespace)
            controllers = [a, b]
            let gained = "This controller now drives rollouts"
            let lost = "This controller stopped driving rollouts"
            func log(_ controller: ControllerHarness) -> String {
                controller.process.flatMap { SmallFile.text($0.stderrURL.path) } ?? ""
            }
            do {
                try await a.start()
                try await eventually("A leads", timeout: .seconds(30)) { log(a).contains(gained) ? true : nil }
                try await b.start()
                try await Task.sleep(for: .seconds(3))
                #expect(!log(b).contains(gained), "B follows while A holds the lock")

                try network.cut()
                let cut = ContinuousClock.now
                try await eventually("A stops driving", timeout: .seconds(30)) { log(a).contains(lost) ? true : nil }
                let stepped = ContinuousClock.now - cut
                // A's log is read before B's: if B led before A stepped down, this sees B leading with A not stopped.
                let overlap = try await eventually("B takes over", timeout: .seconds(90)) { () -> Bool? in
                    let aStopped = log(a).contains(lost)
                    return log(b).contains(gained) ? !aStopped : nil
                }
                let tookOver = ContinuousClock.now - cut
                #expect(!overlap, "B led while A still did")
                print("partition: A stepped down after \(stepped), B led after \(tookOver)")
                #expect(stepped < .seconds(15), "A stops driving within its check's bound")

                try network.heal()
                try await Task.sleep(for: .seconds(8))
                #expect(log(a).components(separatedBy: gained).count == 2, "A led once and does not lead again while B holds the lock")
                #expect(log(b).components(separatedBy: lost).count == 1, "B still leads")
            } catch {
                Issue.record("\(error)\n== A\n\(log(a).suffix(3000))\n== B\n\(log(b).suffix(3000))")
            }
        } catch {
            Issue.record("\(error)")
        }
        for controller in controllers { await controller.stop() }
        await postgres.remove()
        if ProcessInfo.processInfo.environment["FERRY_KEEP_TEST_DIRS"] == nil { try? FileManager.default.removeItem(at: root) }
    }

    private func run(
        _ fleet: FleetFixture,
        _ b: ControllerHarness,
        postgres: PostgresTestServer,
        database: String,
        started: (ChildProcess) -> Void
    ) async throws {
        let a = fleet.controller
        let common = ["--status-history", "10000", "--poll-seconds", "2"]
        try await fleet.startController(extraArguments: common)
        try await b.start(extraArguments: common)
        let controllers = ["a": a, "b": b]

        // nginx in front of both, as docs/ha.md configures it.
        let balancerPort = try freeLoopbackPort()
        let nginxDirectory = fleet.root.appendingPathComponent("nginx")
        try FileManager.default.createDirectory(at: nginxDirectory.appendingPathComponent("tmp"), withIntermediateDirectories: true)
        let configuration = """
            \(geteuid() == 0 ? "user root;" : "")
            daemon off;
            worker_processes 1;
            pid \(nginxDirectory.path)/nginx.pid;
            error_log \(nginxDirectory.path)/error.log warn;
            events { worker_connections 1024; }
            http {
                access_log off;
                client_body_temp_path \(nginxDirectory.path)/tmp;
                proxy_temp_path \(nginxDirectory.path)/tmp;
                fastcgi_temp_path \(nginxDirectory.path)/tmp;
                uwsgi_temp_path \(nginxDirectory.path)/tmp;
                scgi_temp_path \(nginxDirectory.path)/tmp;
                upstream controllers {
                    server 127.0.0.1:\(a.port) max_fails=1 fail_timeout=3s;
                    server 127.0.0.1:\(b.port) max_fails=1 fail_timeout=3s;
                }
                server {
                    listen 127.0.0.1:\(balancerPort);
                    client_max_body_size 0;
                    proxy_request_buffering off;
                    proxy_buffering off;
                    proxy_read_timeout 90s;
                    location / {
                        proxy_pass http://controllers;
                        proxy_http_version 1.1;
                        proxy_next_upstream error timeout http_502 http_503;
                    }
                }
            }
            """
        let configurationFile = nginxDirectory.appendingPathComponent("nginx.conf")
        try configuration.write(to: configurationFile, atomically: true, encoding: .utf8)
        let balancer = try ChildProcess(
            nginxPath,
            ["-c", configurationFile.path, "-p", nginxDirectory.path],
            logDirectory: fleet.root.appendingPathComponent("logs"),
            label: "nginx"
        )
        started(balancer)
        let balancerURL = "http://127.0.0.1:\(balancerPort)"
        let http = HTTPClient()
        try await eventually("nginx answers", timeout: .seconds(30)) { () -> Bool? in
            let response = try? await http.send(HTTPClient.Request(url: "\(balancerURL)/healthz", timeout: .seconds(2)))
            return response?.isSuccess == true ? true : nil
        }

        // Three agents, all through nginx.
        let names = ["agent-a", "agent-b", "agent-c"]
        var ports: [String: Int] = [:]
        for name in names {
            let port = try freeLoopbackPort()
            ports[name] = port
            let config = try await fleet.enrollAgent(name: name, instanceEnv: ["PORT": "\(port)"], controllerURL: balancerURL)
            _ = try fleet.startAgent(config: config, label: name)
        }
        func answers(_ version: String) async -> Int {
            var count = 0
            for name in names where await fleet.appAnswer(port: ports[name] ?? 0)?.hasPrefix(version) == true { count += 1 }
            return count
        }
        try await fleet.publish(serial: 1, version: "1.0.0", port: 0)
        try await eventually("v1 on all three", timeout: .seconds(120)) { await answers("1.0.0") == 3 ? true : nil }

        // Agents' long-polls are spread over both controllers by nginx: B holds some when A takes the publish.
        try await eventually("a long-poll parked on B", timeout: .seconds(60)) { () -> Bool? in
            let metrics = try await http.send(HTTPClient.Request(url: "\(b.url)/metrics"))
            let text = String(decoding: metrics.body, as: UTF8.self)
            let parked = text.split(separator: "\n").first { $0.hasPrefix("ferry_long_poll_waiters") }?.split(separator: " ").last
            return (parked.flatMap { Double($0) } ?? 0) >= 1 ? true : nil
        }

        // v2 in waves through A; the leader is killed once the first wave is on its way.
        let leaderName = try await eventually("a leader", timeout: .seconds(30)) { () -> String? in
            controllers.first { $0.value.process?.stderr.contains("now drives rollouts") == true }?.key
        }
        guard let leader = controllers[leaderName], let survivor = controllers[leaderName == "a" ? "b" : "a"] else { return }
        try await fleet.publish(serial: 2, version: "2.0.0", port: 0, query: "strategy=waves:34,100&waveStableSeconds=3")
        try await eventually("the first wave on v2", timeout: .seconds(120)) { await answers("2.0.0") >= 1 ? true : nil }
        try await Self.killNine(leader)
        try await eventually("v2 on all three after the leader's kill -9", timeout: .seconds(180)) { await answers("2.0.0") == 3 ? true : nil }
        try await eventually("the rollout of serial 2 completed through \(survivor.label)", timeout: .seconds(60)) { () -> Bool? in
            let rollouts = try await survivor.get("/v1/rollouts?service=web", token: fleet.viewerToken)
            return RolloutEndToEndTests.rollouts(rollouts).first { $0["serial"]?.intValue == 2 }?["state"]?.stringValue == "completed" ? true : nil
        }
        #expect(survivor.process?.stderr.contains("now drives rollouts") == true, "the survivor took the lead")

        // The killed controller comes back on its port (nginx sends to it again).
        try await leader.start(port: leader.port, extraArguments: common)

        // An agent of another service reports to one controller as fast as it answers; that controller is killed -9
        // meanwhile. Every report it acknowledged is in the database.
        let enrolled = try await http.send(
            HTTPClient.Request(
                method: .post,
                url: "\(balancerURL)/v1/agents",
                headers: ["Authorization": "Bearer \(fleet.enrollToken)"],
                body: Array(EnrollRequest(name: "reporter", hostname: "reporter", services: ["probe"]).json.encoded())
            )
        )
        try #require(enrolled.status == 201, "\(String(decoding: enrolled.body, as: UTF8.self))")
        let reporter = try EnrollResponse(json: JSONValue.parse(enrolled.body))
        let victim = survivor
        let statusURL = "\(victim.url)/v1/agents/\(reporter.agentID)/status"
        let reporterToken = reporter.token
        let acknowledgedSoFar = AcknowledgedCount()
        let acknowledged = try await withThrowingTaskGroup(of: [Int].self) { group in
            group.addTask {
                var acknowledged: [Int] = []
                for sequence in 1...100_000 {
                    let report = StatusReport(
                        agentVersion: "test",
                        hostname: "reporter",
                        processManager: "builtin",
                        services: [
                            ServiceStatus(
                                service: "probe",
                                serial: nil,
                                version: nil,
                                targetSerial: nil,
                                phase: .running,
                                message: "report-\(sequence)-end",
                                health: .healthy,
                                processes: []
                            )
                        ]
                    )
                    let response = try? await http.send(
                        HTTPClient.Request(
                            method: .post,
                            url: statusURL,
                            headers: ["Authorization": "Bearer \(reporterToken)", "Content-Type": "application/json"],
                            body: Array(report.json.encoded()),
                            timeout: .seconds(5)
                        )
                    )
                    guard let response, response.isSuccess else { break }
                    acknowledged.append(sequence)
                    acknowledgedSoFar.set(acknowledged.count)
                }
                return acknowledged
            }
            // Killed mid-stream, once it has acknowledged some (however slow a loaded machine makes each one).
            try await eventually("reports acknowledged before the kill", timeout: .seconds(60), interval: .milliseconds(20)) {
                acknowledgedSoFar.value >= 5 ? true : nil
            }
            try await Self.killNine(victim)
            return try await group.next() ?? []
        }
        #expect(acknowledged.count > 3, "the controller acknowledged reports before its kill: \(acknowledged.count)")
        let stored = try await postgres.psql(
            "SELECT report FROM status_history WHERE agent_id = '\(reporter.agentID)'",
            database: database
        )
        let missing = acknowledged.filter { !stored.contains("report-\($0)-end") }
        #expect(missing.isEmpty, "acknowledged reports lost with the controller: \(missing.prefix(20))")
        try await victim.start(port: victim.port, extraArguments: common)

        // Restart everything: both controllers and PostgreSQL (immediate stop, like a crash). Same state after.
        func snapshot(_ controller: ControllerHarness) async throws -> [String] {
            let fleetDocument = try await controller.fleet(token: fleet.viewerToken)
            var lines = (fleetDocument["agents"]?.arrayValue ?? []).map { agent in
                let services = (agent["services"]?.arrayValue ?? []).map { "\($0["service"]?.stringValue ?? "?")@\($0["serial"]?.intValue ?? -1)" }
                return "\(agent["name"]?.stringValue ?? "?") \(services.sorted().joined(separator: ","))"
            }
            let rollouts = try await controller.get("/v1/rollouts?service=web", token: fleet.viewerToken)
            lines += RolloutEndToEndTests.rollouts(rollouts).map { "rollout \($0["serial"]?.intValue ?? -1) \($0["state"]?.stringValue ?? "?")" }
            return lines.sorted()
        }
        let before = try await snapshot(a)
        let reportsBefore = try await postgres.psql("SELECT COUNT(*) FROM status_history WHERE agent_id = '\(reporter.agentID)'", database: database)
        await a.stop()
        await b.stop()
        try await postgres.stop()
        try await postgres.restart(fast: false)
        try await a.start(port: a.port, extraArguments: common)
        try await b.start(port: b.port, extraArguments: common)
        #expect(try await snapshot(a) == before)
        #expect(try await snapshot(b) == before)
        let reportsAfter = try await postgres.psql("SELECT COUNT(*) FROM status_history WHERE agent_id = '\(reporter.agentID)'", database: database)
        #expect(reportsAfter == reportsBefore)
        #expect(await answers("2.0.0") == 3, "the apps kept running through all of it")
    }

    /// SIGKILL to the controller's PID, as a crash; waits (without blocking a thread) until it is gone.
    static func killNine(_ controller: ControllerHarness) async throws {
        guard let process = controller.process, process.signal(SIGKILL) else { throw HarnessError("\(controller.label) is not running") }
        try await eventually("\(controller.label) gone", timeout: .seconds(30), interval: .milliseconds(20)) { process.isRunning ? nil : true }
    }
}

/// How many reports the controller has acknowledged so far, read by the test while the reporter runs.
private final class AcknowledgedCount: Sendable {
    private let count = Atomic<Int>(0)
    var value: Int { count.load(ordering: .acquiring) }
    func set(_ value: Int) { count.store(value, ordering: .releasing) }
}
