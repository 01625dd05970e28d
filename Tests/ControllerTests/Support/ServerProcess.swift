import Foundation
import Shared
import TestSupport

@testable import Controller

/// A `ferry-controller serve` child process, started on a free loopback port and always stopped by its PID.
final class ServerProcess {
    /// The server (spawned with `ProcessSpawner`, not `Foundation.Process`: see `SpawnedProcess`).
    let process: SpawnedProcess
    let outputFile: URL
    private(set) var baseURL = ""

    /// Starts the server and waits (with a deadline, suspended) for its "listening on" line.
    /// - Parameters:
    ///   - openFileLimit: run it under this hard and soft `RLIMIT_NOFILE` (through `sh -c 'ulimit -n N'`).
    ///   - umask: the server's umask (octal, like `022`), set by `/bin/sh` before it `exec`s the server, so the PID is
    ///     still the server's; default: the test process's.
    init(arguments: [String], logDirectory: URL, openFileLimit: Int? = nil, umask: String? = nil) async throws {
        outputFile = logDirectory.appendingPathComponent("serve-\(UUID().uuidString).out")
        _ = FileManager.default.createFile(atPath: outputFile.path, contents: nil)
        let serve = [TestPaths.executable("ferry-controller"), "serve", "--listen", "127.0.0.1:0"] + arguments
        var shell: [String] = []
        if let openFileLimit { shell.append("ulimit -n \(openFileLimit)") }
        if let umask { shell.append("umask \(umask)") }
        // stdout and stderr both append to the one log file; stdin is /dev/null.
        let log = ProcessSpawner.Stream.appending(path: outputFile.path)
        if !shell.isEmpty {
            // The shell becomes the server (exec): stopping the process by its PID stops the server.
            process = try SpawnedProcess(
                executable: "/bin/sh",
                arguments: ["-c", (shell + ["exec \"$0\" \"$@\""]).joined(separator: " && ")] + serve,
                standardOutput: log,
                standardError: log
            )
        } else {
            process = try SpawnedProcess(executable: serve[0], arguments: Array(serve.dropFirst()), standardOutput: log, standardError: log)
        }
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            let text = (try? String(contentsOf: outputFile, encoding: .utf8)) ?? ""
            if let line = text.split(separator: "\n").first(where: { $0.hasPrefix("ferry-controller listening on ") }) {
                baseURL = String(line.dropFirst("ferry-controller listening on ".count))
                return
            }
            guard process.isRunning else { break }
            // Suspends rather than sleeping the thread: the cooperative pool (2 threads here) stays free for the
            // in-process parts of the test meanwhile.
            try await Task.sleep(for: .milliseconds(50))
        }
        stop()
        throw FixtureError("the server did not start: \((try? String(contentsOf: outputFile, encoding: .utf8)) ?? "")")
    }

    /// The server's log so far.
    var log: String { (try? String(contentsOf: outputFile, encoding: .utf8)) ?? "" }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`. Returns its exit status.
    @discardableResult
    func stop(grace: TimeInterval = 20) -> Int32 {
        guard process.isRunning else { return process.terminationStatus }
        process.signal(SIGTERM)
        let deadline = Date().addingTimeInterval(grace)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        if process.isRunning {
            process.signal(SIGKILL)
            process.waitUntilExit()
        }
        return process.terminationStatus
    }

    deinit { stop(grace: 5) }
}
