import Foundation
import Shared
import TestSupport
import Testing

/// An idle `ferry-agent` process sleeps: with the agent's executor (`PooledExecutor`) no thread of it wakes while
/// nothing happens. Shown on the builtin supervisor daemon (the same binary, the same `main`) with no app: over four
/// seconds its threads switch context at most twice. The same daemon on the runtime's own executor
/// (`FERRY_EXECUTOR=platform`) wakes once a second (libdispatch's pool monitor), which the same count sees: that run
/// shows the measurement can fail. And it lets go of the code its start-up ran (`LoadedCode`).
@Suite("Idle daemon")
struct IdleDaemonTests {
    @Test("an idle ferry-agent process does not wake once a second; on the platform executor it does")
    func idleProcessSleeps() async throws {
        // Successive 4 s windows until one is quiet (at most five): on a loaded machine, the daemon may still be
        // finishing its start-up in the first. An executor that ticks once a second has no quiet window at all.
        let pooled = try await contextSwitches(environment: [:], windows: 5)
        #expect(pooled.contains { $0 <= 2 }, "context switches of the idle daemon's threads per 4 s with the agent's executor: \(pooled)")
        let platform = try await contextSwitches(environment: ["FERRY_EXECUTOR": "platform"], windows: 2)
        #expect(platform.allSatisfy { $0 >= 3 }, "the same count on the runtime's executor, which ticks once a second: \(platform)")
    }

    @Test("an idle daemon lets go of the code its start-up ran; with FERRY_CODE_PAGES=keep it keeps it mapped")
    func idleProcessLetsGoOfStartupCode() async throws {
        // Memory checks every 300 ms: the first one after start-up lets go. Kept: measured once several checks passed.
        let kept = try await withIdleDaemon(environment: ["FERRY_CODE_PAGES": "keep"], arguments: ["--memory-check-ms", "300"]) { daemon in
            try await Task.sleep(for: .seconds(2))
            return try Self.residentFileKB(of: daemon.pid)
        }
        let released = try await withIdleDaemon(environment: [:], arguments: ["--memory-check-ms", "300"]) { daemon in
            let deadline = ContinuousClock.now + .seconds(10)
            var resident = try Self.residentFileKB(of: daemon.pid)
            while resident + 2048 >= kept, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(100))
                resident = try Self.residentFileKB(of: daemon.pid)
            }
            return resident
        }
        #expect(released + 2048 < kept, "file-backed RSS of the idle daemon: \(released) kB letting go, \(kept) kB keeping")
    }

    /// Starts `ferry-agent supervisor` with no app, lets it settle, and counts its threads' context switches in
    /// successive 4 s windows: up to `windows` of them, ending after the first with at most two.
    private func contextSwitches(environment extra: [String: String], windows: Int) async throws -> [Int] {
        try await withIdleDaemon(environment: extra) { daemon in
            // Start-up (the table's resurrection, the first memory check's timer) settles first.
            try await Task.sleep(for: .milliseconds(1500))
            var counts: [Int] = []
            var before = try Self.switches(of: daemon.pid)
            while counts.count < windows, counts.last.map({ $0 > 2 }) ?? true {
                try await Task.sleep(for: .seconds(4))
                let after = try Self.switches(of: daemon.pid)
                #expect(daemon.isRunning)
                // A thread that ended in between took its count with it: it counts as one wake-up at least.
                counts.append(
                    after.reduce(0) { total, thread in total + thread.value - (before[thread.key] ?? 0) }
                        + before.keys.filter { after[$0] == nil }.count
                )
                before = after
            }
            return counts
        }
    }

    /// Runs `body` with a `ferry-agent supervisor` daemon that has no app and has opened its socket; the daemon is
    /// killed after.
    private func withIdleDaemon<Result>(
        environment extra: [String: String],
        arguments: [String] = [],
        _ body: (ChildProcess) async throws -> Result
    ) async throws -> Result {
        try await TestPaths.withTemporaryDirectory("ferry-idle") { directory in
            let home = directory.appendingPathComponent("home").path
            var environment = ProcessInfo.processInfo.environment
            environment["FERRY_EXECUTOR"] = nil
            environment["FERRY_CODE_PAGES"] = nil
            environment.merge(extra) { $1 }
            let daemon = try ChildProcess(
                TestPaths.executable("ferry-agent"),
                ["supervisor", "--home", home] + arguments,
                environment: environment,
                logDirectory: directory,
                label: "supervisor"
            )
            defer { daemon.kill() }
            let socket = "\(home)/supervisor.sock"
            let deadline = ContinuousClock.now + .seconds(30)
            while !FileManager.default.fileExists(atPath: socket) {
                guard ContinuousClock.now < deadline, daemon.isRunning else {
                    throw HarnessError("the daemon did not open its socket: \(daemon.stderr.suffix(2000))")
                }
                try await Task.sleep(for: .milliseconds(50))
            }
            return try await body(daemon)
        }
    }

    /// `RssFile` of `pid` in kB: its resident pages that are mapped from files (code, read-only data).
    private static func residentFileKB(of pid: Int32) throws -> Int {
        let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("RssFile:") }),
            let kb = Int(line.dropFirst("RssFile:".count).trimmingCharacters(in: .whitespaces).split(separator: " ")[0])
        else { throw HarnessError("no RssFile in /proc/\(pid)/status") }
        return kb
    }

    /// Voluntary and involuntary context switches of each thread of `pid`, by thread id, from
    /// `/proc/<pid>/task/*/status`.
    private static func switches(of pid: Int32) throws -> [String: Int] {
        var counts: [String: Int] = [:]
        for task in try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task") {
            guard let status = try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/status", encoding: .utf8) else { continue }
            counts[task] = status.split(separator: "\n").filter { $0.contains("ctxt_switches:") }.reduce(0) { total, line in
                total + (Int(line.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) ?? 0)
            }
        }
        return counts
    }
}
