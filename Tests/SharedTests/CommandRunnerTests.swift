import Foundation
import Glibc
import Shared
import TestSupport
import Testing

/// The one runner for short-lived commands, with real child processes: what it passes in, what it brings back, and
/// what it kills.
@Suite("Command runner")
struct CommandRunnerTests {
    static let shell = "/bin/sh"

    static func request(
        _ script: String,
        timeout: Duration = .seconds(30),
        _ change: (inout CommandRunner.Request) -> Void = { _ in }
    )
        -> CommandRunner.Request
    {
        var request = CommandRunner.Request(executable: shell, arguments: ["-c", script], environment: ["PATH": "/usr/bin:/bin"], timeout: timeout)
        change(&request)
        return request
    }

    enum Expected: Sendable, CustomStringConvertible {
        case output(ProcessTermination, stdout: String, stderr: String)
        case failure(CommandRunner.Failure)

        var description: String {
            switch self {
            case .output(let termination, let stdout, let stderr):
                "\(termination), stdout \(stdout.debugDescription), stderr \(stderr.debugDescription)"
            case .failure(let failure): "\(failure)"
            }
        }
    }

    struct Case: Sendable, CustomStringConvertible {
        let label: String
        let request: CommandRunner.Request
        let expected: Expected
        var description: String { label }
    }

    static let megabyte = [UInt8](repeating: UInt8(ascii: "x"), count: 1 << 20)

    static let cases: [Case] = [
        Case(
            label: "exit 0 with both streams",
            request: request("printf out; printf err >&2"),
            expected: .output(.exited(0), stdout: "out", stderr: "err")
        ),
        Case(label: "a non-zero exit is an output, not a failure", request: request("exit 3"), expected: .output(.exited(3), stdout: "", stderr: "")),
        Case(label: "a signal", request: request("kill -TERM $$"), expected: .output(.signalled(SIGTERM), stdout: "", stderr: "")),
        Case(
            label: "stdin bytes reach the command",
            request: request("cat") { $0.standardInput = Array("hello\n".utf8) },
            expected: .output(.exited(0), stdout: "hello\n", stderr: "")
        ),
        Case(
            label: "a megabyte through stdin and back, larger than any pipe buffer",
            request: request("cat") { $0.standardInput = megabyte },
            expected: .output(.exited(0), stdout: String(decoding: megabyte, as: UTF8.self), stderr: "")
        ),
        Case(
            label: "a command that never reads its stdin: EPIPE, not SIGPIPE for the caller",
            request: request("exec 0<&-; exit 0") { $0.standardInput = megabyte },
            expected: .output(.exited(0), stdout: "", stderr: "")
        ),
        Case(label: "no stdin bytes: stdin is /dev/null", request: request("cat"), expected: .output(.exited(0), stdout: "", stderr: "")),
        Case(
            label: "exactly the given environment",
            request: CommandRunner.Request(executable: "/usr/bin/env", arguments: [], environment: ["ONLY": "this one"], timeout: .seconds(30)),
            expected: .output(.exited(0), stdout: "ONLY=this one\n", stderr: "")
        ),
        Case(
            label: "the working directory",
            request: request("pwd") { $0.workingDirectory = "/usr/bin" },
            expected: .output(.exited(0), stdout: "/usr/bin\n", stderr: "")
        ),
        Case(
            label: "stdout exactly at its limit is accepted",
            request: request("printf 1234") { $0.standardOutputLimit = 4 },
            expected: .output(.exited(0), stdout: "1234", stderr: "")
        ),
        Case(
            label: "stdout over its limit",
            request: request("printf 12345; sleep 30") { $0.standardOutputLimit = 4 },
            expected: .failure(.outputTooLarge(stream: .standardOutput, limit: 4))
        ),
        Case(
            label: "endless stdout",
            request: request("yes") { $0.standardOutputLimit = 1 << 16 },
            expected: .failure(.outputTooLarge(stream: .standardOutput, limit: 1 << 16))
        ),
        Case(
            label: "stderr over its limit",
            request: request("printf 12345 >&2; sleep 30") { $0.standardErrorLimit = 4 },
            expected: .failure(.outputTooLarge(stream: .standardError, limit: 4))
        ),
        Case(
            label: "past its timeout",
            request: request("sleep 30", timeout: .milliseconds(300)),
            expected: .failure(.timedOut(after: .milliseconds(300)))
        ),
        Case(
            label: "a program that does not exist",
            request: CommandRunner.Request(executable: "/nonexistent/tool", arguments: ["x"], environment: [:], timeout: .seconds(5)),
            expected: .failure(
                .launchFailed(.failed(executable: "/nonexistent/tool", arguments: ["/nonexistent/tool", "x"], workingDirectory: nil, errno: ENOENT))
            )
        ),
        Case(
            label: "a working directory that does not exist",
            request: request("true") { $0.workingDirectory = "/nonexistent/dir" },
            expected: .failure(
                .launchFailed(.failed(executable: shell, arguments: [shell, "-c", "true"], workingDirectory: "/nonexistent/dir", errno: ENOENT))
            )
        ),
    ]

    @Test("each command gives its exit, its output, or the failure that names what went wrong", arguments: cases)
    func runs(_ testCase: Case) async throws {
        let started = ContinuousClock.now
        do {
            let output = try await CommandRunner.run(testCase.request)
            guard case .output(let termination, let stdout, let stderr) = testCase.expected else {
                Issue.record("\(testCase): got \(output.termination), expected \(testCase.expected)")
                return
            }
            #expect(output.termination == termination)
            #expect(output.standardOutput == Array(stdout.utf8))
            #expect(String(decoding: output.standardError, as: UTF8.self) == stderr)
        } catch {
            guard case .failure(let expected) = testCase.expected else {
                Issue.record("\(testCase): failed with \(error), expected \(testCase.expected)")
                return
            }
            #expect(error == expected)
            #expect(!error.description.isEmpty)
        }
        // Nothing here waits out a `sleep 30`: a failure kills the group at once.
        #expect(started.duration(to: .now) < .seconds(20), "\(testCase)")
    }

    /// Whether `pid` is gone (or a zombie, which runs no more code).
    static func isGone(_ pid: Int32) -> Bool {
        guard let stat = SmallFile.text("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") else { return true }
        return stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).hasPrefix("Z")
    }

    static func waitUntilGone(_ pids: [Int32]) async throws -> Bool {
        let deadline = ContinuousClock.now + .seconds(5)
        while !pids.allSatisfy(isGone), ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        return pids.allSatisfy(isGone)
    }

    @Test("a timeout kills the command and what it started in its process group")
    func timeoutKillsTheGroup() async throws {
        try await TestPaths.withTemporaryDirectory("runner-group") { directory in
            let pids = directory.appendingPathComponent("pids").path
            let request = Self.request("sleep 60 & echo $$ $! > '\(pids)'; wait", timeout: .seconds(1))
            await #expect(throws: CommandRunner.Failure.timedOut(after: .seconds(1))) { try await CommandRunner.run(request) }
            let recorded = try String(contentsOfFile: pids, encoding: .utf8).split(separator: " ").compactMap {
                Int32($0.trimmingCharacters(in: .whitespacesAndNewlines))
            }
            try #require(recorded.count == 2)
            defer {
                for pid in recorded where !Self.isGone(pid) { kill(pid, SIGKILL) }
            }
            #expect(try await Self.waitUntilGone(recorded), "the shell and its background sleep")
        }
    }

    @Test("cancelling the calling task kills the command at once")
    func cancellation() async throws {
        try await TestPaths.withTemporaryDirectory("runner-cancel") { directory in
            let pidFile = directory.appendingPathComponent("pid").path
            let request = Self.request("echo $$ > '\(pidFile)'; exec sleep 60", timeout: .seconds(60))
            let run = Task { try await CommandRunner.run(request) }
            // The start-up deadline only catches a hang (a shell can take seconds to start on a loaded machine).
            let deadline = ContinuousClock.now + .seconds(60)
            while SmallFile.text(pidFile).flatMap({ Int32($0) }) == nil, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(20))
            }
            let pid = try #require(SmallFile.text(pidFile).flatMap { Int32($0) })
            defer { if !Self.isGone(pid) { kill(pid, SIGKILL) } }
            let started = ContinuousClock.now
            run.cancel()
            await #expect(throws: CommandRunner.Failure.cancelled) { try await run.value }
            // Half the command's 60 s: the cancellation ended it (generous for a loaded machine).
            #expect(started.duration(to: .now) < .seconds(30))
            #expect(try await Self.waitUntilGone([pid]))
        }
    }

    @Test(
        "the run ends when the command exits, even while something it started keeps its stdout open",
        arguments: [CommandRunner.ExitDetection.pidFD, .polling]
    )
    func descendantHoldingThePipe(_ detection: CommandRunner.ExitDetection) async throws {
        // The background sleep inherits stdout and outlives the shell: waiting for end of file would wait 120 s (and
        // hit the 90 s timeout).
        let request = Self.request("sleep 120 & echo $!", timeout: .seconds(90))
        let started = ContinuousClock.now
        let output = try await CommandRunner.run(request, exitDetection: detection)
        let elapsed = started.duration(to: .now)
        let sleeper = try #require(Int32(String(decoding: output.standardOutput, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)))
        kill(sleeper, SIGKILL)
        #expect(output.termination == .exited(0))
        #expect(elapsed < .seconds(45), "\(elapsed)")
    }

    @Test("only its own child is reaped: another child of this process stays the caller's to wait for")
    func reapsOnlyItsOwnChild() async throws {
        let other = try ProcessSpawner.spawn(ProcessSpawner.Request(executable: "/bin/sleep", arguments: ["sleep", "0.2"], environment: [:]))
        // Outlives the other child, which exits while this run waits.
        let output: Result<CommandRunner.Output, CommandRunner.Failure>
        do {
            output = .success(try await CommandRunner.run(Self.request("sleep 1; echo done")))
        } catch {
            output = .failure(error)
        }
        // Blocks until the other child is reaped here (it exits after 0.2 s), or fails with ECHILD if it was stolen.
        var status: Int32 = 0
        let reaped = waitpid(other, &status, 0)
        #expect(try output.get().standardOutput == Array("done\n".utf8))
        #expect(reaped == other, "the other child was reaped by someone else")
        #expect(ProcessTermination(waitStatus: status) == .exited(0))
    }
}
