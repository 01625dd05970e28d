import Foundation
import Shared
import TestSupport
import Testing

/// `ferry-agent once` and `ferry-agent status`, run as the built binary against a live controller.
@Suite("ferry-agent once and status", .serialized)
struct AgentOnceCommandTests {
    @Test(.timeLimit(.minutes(3)))
    func onceConvergesAndStatusShowsWhatRuns() async throws {
        try await FleetFixture.with { fleet in try await run(fleet) }
    }

    private func run(_ fleet: FleetFixture) async throws {
        try await fleet.startController()
        let port = try freeLoopbackPort()
        // The enrollment token arrives on standard input, as deploy/install-agent.sh passes it.
        let config = try await fleet.enrollAgent(name: "one-shot", tokenOnStandardInput: true)
        let agent = TestPaths.executable("ferry-agent")
        let environment = ["PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": fleet.root.path]

        // Nothing published yet: not converged, and the reason says so.
        let early = try await Command.run(agent, ["once", "--config", config], environment: environment)
        #expect(early.status == 1)
        #expect(early.stderr.contains("not converged: web: the controller has no release for this service yet"), "\(early.stderr)")

        try await fleet.publish(serial: 1, version: "1.0.0", port: port)
        let once = try await Command.run(agent, ["once", "--config", config], environment: environment)
        #expect(once.status == 0, "\(once.stdout)\(once.stderr)")
        #expect(once.stdout.contains("converged"))
        // The app keeps running after `once` exits: it belongs to the supervisor daemon.
        #expect(await fleet.appAnswer(port: port)?.hasPrefix("1.0.0") == true)

        let status = try await Command.run(agent, ["status", "--config", config], environment: environment)
        #expect(status.status == 0, "\(status.stderr)")
        #expect(status.stdout.contains("web: serial 1 (1.0.0), phase running"), "\(status.stdout)")
        #expect(status.stdout.contains("web-app [0] online"), "\(status.stdout)")

        let json = try await Command.run(agent, ["status", "--config", config, "--json"], environment: environment)
        let report = try StatusReport(json: JSONValue.parse(Array(json.stdout.utf8)))
        #expect(report.services.first?.serial == 1)
        #expect(report.services.first?.processes.first?.status == "online")
        #expect(!json.stdout.contains("NODE_ENV"), "no env in the report")

        // The controller saw the report `once` sent.
        try await eventually("the fleet shows serial 1") {
            try await fleet.fleetEntry(agent: "one-shot")?["serial"]?.intValue == 1 ? true : nil
        }

        // One agent process per state directory: `once` while the daemon runs is refused, naming the daemon, before it
        // touches anything (it cleaned up the daemon's staging files, and both wrote state.json); once the daemon is
        // gone, `once` runs again.
        let daemon = try fleet.startAgent(config: config, label: "daemon")
        _ = try await eventually("the daemon running", timeout: .seconds(30)) {
            (daemon.stdout + daemon.stderr).contains("agent starting") ? true : nil
        }
        let refused = try await Command.run(agent, ["once", "--config", config], environment: environment)
        #expect(refused.status != 0)
        #expect(
            refused.stderr.contains("another ferry-agent (run, once or enroll, pid \(daemon.pid)) works on this state directory"),
            "\(refused.stderr)"
        )
        await daemon.terminate()
        let after = try await Command.run(agent, ["once", "--config", config], environment: environment)
        #expect(after.status == 0, "\(after.stdout)\(after.stderr)")

        // `status` only looks: with the supervisor stopped (its app stays in its table), it says so and starts nothing.
        // Before, it started a daemon of its own, which brought the app back (as root, when run with sudo).
        let stateDir = try #require(try JSONValue.parse(Array(Data(contentsOf: URL(fileURLWithPath: config))))["stateDir"]?.stringValue)
        let stop = try await Command.run(agent, ["supervisor", "--home", "\(stateDir)/supervisor", "--stop"], environment: environment)
        #expect(stop.status == 0, "\(stop.stderr)")
        #expect(await fleet.appAnswer(port: port) == nil, "the app stopped with the supervisor")
        let looked = try await Command.run(agent, ["status", "--config", config], environment: environment)
        #expect(looked.stdout.contains("process table unavailable: no supervisor daemon runs"), "\(looked.stdout)\(looked.stderr)")
        try await Task.sleep(for: .seconds(1))
        #expect(await fleet.appAnswer(port: port) == nil, "status brought the app back")
        #expect(!FileManager.default.fileExists(atPath: "\(stateDir)/supervisor/supervisor.pid"), "status started a supervisor")
    }
}
