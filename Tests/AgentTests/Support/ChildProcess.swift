import Foundation
import Shared
import TestSupport
import Testing

/// A real child process started by a test, with stdout and stderr captured to files.
///
/// Tests end it by PID (`terminate()` / `kill()`); `deinit` is not relied on.
final class ChildProcess {
    /// The child (spawned with `ProcessSpawner`, not `Foundation.Process`: see `SpawnedProcess`).
    let process: SpawnedProcess
    let stdoutURL: URL
    let stderrURL: URL
    let label: String

    init(_ executable: String, _ arguments: [String], environment: [String: String]? = nil, logDirectory: URL, label: String) throws {
        self.label = label
        stdoutURL = logDirectory.appendingPathComponent("\(label).out")
        stderrURL = logDirectory.appendingPathComponent("\(label).err")
        _ = FileManager.default.createFile(atPath: stdoutURL.path, contents: nil)
        _ = FileManager.default.createFile(atPath: stderrURL.path, contents: nil)
        // stdin is /dev/null; `environment` nil: this process's.
        process = try SpawnedProcess(
            executable: executable,
            arguments: arguments,
            environment: environment,
            standardOutput: .appending(path: stdoutURL.path),
            standardError: .appending(path: stderrURL.path)
        )
    }

    var pid: Int32 { process.processIdentifier }
    var isRunning: Bool { process.isRunning }
    /// Sends `number` unless it has exited (never to a process that reused its pid).
    @discardableResult
    func signal(_ number: Int32) -> Bool { process.signal(number) }
    var stdout: String { (try? String(contentsOf: stdoutURL, encoding: .utf8)) ?? "" }
    var stderr: String { (try? String(contentsOf: stderrURL, encoding: .utf8)) ?? "" }

    /// SIGTERM, then SIGKILL if it is still running after `grace`.
    func terminate(grace: Duration = .seconds(10)) async {
        guard process.signal(SIGTERM) else { return }
        let deadline = ContinuousClock.now.advanced(by: grace)
        while process.isRunning, ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(50)) }
        process.signal(SIGKILL)
        process.waitUntilExit()
    }

    /// SIGKILL, as a crash.
    func kill() {
        guard process.signal(SIGKILL) else { return }
        process.waitUntilExit()
    }

    /// Waits for a line of stdout matching `predicate` and returns it.
    func waitForLine(timeout: Duration = .seconds(30), where predicate: (String) -> Bool) async throws -> String {
        let deadline = ContinuousClock.now.advanced(by: timeout)
        while ContinuousClock.now < deadline {
            if let line = stdout.split(separator: "\n").map(String.init).first(where: predicate) { return line }
            if !process.isRunning { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw HarnessError("\(label) printed no matching line within \(timeout); stdout: \(stdout.suffix(2000)) stderr: \(stderr.suffix(4000))")
    }
}
