import Foundation
import Synchronization

/// Runs a short-lived child process and collects its output (through temporary files: no pipe can fill up and
/// deadlock it).
enum ChildProcess {
    struct Result: Sendable {
        var status: Int32
        var standardOutput: String
        var standardError: String
    }

    /// A child process that could not be run to the end.
    struct Failure: Error, CustomStringConvertible {
        var executable: String
        var arguments: [String]
        var reason: String
        var description: String { "\(executable) \(arguments.prefix(1).joined(separator: " ")) …: \(reason)" }
    }

    /// Runs `executable` to its end or `timeout` (then it is killed).
    /// - Parameters:
    ///   - environment: the child's whole environment; `nil` inherits this process's.
    ///   - currentDirectory: the child's working directory; `nil` keeps this process's.
    static func run(
        _ executable: String,
        arguments: [String],
        environment: [String: String]? = nil,
        currentDirectory: String? = nil,
        timeout: Duration,
        outputLimit: Int
    ) async throws -> Result {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("ferry-child-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let outURL = directory.appendingPathComponent("stdout")
        let errURL = directory.appendingPathComponent("stderr")
        _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
        _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
        let out = try FileHandle(forWritingTo: outURL)
        let err = try FileHandle(forWritingTo: errURL)
        defer {
            try? out.close()
            try? err.close()
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let environment { process.environment = environment }
        if let currentDirectory { process.currentDirectoryURL = URL(fileURLWithPath: currentDirectory) }
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        let status: Int32 = try await withCheckedThrowingContinuation { continuation in
            let once = Mutex(false)
            process.terminationHandler = { finished in
                let first = once.withLock { done -> Bool in
                    defer { done = true }
                    return !done
                }
                if first { continuation.resume(returning: finished.terminationStatus) }
            }
            do {
                try process.run()
            } catch {
                once.withLock { $0 = true }
                continuation.resume(throwing: Failure(executable: executable, arguments: arguments, reason: "\(error)"))
                return
            }
            let pid = process.processIdentifier
            // The deadline: a wedged node must not hang `publish` forever.
            DispatchQueue.global().asyncAfter(deadline: .now() + .seconds(Int(timeout.components.seconds))) {
                if once.withLock({ !$0 }) { kill(pid, SIGKILL) }
            }
        }
        func contents(_ url: URL) -> String {
            let data = (try? Data(contentsOf: url)) ?? Data()
            return String(decoding: data.prefix(outputLimit), as: UTF8.self)
        }
        if status == SIGKILL && process.terminationReason == .uncaughtSignal {
            throw Failure(executable: executable, arguments: arguments, reason: "killed after \(timeout)")
        }
        return Result(status: status, standardOutput: contents(outURL), standardError: contents(errURL))
    }
}
