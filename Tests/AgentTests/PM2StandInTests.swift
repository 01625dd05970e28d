import Foundation
import Shared
import TestSupport
import Testing

@testable import Agent

/// The recorded PM2 7.0.3 captures (`Fixtures/pm2/captures`; its README says how they were made) and the stand-in
/// `pm2` that replays them.
enum PM2Fixtures {
    /// `Tests/AgentTests/Fixtures/pm2`.
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/pm2").path
    static var captures: String { directory + "/captures" }
    /// The stand-in `pm2` executable (python3).
    static var standIn: String { directory + "/pm2-standin" }

    /// One recorded scenario.
    struct Capture: Decodable {
        var scenario: String
        var seq: Int
        var command: String
        var exit_code: Int32
        var stdout: String
        var stderr: String
        var observations: JSONValue?

        /// `observations.<key>`.
        func observation(_ key: String) -> JSONValue? {
            guard case .object(let fields)? = observations else { return nil }
            return fields[key]
        }

        /// The `code_version` answers of `observations.<probe>` (`probe_fork`, `probe_cluster`).
        func codeVersions(_ probe: String) -> [String] {
            guard case .array(let answers)? = observation(probe) else { return [] }
            return answers.compactMap { answer in
                guard case .object(let fields) = answer, case .string(let version)? = fields["code_version"] else { return nil }
                return version
            }
        }

        /// `observations.summary_after` as (name, status, pm_exec_path) triples.
        func summaryAfter() -> [(name: String, status: String, script: String)] {
            guard case .array(let entries)? = observation("summary_after") else { return [] }
            return entries.compactMap { entry in
                guard case .object(let fields) = entry, case .string(let name)? = fields["name"],
                    case .string(let status)? = fields["status"], case .string(let script)? = fields["pm_exec_path"]
                else { return nil }
                return (name, status, script)
            }
        }
    }

    static func capture(_ name: String) throws -> Capture {
        let data = try Data(contentsOf: URL(fileURLWithPath: captures + "/" + name))
        return try JSONDecoder().decode(Capture.self, from: data)
    }

    /// File names of the copied captures whose command is exactly `command`.
    static func captureNames(command: String) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: captures)
            .filter { $0.hasSuffix(".json") }
            .filter { try capture($0).command == command }
            .sorted()
    }
}

extension AppSpec {
    /// An app with PM2's defaults, for the PM2 tests.
    static func pm2TestApp(
        _ name: String,
        script: String,
        cwd: String,
        mode: ExecMode = .fork,
        instances: Int = 1,
        interpreter: String? = "node",
        env: [String: String] = [:],
        autorestart: Bool = true,
        pm2Options: [String: JSONValue] = [:]
    ) -> AppSpec {
        AppSpec(
            name: name,
            service: "svc",
            script: script,
            cwd: cwd,
            args: [],
            interpreter: interpreter,
            interpreterArgs: [],
            instances: instances,
            execMode: mode,
            env: env,
            autorestart: autorestart,
            maxRestarts: 16,
            minUptimeMilliseconds: 1000,
            restartDelayMilliseconds: 0,
            killTimeoutMilliseconds: 1600,
            maxMemoryBytes: nil,
            pm2Options: pm2Options
        )
    }
}

/// A private PM2_HOME holding the stand-in's state (answers, table, recorded calls), removed by `cleanUp()`.
struct PM2StandIn {
    /// One queued answer: the exact argv expected next and the capture that answers it.
    struct Answer: Encodable {
        var argv: [String]
        var capture: String?
        var effect: String = "none"
        var apps: [String] = []
        var hang: Bool? = nil

        init(_ argv: [String], _ capture: String, effect: String = "none", apps: [String] = []) {
            self.argv = argv
            self.capture = capture
            self.effect = effect
            self.apps = apps
        }

        /// Sleeps for an hour after starting a child that sleeps too.
        static func hanging(_ argv: [String]) -> Answer {
            var answer = Answer(argv, "")
            answer.capture = nil
            answer.hang = true
            return answer
        }
    }

    /// One call the stand-in received.
    struct Invocation: Decodable, Equatable {
        var argv: [String]
        var env: [String: String]
        var cwd: String
    }

    let root: URL
    var pm2Home: String { root.appendingPathComponent("pm2home").path }
    var userHome: String { root.appendingPathComponent("userhome").path }
    var state: String { pm2Home + "/standin" }
    /// Where the test writes the service's generated ecosystem file.
    var ecosystem: String { root.appendingPathComponent("ecosystem.json").path }

    init() throws {
        root = try TestPaths.makeTemporaryDirectory("ferry-pm2")
        try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: userHome, withIntermediateDirectories: true)
    }

    func cleanUp() {
        try? FileManager.default.removeItem(at: root)
    }

    /// A manager driving the stand-in.
    func manager(namespace: String = "ferry", timeout: Duration = .seconds(30)) throws -> PM2ProcessManager {
        try PM2ProcessManager(
            configuration: .init(
                executable: PM2Fixtures.standIn,
                pm2Home: pm2Home,
                home: userHome,
                namespace: namespace,
                commandTimeout: timeout
            ),
            logger: .init(label: "test.pm2"),
            agentEnvironment: ["PATH": "/usr/bin:/bin", "HOME": "/root", "FERRY_TOKEN": "must-not-leak"]
        )
    }

    /// `pm2 jlist` prints `capture`'s stdout byte for byte until an answer changes the table.
    func setTable(fromCapture name: String) throws {
        try Data(try PM2Fixtures.capture(name).stdout.utf8).write(to: URL(fileURLWithPath: state + "/jlist"))
    }

    func setTable(raw: String) throws {
        try Data(raw.utf8).write(to: URL(fileURLWithPath: state + "/jlist"))
    }

    /// Replaces the answer queue.
    func queue(_ answers: [Answer]) throws {
        try JSONEncoder().encode(answers).write(to: URL(fileURLWithPath: state + "/answers.json"))
        try Data("0".utf8).write(to: URL(fileURLWithPath: state + "/cursor"))
    }

    /// Answers queued but not asked for.
    func unusedAnswers() throws -> Int {
        let answers = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: state + "/answers.json")))
        let cursor = (try? String(contentsOfFile: state + "/cursor", encoding: .utf8)).flatMap { Int($0) } ?? 0
        return ((answers as? [Any])?.count ?? 0) - cursor
    }

    /// Every call received so far.
    func invocations() throws -> [Invocation] {
        guard let text = try? String(contentsOfFile: state + "/invocations.jsonl", encoding: .utf8) else { return [] }
        return try text.split(separator: "\n").map { try JSONDecoder().decode(Invocation.self, from: Data($0.utf8)) }
    }
}

@Suite("Stand-in pm2 replays recorded PM2 behaviour byte for byte")
struct PM2StandInTests {
    @Test("answers a queued call with the capture's stdout, stderr and exit code, and refuses any other call")
    func replaysCaptureExactly() async throws {
        let standIn = try PM2StandIn()
        defer { standIn.cleanUp() }
        let capture = try PM2Fixtures.capture("restart-unknown.json")
        try standIn.queue([.init(["restart", "no-such-app"], "restart-unknown.json")])
        let manager = try standIn.manager()
        let runner = PM2CommandRunner()

        let answered = try await runner.run(manager.command(for: .restart(app: "no-such-app")))
        #expect(answered.termination == .exited(capture.exit_code))
        #expect(answered.stdout == Array(capture.stdout.utf8))
        #expect(answered.stderr == capture.stderr)

        let refused = try await runner.run(manager.command(for: .delete(app: "web")))
        #expect(refused.termination == .exited(97))
        #expect(refused.stderr.contains("unexpected call pm2 delete web"))
        #expect(try standIn.unusedAnswers() == 0)
    }
}
