import Foundation
import TestSupport
import Testing

@testable import Agent

@Suite("pm2 calls are bounded: a wedged pm2 is killed with its process group and reported")
struct PM2CommandRunnerTests {
    /// Whether `pid` is gone (no such process, or a zombie nobody reaped yet: it runs no more code).
    static func isGone(_ pid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return true }
        // Field 3, after the parenthesised command name, is the state.
        guard let close = stat.lastIndex(of: ")") else { return false }
        return stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).hasPrefix("Z")
    }

    @Test("on timeout pm2 and the child it started are killed, and the error says pm2 is unresponsive")
    func timeoutKillsProcessGroup() async throws {
        let standIn = try PM2StandIn()
        defer { standIn.cleanUp() }
        try standIn.queue([.hanging(["jlist"])])
        let manager = try standIn.manager(timeout: .seconds(2))
        var pids: [Int32] = []
        defer {
            // Whatever happened, nothing this test started may outlive it.
            for pid in pids where !Self.isGone(pid) { kill(pid, SIGKILL) }
        }

        let started = ContinuousClock.now
        await #expect(throws: PM2Error.unresponsive(command: manager.command(for: .list).description, timeout: .seconds(2))) {
            try await manager.processes()
        }
        let elapsed = ContinuousClock.now - started
        #expect(elapsed >= .seconds(2))
        // The stand-in and its child sleep for an hour: ending within a minute means the timeout ended the call (a
        // wall-clock bound, generous enough for a loaded machine).
        #expect(elapsed < .seconds(60), "the call must end soon after its timeout, not wait for the sleeping processes")

        let recorded = try String(contentsOfFile: standIn.state + "/pids", encoding: .utf8)
        pids = recorded.split(separator: " ").compactMap { Int32($0) }
        try #require(pids.count == 2)
        // The kill was sent before the call returned; wait (bounded) only for the kernel to finish the job.
        let deadline = ContinuousClock.now + .seconds(5)
        while !pids.allSatisfy(Self.isGone), ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(Self.isGone(pids[0]), "the pm2 process itself")
        #expect(Self.isGone(pids[1]), "the child pm2 started in its process group")

        let message = PM2Error.unresponsive(command: "pm2 jlist", timeout: .seconds(60)).description
        #expect(message.hasPrefix("pm2 unresponsive: `pm2 jlist` did not finish within 60 s"))
    }

    @Test("the next call after a timeout runs normally")
    func nextCallAfterTimeout() async throws {
        let standIn = try PM2StandIn()
        defer { standIn.cleanUp() }
        try standIn.setTable(fromCapture: "jlist-namespace.json")
        try standIn.queue([.hanging(["jlist"])])
        let manager = try standIn.manager(namespace: "shop", timeout: .seconds(1))
        await #expect(throws: PM2Error.self) { try await manager.processes() }
        if let recorded = try? String(contentsOfFile: standIn.state + "/pids", encoding: .utf8) {
            for pid in recorded.split(separator: " ").compactMap({ Int32($0) }) where !Self.isGone(pid) { kill(pid, SIGKILL) }
        }
        // The next pass (a generous limit: a python stand-in can take more than a second to start on a loaded
        // machine) reads the table normally.
        let nextPass = try standIn.manager(namespace: "shop", timeout: .seconds(30))
        #expect(try await nextPass.processes().count == 3)
    }

    @Test("a pm2 that cannot be launched is a launch failure naming the command")
    func launchFailure() async throws {
        let command = PM2Command(
            executable: "/nonexistent/pm2",
            arguments: ["jlist"],
            environment: ["PATH": "/usr/bin"],
            workingDirectory: "/",
            timeout: .seconds(5)
        )
        do {
            _ = try await PM2CommandRunner().run(command)
            Issue.record("running a missing binary succeeded")
        } catch {
            guard case .launchFailed(let described, _) = error else {
                Issue.record("unexpected \(error)")
                return
            }
            #expect(described == "/nonexistent/pm2 jlist")
        }
    }

    @Test("output over the limit is refused rather than buffered without bound")
    func outputLimit() async throws {
        let standIn = try PM2StandIn()
        defer { standIn.cleanUp() }
        try standIn.setTable(fromCapture: "symlink-02-jlist.json")
        let manager = try standIn.manager()
        var runner = PM2CommandRunner()
        runner.stdoutLimit = 1024
        let tooLarge = PM2Error.outputTooLarge(command: manager.command(for: .list).description, stdoutLimit: 1024, stderrLimit: runner.stderrLimit)
        await #expect(throws: tooLarge) {
            try await runner.run(manager.command(for: .list))
        }
    }
}
