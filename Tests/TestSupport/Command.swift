import Foundation

/// The result of running an external command in a test.
public struct CommandResult: Sendable {
    public var status: Int32
    public var stdout: String
    public var stderr: String
}

/// Runs external commands (the `openssl` CLI, the built Ferry binaries) from tests.
public enum Command {
    /// Runs `executable` (a path, or a name looked up on PATH) with `arguments` and waits for it on a thread of its
    /// own, so the wait never holds one of the cooperative pool's threads (two on a 2-core machine): a CLI call that
    /// talks to an in-process server on that pool would otherwise starve the very server it waits for.
    @discardableResult
    public static func run(
        _ executable: String,
        _ arguments: [String],
        stdin: Data? = nil,
        environment: [String: String]? = nil,
        currentDirectory: URL? = nil
    ) async throws -> CommandResult {
        try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(
                    with: Result {
                        try run(
                            executable,
                            arguments,
                            stdin: stdin,
                            environment: environment,
                            currentDirectory: currentDirectory
                        ) as CommandResult
                    }
                )
            }
        }
    }

    /// Runs `executable` (a path, or a name looked up on PATH) with `arguments` and waits for it, blocking the
    /// calling thread (for synchronous callers; async code gets the overload above).
    ///
    /// stdout is read through a pipe; stderr goes to a temporary file, so a chatty child can never dead-lock on a
    /// full pipe while the other one is being drained.
    @discardableResult
    public static func run(
        _ executable: String,
        _ arguments: [String],
        stdin: Data? = nil,
        environment: [String: String]? = nil,
        currentDirectory: URL? = nil
    ) throws -> CommandResult {
        let process = Process()
        if executable.contains("/") {
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = arguments
        } else {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = [executable] + arguments
        }
        if let environment { process.environment = environment }
        if let currentDirectory { process.currentDirectoryURL = currentDirectory }
        let errURL = FileManager.default.temporaryDirectory.appendingPathComponent("ferry-cmd-\(UUID().uuidString).err")
        _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: errURL) }
        let errHandle = try FileHandle(forWritingTo: errURL)
        let outPipe = Pipe()
        let inPipe = Pipe()
        process.standardOutput = outPipe
        process.standardError = errHandle
        process.standardInput = inPipe
        try process.run()
        try errHandle.close()
        if let stdin { inPipe.fileHandleForWriting.write(stdin) }
        try inPipe.fileHandleForWriting.close()
        let outData = outPipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let errData = (try? Data(contentsOf: errURL)) ?? Data()
        return CommandResult(
            status: process.terminationStatus,
            stdout: String(decoding: outData, as: UTF8.self),
            stderr: String(decoding: errData, as: UTF8.self)
        )
    }
}
