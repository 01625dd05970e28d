import Foundation
import Shared
import TestSupport
import Testing

@testable import Agent

/// App processes a dead PM2 daemon left outside any table (`PM2Leftovers`): found by the environment PM2 gives its
/// apps, stopped when a daemon answers that the last census did not see, and never an app's own child, another
/// namespace's or another home's process, or a pm2 process without `pm_id`.
@Suite("PM2 leftovers of a dead daemon", .serialized)
struct PM2LeftoversTests {
    /// A process the test starts with an environment as PM2 would give it, and whether the census must stop it.
    struct Candidate: Sendable, CustomTestStringConvertible {
        var label: String
        var environment: @Sendable (_ home: String) -> [String: String]
        var stopped: Bool
        var testDescription: String { label }
    }

    static let namespace = "ferry-test"

    static let candidates: [Candidate] = [
        // Started after the daemon that answers: what a live app's daemonized helper looks like (re-parented to init,
        // the app's environment), left alone; once that daemon died and another answers, a leftover.
        Candidate(
            label: "an app of this home and namespace",
            environment: { ["PM2_HOME": $0, "namespace": namespace, "pm_id": "7", "name": "web-app"] },
            stopped: true
        ),
        Candidate(
            label: "an app of another namespace",
            environment: { ["PM2_HOME": $0, "namespace": "other", "pm_id": "8", "name": "web-app"] },
            stopped: false
        ),
        Candidate(
            label: "an app of another PM2 home",
            environment: { ["PM2_HOME": $0 + "-other", "namespace": namespace, "pm_id": "9", "name": "web-app"] },
            stopped: false
        ),
        Candidate(label: "a pm2 process (no pm_id)", environment: { ["PM2_HOME": $0, "namespace": namespace] }, stopped: false),
    ]

    @Test("against real PM2: a census when another daemon answers stops the leftovers and nothing else", .timeLimit(.minutes(3)))
    func leftoversStopped() async throws {
        let pm2 = try #require(try Backend.pm2.pm2Binary())
        let root = try TestPaths.makeTemporaryDirectory("ferry-real-pm2-leftovers")
        defer { try? FileManager.default.removeItem(at: root) }
        let home = root.appendingPathComponent("pm2home").path
        var started: [ChildProcess] = []
        defer {
            for child in started { child.kill() }
            for pid in DaemonDeathTests.pm2Daemons(home: home) { kill(pid, SIGKILL) }
        }
        let idle = root.appendingPathComponent("idle.js").path
        try "setInterval(() => {}, 1000);\n".write(toFile: idle, atomically: true, encoding: .utf8)
        // The app runs a child of its own: it inherits the app's environment, and must never count as a leftover.
        let parent = root.appendingPathComponent("parent.js").path
        try "require('child_process').spawn('node', ['\(idle)'], { stdio: 'ignore' });\nsetInterval(() => {}, 1000);\n"
            .write(toFile: parent, atomically: true, encoding: .utf8)
        let app = AppSpec.pm2TestApp("parent", script: parent, cwd: root.path)
        let ecosystem = root.appendingPathComponent("ecosystem.json").path
        try Data(EcosystemWriter.render(apps: [app], namespace: Self.namespace)).write(to: URL(fileURLWithPath: ecosystem))
        func manager() throws -> PM2ProcessManager {
            try PM2ProcessManager(configuration: .init(executable: pm2, pm2Home: home, namespace: Self.namespace), logger: .init(label: "test.pm2"))
        }
        let first = try manager()
        try await first.start(app, ecosystem: ecosystem)
        let appPid = try #require(try await PM2ProcessManagerTests.settle(first, app).first?.pid)
        let appChild = try await eventually("the app's own child running") { () -> Int32? in
            PM2Daemons.childProcesses(of: appPid).first?.pid
        }
        let candidates = try Self.candidates.map { candidate in
            try ChildProcess(
                "/usr/bin/env",
                ["node", idle],
                environment: candidate.environment(home).merging(["PATH": "/usr/bin:/bin"]) { $1 },
                logDirectory: root,
                label: "candidate-\(started.count)"
            )
        }
        started += candidates

        // A manager that has seen no daemon yet (an agent just started): the census runs once. Every candidate started
        // after the daemon that answers, so none is a dead daemon's: all are left alone (before, the marked one was
        // stopped: a live app's daemonized helper, killed at every agent start).
        let agent = try manager()
        #expect(try await agent.processes().compactMap(\.pid) == [appPid])
        try await Task.sleep(for: .milliseconds(500))
        for (candidate, process) in zip(Self.candidates, candidates) {
            #expect(process.isRunning, "\(candidate.label) left alone while the daemon it started after answers")
        }
        #expect(DaemonDeathTests.isRunning(appPid) && DaemonDeathTests.isRunning(appChild), "the listed app and its own child left alone")
        #expect(agent.takeNotices().isEmpty)

        // The same daemon again: no census (a marked process started since is not looked for on every pass).
        let later = try ChildProcess(
            "/usr/bin/env",
            ["node", idle],
            environment: Self.candidates[0].environment(home).merging(["PATH": "/usr/bin:/bin", "name": "later"]) { $1 },
            logDirectory: root,
            label: "later"
        )
        started.append(later)
        _ = try await agent.processes()
        #expect(later.isRunning && agent.takeNotices().isEmpty, "no census while the same daemon answers")

        // The daemon dies (kill -9). Its fork-mode app is detached and outlives it, until PM2's metrics transport in
        // the app notices its IPC channel closed and exits (code 1, usually within a second); the app's own child
        // outlives both. The next jlist starts another daemon, which knows nothing of them: the census stops what still
        // runs of them, and the later leftover.
        let daemon = try #require(DaemonDeathTests.pm2Daemons(home: home).first)
        kill(daemon, SIGKILL)
        _ = try await eventually("the daemon gone", timeout: .seconds(10)) { DaemonDeathTests.isRunning(daemon) ? nil : true }
        #expect(try await agent.processes().isEmpty, "the new daemon's table is empty")
        try await eventually("the dead daemon's app, its child and the later leftover stopped", timeout: .seconds(10)) { () -> Bool? in
            !DaemonDeathTests.isRunning(appPid) && !DaemonDeathTests.isRunning(appChild) && !later.isRunning ? true : nil
        }
        for (candidate, process) in zip(Self.candidates, candidates) {
            if candidate.stopped {
                try await eventually("\(candidate.label) stopped", timeout: .seconds(10)) { process.isRunning ? nil : true }
            } else {
                #expect(process.isRunning, "\(candidate.label) still left alone")
            }
        }
        let afterDeath = agent.takeNotices().joined(separator: "\n")
        // The app itself, or (when it had already exited) its child.
        #expect(afterDeath.contains("parent (pid ") && afterDeath.contains("later (pid \(later.pid))"), "\(afterDeath)")
        #expect(afterDeath.contains("web-app (pid \(candidates[0].pid)) was still running"), "\(afterDeath)")
        await PM2ProcessManagerTests.killDaemon(agent)
    }
}
