import Foundation
import Shared
import TestSupport
import Testing

/// An agent's state directory carried to another machine (a machine image baked after enrolment), with the real
/// `ferry-agent` binary, a live controller and a loopback stand-in of the EC2 metadata service: the copy does not speak
/// for the agent (`check-machine`, `once` and `run` stop with status 78 before contacting the controller), and
/// enrolled afresh it is an agent of its own.
@Suite("A copied enrolment", .serialized)
struct MachineCopyEndToEndTests {
    static let original = "i-0aaaaaaaaaaaaaaaa"
    static let copy = "i-0bbbbbbbbbbbbbbbb"

    @Test(.timeLimit(.minutes(3)))
    func aCopyStopsAndEnrolsAfresh() async throws {
        try await MetadataStandIn.with(.init(instanceID: Self.original)) { metadata in
            try await FleetFixture.with { fleet in try await run(fleet, metadata) }
        }
    }

    private func run(_ fleet: FleetFixture, _ metadata: MetadataStandIn) async throws {
        try await fleet.startController()
        let agent = TestPaths.executable("ferry-agent")
        let environment = ["PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": fleet.root.path]
        let identity = ["--machine-identity", "ec2", "--instance-metadata-url", metadata.baseURL]
        let config = try await fleet.enrollAgent(name: "original", extraArguments: identity)
        let stateDir = fleet.root.appendingPathComponent("original/state").path
        let recordFile = "\(stateDir)/machine.json"
        func recordedID() throws -> String? {
            try JSONValue.parse(Array(Data(contentsOf: URL(fileURLWithPath: recordFile))))["id"]?.stringValue
        }
        func agentCommand(_ arguments: [String], environment extra: [String: String] = [:]) async throws -> CommandResult {
            try await Command.run(agent, arguments + ["--config", config], environment: environment.merging(extra) { $1 })
        }

        // Enrolment recorded this instance.
        #expect(try recordedID() == Self.original)
        let same = try await agentCommand(["check-machine"])
        #expect(same.status == 0, "\(same.stderr)")
        #expect(same.stdout.contains("this machine (instance \(Self.original)) is the one the agent was enrolled on"), "\(same.stdout)")
        // A proxy named in the environment is not used for the metadata service (no proxy reaches a link-local address).
        let closed = "http://127.0.0.1:\(try freeLoopbackPort())"
        let proxied = try await agentCommand(["check-machine"], environment: ["http_proxy": closed, "HTTP_PROXY": closed])
        #expect(proxied.status == 0, "\(proxied.stderr)")

        // The image is launched as another instance: every command that would speak for the agent stops.
        metadata.behaviour.instanceID = Self.copy
        let copied = try await agentCommand(["check-machine"])
        #expect(copied.status == 78)
        #expect(copied.stderr.contains("was enrolled on another machine (instance \(Self.original), host "), "\(copied.stderr)")
        #expect(copied.stderr.contains("this machine is instance \(Self.copy)"), "\(copied.stderr)")
        // `status` says why the unit stopped.
        let status = try await agentCommand(["status"])
        #expect(status.stdout.contains("machine: this agent's state directory \(stateDir) was enrolled on another machine"), "\(status.stdout)")
        let once = try await agentCommand(["once"])
        #expect(once.status == 78, "\(once.stdout)\(once.stderr)")
        #expect(once.stderr.contains("was enrolled on another machine"), "\(once.stderr)")
        let daemon = try fleet.startAgent(config: config, label: "copy-run")
        let deadline = ContinuousClock.now + .seconds(30)
        while daemon.isRunning, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
        #expect(!daemon.isRunning, "run kept going on a copy")
        await daemon.terminate()
        #expect(daemon.process.terminationStatus == 78, "\(daemon.stderr.suffix(2000))")
        #expect(daemon.stderr.contains("The agent stops here"), "\(daemon.stderr.suffix(2000))")
        // The copy never spoke for the agent, and the record is the original's still.
        let entry = try await fleet.controller.fleet(token: fleet.viewerToken)["agents"]?.arrayValue.first { $0["name"]?.stringValue == "original" }
        #expect(entry?["lastSeen"] == .null, "\(String(describing: entry))")
        #expect(try recordedID() == Self.original)

        // Enrolled afresh under its own name (what the cloud-init bootstrap does), the copy is an agent of its own.
        let reenrol = try await Command.run(
            agent,
            [
                "enroll", "--controller", fleet.controller.url, "--token-file", fleet.root.appendingPathComponent("original/enroll.token").path,
                "--config", config, "--name", "copy", "--state-dir", stateDir, "--trusted-key", fleet.operatorPublicKeyPath,
                "--process-manager", "builtin", "--service", "web", "--force",
            ] + identity,
            environment: environment
        )
        #expect(reenrol.status == 0, "\(reenrol.stdout)\(reenrol.stderr)")
        #expect(reenrol.stdout.contains("machine: instance \(Self.copy)"), "\(reenrol.stdout)")
        #expect(try recordedID() == Self.copy)
        let fresh = try await agentCommand(["once"])
        #expect(fresh.status == 1, "nothing published yet: \(fresh.stdout)\(fresh.stderr)")
        #expect(fresh.stderr.contains("no release for this service yet"), "\(fresh.stderr)")

        // An agent enrolled before the check has no record: its first start records the machine.
        try FileManager.default.removeItem(atPath: recordFile)
        let unrecorded = try await agentCommand(["check-machine"])
        #expect(unrecorded.status == 0)
        #expect(unrecorded.stdout.contains("no machine recorded yet"), "\(unrecorded.stdout)")
        _ = try await agentCommand(["once"])
        #expect(try recordedID() == Self.copy)

        let sameStatus = try await agentCommand(["status"])
        #expect(!sameStatus.stdout.contains("machine:"), "nothing to say on the machine it was enrolled on: \(sameStatus.stdout)")

        // A metadata service that refuses: the check cannot tell, the agent goes on and says why.
        metadata.behaviour.tokenStatus = 403
        let unknown = try await agentCommand(["check-machine"])
        #expect(unknown.status == 1)
        #expect(unknown.stderr.contains("cannot tell: the instance metadata service refused a session token"), "\(unknown.stderr)")
        let unknownStatus = try await agentCommand(["status"])
        #expect(unknownStatus.stdout.contains("machine: cannot tell: the instance metadata service refused"), "\(unknownStatus.stdout)")
        let blind = try await agentCommand(["once"])
        #expect(blind.status == 1, "\(blind.stderr)")
        #expect(blind.stderr.contains("cannot tell whether this is the machine the agent was enrolled on"), "\(blind.stderr)")
        #expect(blind.stderr.contains("no release for this service yet"), "the pass ran: \(blind.stderr)")

        // Enrolment with a source named on the command line that cannot be read fails before the controller is asked.
        let refused = try await Command.run(
            agent,
            [
                "enroll", "--controller", fleet.controller.url, "--token-file", fleet.root.appendingPathComponent("original/enroll.token").path,
                "--config", fleet.root.appendingPathComponent("third.json").path, "--name", "third",
                "--state-dir", fleet.root.appendingPathComponent("third-state").path, "--trusted-key", fleet.operatorPublicKeyPath,
                "--process-manager", "builtin", "--service", "web",
            ] + identity,
            environment: environment
        )
        #expect(refused.status != 0)
        #expect(refused.stderr.contains("--machine-identity ec2: the instance metadata service refused a session token"), "\(refused.stderr)")
        #expect(!FileManager.default.fileExists(atPath: fleet.root.appendingPathComponent("third.json").path))
        let agents = try await fleet.controller.fleet(token: fleet.viewerToken)["agents"]?.arrayValue.compactMap { $0["name"]?.stringValue }
        #expect(agents?.contains("third") == false, "\(String(describing: agents))")
    }
}
