import Foundation
import TestSupport

@testable import Controller

/// A `ferry-controller serve` child process, started on a free loopback port and always stopped by its PID.
final class ServerProcess {
    let process = Process()
    let outputFile: URL
    private(set) var baseURL = ""

    /// Starts the server and waits (with a deadline) for its "listening on" line.
    /// - Parameter umask: the server's umask (octal, like `022`), set by `/bin/sh` before it `exec`s the server, so the
    ///   PID is still the server's; default: the test process's.
    init(arguments: [String], logDirectory: URL, umask: String? = nil) throws {
        outputFile = logDirectory.appendingPathComponent("serve-\(UUID().uuidString).out")
        _ = FileManager.default.createFile(atPath: outputFile.path, contents: nil)
        let output = try FileHandle(forWritingTo: outputFile)
        let serve = ["serve", "--listen", "127.0.0.1:0"] + arguments
        if let umask {
            process.executableURL = URL(fileURLWithPath: "/bin/sh")
            process.arguments = ["-c", "umask \(umask) && exec \"$0\" \"$@\"", TestPaths.executable("ferry-controller")] + serve
        } else {
            process.executableURL = URL(fileURLWithPath: TestPaths.executable("ferry-controller"))
            process.arguments = serve
        }
        process.standardOutput = output
        process.standardError = output
        try process.run()
        try? output.close()
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            let text = (try? String(contentsOf: outputFile, encoding: .utf8)) ?? ""
            if let line = text.split(separator: "\n").first(where: { $0.hasPrefix("ferry-controller listening on ") }) {
                baseURL = String(line.dropFirst("ferry-controller listening on ".count))
                return
            }
            guard process.isRunning else { break }
            Thread.sleep(forTimeInterval: 0.05)
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
        kill(process.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(grace)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        return process.terminationStatus
    }

    deinit { stop(grace: 5) }
}
