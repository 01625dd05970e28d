import Foundation
import Shared
import TestSupport
import Testing

/// Issue 15 end to end, under the builtin supervisor and real PM2: a real controller, a real `ferry-agent`, releases
/// published with the real `ferry-controller publish` the way a CI job would, then `rollout wait`. A release whose app
/// writes a distinctive line (with an instance env secret in it) to stderr and exits at boot must show that line —
/// and not the secret — in `rollout wait`, `status`, `agents show`, `/v1/fleet` and the dashboard's agent page; every
/// command's `--json` is parsed.
@Suite("Operator insight end to end", .serialized)
struct InsightEndToEndTests {
    static let agentName = "insight-a"
    /// What the crashing release writes to stderr before it exits.
    static let distinctive = "FERRY-E2E-BOOT-FAILURE-7731 cannot open the ledger"

    @Test(.timeLimit(.minutes(8)), arguments: Backend.allCases)
    func aCrashAtBootIsExplainedEverywhereAnOperatorLooks(_ backend: Backend) async throws {
        _ = try backend.pm2Binary()
        try await FleetFixture.with { fleet in try await run(fleet, backend: backend) }
    }

    struct Run {
        var status: Int32
        var output: String
        var errors: String
    }

    /// The built `ferry-controller` with `environment` (and none of the test process's FERRY_ variables).
    static func cli(_ arguments: [String], environment: [String: String]) async throws -> Run {
        try await run(TestPaths.executable("ferry-controller"), arguments, environment: environment)
    }

    /// `executable` with `environment` on top of the test process's, without its FERRY_ variables.
    static func run(_ executable: String, _ arguments: [String], environment extra: [String: String]) async throws -> Run {
        var environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("FERRY_") }
        environment.merge(extra) { _, new in new }
        let result = try await CommandRunner.run(
            CommandRunner.Request(
                executable: executable,
                arguments: arguments,
                environment: environment,
                standardErrorLimit: 16 << 20,
                timeout: .seconds(300)
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

    /// A tar.gz whose `server.js` is `script`.
    static func artifact(_ fleet: FleetFixture, version: String, script: String) async throws -> URL {
        let tree = fleet.root.appendingPathComponent("insight-\(version)")
        try FileManager.default.createDirectory(at: tree, withIntermediateDirectories: true)
        try script.write(to: tree.appendingPathComponent("server.js"), atomically: true, encoding: .utf8)
        let archive = fleet.root.appendingPathComponent("insight-\(version).tgz")
        let tar = try await run("/usr/bin/tar", ["czf", archive.path, "-C", tree.path, "."], environment: [:])
        guard tar.status == 0 else { throw HarnessError("tar failed: \(tar.errors)") }
        return archive
    }

    private func run(_ fleet: FleetFixture, backend: Backend) async throws {
        try await fleet.startController()
        let port = try freeLoopbackPort()
        let secret = "ledger-pass-\(UInt32.random(in: 100_000...999_999))"
        let config = try await fleet.enrollAgent(
            name: Self.agentName,
            backend: backend,
            instanceEnv: ["PORT": "\(port)", "LEDGER_PASSWORD": secret]
        )
        _ = try fleet.startAgent(config: config, label: Self.agentName)

        let good = try await Self.artifact(
            fleet,
            version: "1.0.0",
            script: """
                const http = require('http');
                const server = http.createServer((req, res) => res.end('1.0.0')).listen(Number(process.env.PORT), '127.0.0.1');
                process.on('SIGINT', () => { server.close(() => process.exit(0)); setTimeout(() => process.exit(0), 2000).unref(); });

                """
        )
        let crashing = try await Self.artifact(
            fleet,
            version: "2.0.0",
            script: """
                console.log('starting 2.0.0');
                console.error('\(Self.distinctive) with password ' + process.env.LEDGER_PASSWORD);
                process.exit(3);

                """
        )
        let ecosystem = fleet.root.appendingPathComponent("ecosystem.json")
        try Data(#"{"apps":[{"name":"web-app","script":"server.js","max_restarts":2,"min_uptime":1000,"kill_timeout":2000}]}"#.utf8)
            .write(to: ecosystem)
        let environment = [
            "FERRY_CONTROLLER_URL": fleet.controller.url, "FERRY_TOKEN": fleet.operatorToken, "FERRY_KEY": fleet.operatorKeyPath,
        ]
        // A CI job's deploy step, as a pipeline would write it: publish, then block on the rollout.
        let script = fleet.root.appendingPathComponent("ci-deploy.sh")
        try """
        #!/bin/bash
        # Publish VERSION from ARTIFACT, then wait: exit 0 when the rollout completes, 1 when it fails.
        set -euo pipefail
        version="$1" artifact="$2"
        serial=$("$FERRY" publish --service web --version "$version" --artifact "$artifact" --ecosystem "$ECOSYSTEM" \\
            --health-url 'http://127.0.0.1:${PORT}/' --stable-seconds 2 --json |
            python3 -c 'import json, sys; print(json.load(sys.stdin)["serial"])')
        echo "published web $version as serial $serial"
        exec "$FERRY" rollout wait --service web --serial "$serial" --timeout 4m

        """.write(to: script, atomically: true, encoding: .utf8)
        func deploy(_ version: String, _ artifact: URL) async throws -> (run: Run, serial: Int64) {
            var scriptEnvironment = environment
            scriptEnvironment["FERRY"] = TestPaths.executable("ferry-controller")
            scriptEnvironment["ECOSYSTEM"] = ecosystem.path
            let run = try await Self.run("/bin/bash", [script.path, version, artifact.path], environment: scriptEnvironment)
            let line = run.output.split(separator: "\n").first { $0.hasPrefix("published web \(version) as serial ") }
            guard let serial = line.flatMap({ Int64($0.split(separator: " ").last ?? "") }) else {
                throw HarnessError("the deploy script did not publish \(version) (\(run.status)): \(run.output) \(run.errors)")
            }
            return (run, serial)
        }

        // CI: a good release → exit 0.
        let (deployGood, first) = try await deploy("1.0.0", good)
        #expect(deployGood.status == 0, "the deploy of a good release: \(deployGood.output) \(deployGood.errors)")
        #expect(deployGood.output.contains("rollout web serial \(first) completed"), "\(deployGood.output)")
        #expect(await fleet.appAnswer(port: port) == "1.0.0")
        let waitGood = try await Self.cli(
            ["rollout", "wait", "--service", "web", "--serial", "\(first)", "--timeout", "1m", "--json"],
            environment: environment
        )
        #expect(waitGood.status == 0)
        let goodVerdict = try JSONValue.parse(Array(waitGood.output.utf8))
        #expect(goodVerdict["result"]?.stringValue == "completed")
        #expect(goodVerdict["failures"]?.arrayValue.isEmpty == true)

        // CI: a release that crashes at boot → exit 1 naming the agent, the reason, and the app's line (masked).
        let (waitBad, second) = try await deploy("2.0.0", crashing)
        #expect(waitBad.status == 1, "the deploy of a crashing release: \(waitBad.output) \(waitBad.errors)")
        #expect(waitBad.output.contains("rollout web serial \(second) failed"), "\(waitBad.output)")
        #expect(waitBad.output.contains("failed: \(Self.agentName)"), "\(waitBad.output)")
        #expect(waitBad.output.contains(Self.distinctive), "\(waitBad.output)")
        #expect(waitBad.output.contains("with password ${LEDGER_PASSWORD}"), "the secret is masked: \(waitBad.output)")
        // The JSON verdict of the same (the rollout has ended, so a second wait answers at once).
        let waitBadJSON = try await Self.cli(
            ["rollout", "wait", "--service", "web", "--serial", "\(second)", "--timeout", "1m", "--json"],
            environment: environment
        )
        #expect(waitBadJSON.status == 1)
        let badVerdict = try JSONValue.parse(Array(waitBadJSON.output.utf8))
        #expect(badVerdict["result"]?.stringValue == "failed")
        let failed = try #require(badVerdict["failures"]?.arrayValue.first)
        #expect(failed["agent"]?.stringValue == Self.agentName)
        #expect(Self.tailLines(failed["failure"]).contains { $0.contains(Self.distinctive) })
        #expect(await fleet.appAnswer(port: port) == "1.0.0", "the agent rolled back to 1.0.0")

        // `status`: the failure with its tail, as text and as JSON.
        let status = try await Self.cli(["status", "--service", "web"], environment: environment)
        #expect(status.status == 0, "\(status.errors)")
        #expect(status.output.contains("failure on \(Self.agentName) (web):"), "\(status.output)")
        #expect(status.output.contains(Self.distinctive), "\(status.output)")
        let statusJSON = try JSONValue.parse(
            Array(try await Self.cli(["status", "--service", "web", "--json"], environment: environment).output.utf8)
        )
        let statusEntry = statusJSON["agents"]?.arrayValue.first?["services"]?.arrayValue.first
        #expect(Self.tailLines(statusEntry?["failure"]).contains { $0.contains(Self.distinctive) })

        // `agents show`: the agent with its process and the failure, as text and as JSON.
        let show = try await Self.cli(["agents", "show", Self.agentName], environment: environment)
        #expect(show.status == 0, "\(show.errors)")
        #expect(show.output.contains("service web: version 1.0.0 serial \(first)"), "\(show.output)")
        #expect(show.output.contains(Self.distinctive), "\(show.output)")
        #expect(show.output.contains("stderr of web-app"), "\(show.output)")
        let showJSON = try JSONValue.parse(
            Array(try await Self.cli(["agents", "show", Self.agentName, "--json"], environment: environment).output.utf8)
        )
        let service = try #require(showJSON["services"]?.arrayValue.first)
        #expect(service["serial"]?.intValue == first)
        #expect(service["processes"]?.arrayValue.first?["pid"]?.intValue != nil, "the running 1.0.0 process, with its pid")
        #expect(Self.tailLines(service["failure"]).contains { $0.contains(Self.distinctive) })
        #expect(service["failure"]?["diagnosis"]?["instances"]?.arrayValue.first?["exitCode"]?.intValue == 3)

        // `/v1/fleet` carries the same failure.
        let entry = try await fleet.fleetEntry(agent: Self.agentName)
        #expect(Self.tailLines(entry?["failure"]).contains { $0.contains(Self.distinctive) })

        // The dashboard's agent page shows the line as text.
        let credentials = Data("viewer:\(fleet.viewerToken)".utf8).base64EncodedString()
        let page = try await fleet.controller.http.send(
            HTTPClient.Request(url: "\(fleet.controller.url)/agents/\(Self.agentName)", headers: ["Authorization": "Basic \(credentials)"])
        )
        #expect(page.status == 200)
        let html = String(decoding: page.body, as: UTF8.self)
        #expect(html.contains(Self.distinctive))
        #expect(html.contains(#"data-diagnosis-cause=""#))

        // `releases` and `events`: the history, as text and as JSON.
        let releases = try await Self.cli(["releases", "--service", "web"], environment: environment)
        #expect(releases.status == 0, "\(releases.errors)")
        #expect(releases.output.contains("2.0.0") && releases.output.contains("1.0.0"))
        let releasesJSON = try JSONValue.parse(
            Array(try await Self.cli(["releases", "--service", "web", "--json"], environment: environment).output.utf8)
        )
        let listed = releasesJSON["releases"]?.arrayValue ?? []
        #expect(listed.map { $0["serial"]?.intValue } == [second, first])
        #expect(listed.allSatisfy { $0["publishedBy"]?.stringValue == "ci" })
        #expect(listed.allSatisfy { $0["keyIds"]?.arrayValue == [.string(fleet.operatorKey.publicKey.keyID)] })
        #expect(listed.first?["rollout"]?["strategy"]?.stringValue == "all")
        let events = try await Self.cli(["events", "--service", "web", "--limit", "50", "--json"], environment: environment)
        #expect(events.status == 0, "\(events.errors)")
        let parsed = try events.output.split(separator: "\n").map { try JSONValue.parse(Array($0.utf8)) }
        #expect(parsed.filter { $0["kind"]?.stringValue == "published" }.compactMap { $0["serial"]?.intValue } == [first, second])

        // The secret never left the instance.
        for output in [waitBad.output, waitBadJSON.output, status.output, show.output, html, "\(statusJSON)", "\(showJSON)", events.output] {
            #expect(!output.contains(secret), "the instance env secret leaked")
        }
    }

    /// Every log tail line of a failure document (`{serial, reason, kind, diagnosis: {logs: [{lines}]}}`).
    static func tailLines(_ failure: JSONValue?) -> [String] {
        (failure?["diagnosis"]?["logs"]?.arrayValue ?? []).flatMap { ($0["lines"]?.arrayValue ?? []).compactMap(\.stringValue) }
    }
}
