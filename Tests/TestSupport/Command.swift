import Foundation
import Shared
import Synchronization

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
    /// full pipe while the other one is being drained. `stdin`, when given, is written to a pipe that is then closed;
    /// without it stdin is `/dev/null`. `environment` `nil`: this process's. `status` is the exit status, or the
    /// number of the signal that ended the command (as `Foundation.Process.terminationStatus` had it).
    @discardableResult
    public static func run(
        _ executable: String,
        _ arguments: [String],
        stdin: Data? = nil,
        environment: [String: String]? = nil,
        currentDirectory: URL? = nil
    ) throws -> CommandResult {
        let (program, argv) = executable.contains("/") ? (executable, arguments) : ("/usr/bin/env", [executable] + arguments)
        let errURL = FileManager.default.temporaryDirectory.appendingPathComponent("ferry-cmd-\(UUID().uuidString).err")
        _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: errURL) }

        // Every descriptor still open here is closed on the way out, whatever happens.
        var open: [Int32] = []
        defer { for fd in open { close(fd) } }
        let output = try PipeDescriptors.open()
        open += [output.readEnd, output.writeEnd]
        let stdin = stdin.flatMap { $0.isEmpty ? nil : $0 }
        let input = try stdin.map { _ in try PipeDescriptors.open() }
        if let input { open += [input.readEnd, input.writeEnd] }

        let process = try SpawnedProcess(
            executable: program,
            arguments: argv,
            environment: environment,
            workingDirectory: currentDirectory?.path,
            standardInput: input.map { ProcessSpawner.Stream.descriptor($0.readEnd) } ?? .null,
            standardOutput: .descriptor(output.writeEnd),
            standardError: .appending(path: errURL.path)
        )
        // The child's ends are the child's now: ours must go, or the read below would never see end of file.
        close(output.writeEnd)
        if let input { close(input.readEnd) }
        open = [output.readEnd]
        // stdin is written on a thread of its own while stdout is read here: a child that answers before it has read
        // all its input would otherwise fill one pipe while this thread waits on the other.
        let writer = input.flatMap { input in
            stdin.map { stdin in
                let done = DispatchSemaphore(value: 0)
                Thread.detachNewThread {
                    writeAll(stdin, to: input.writeEnd)
                    close(input.writeEnd)
                    done.signal()
                }
                return done
            }
        }
        // To end of file before waiting: a child blocked on a full stdout pipe would never exit.
        let outData = readToEnd(output.readEnd)
        writer?.wait()
        let status = process.terminationStatus
        let errData = (try? Data(contentsOf: errURL)) ?? Data()
        return CommandResult(
            status: status,
            stdout: String(decoding: outData, as: UTF8.self),
            stderr: String(decoding: errData, as: UTF8.self)
        )
    }

    /// Writes all of `data` to `fd`, or as much as the reader takes before closing its end. SIGPIPE is blocked on
    /// this thread meanwhile (and a pending one consumed), so a command that never reads its stdin gets EPIPE here
    /// rather than ending the whole test process.
    private static func writeAll(_ data: Data, to fd: Int32) {
        var blocked = sigset_t()
        sigemptyset(&blocked)
        sigaddset(&blocked, SIGPIPE)
        var previous = sigset_t()
        pthread_sigmask(SIG_BLOCK, &blocked, &previous)
        defer {
            var pending = sigset_t()
            if sigpending(&pending) == 0, sigismember(&pending, SIGPIPE) == 1 {
                var immediately = timespec(tv_sec: 0, tv_nsec: 0)
                _ = sigtimedwait(&blocked, nil, &immediately)
            }
            pthread_sigmask(SIG_SETMASK, &previous, nil)
        }
        data.withUnsafeBytes { (buffer: UnsafeRawBufferPointer) in
            guard let base = buffer.baseAddress else { return }
            var offset = 0
            while offset < buffer.count {
                let count = write(fd, base + offset, buffer.count - offset)
                if count > 0 {
                    offset += count
                } else if count < 0 && errno == EINTR {
                    continue
                } else {
                    return
                }
            }
        }
    }

    /// Reads `fd` to end of file (or to an error that will not go away).
    private static func readToEnd(_ fd: Int32) -> Data {
        var data = Data()
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count > 0 {
                data.append(contentsOf: chunk[..<count])
            } else if count < 0 && errno == EINTR {
                continue
            } else {
                return data
            }
        }
    }
}

/// A child process of a test, started with `ProcessSpawner` (`posix_spawn`) instead of `Foundation.Process`, whose
/// `run()` crashes the test process now and then on this toolchain (swift-corelibs-foundation PR #5472: an over-read
/// of the `/proc/self/fd` entries it lists before spawning).
///
/// Unlike `Foundation.Process`, nothing reaps it in the background: it is reaped here, by its pid (never
/// `waitpid(-1)`) and exactly once, when `isRunning`, `termination`, `terminationStatus` or `waitUntilExit()` first
/// finds it exited; how it ended is kept for later calls. The child leads a process group of its own (as with
/// `ProcessSpawner`'s default) and starts with default signal dispositions and an empty signal mask.
package final class SpawnedProcess: Sendable {
    /// The child's pid.
    package let processIdentifier: pid_t
    /// How it ended, once reaped.
    private let ending = Mutex<ProcessTermination?>(nil)

    /// Starts `executable` (a path; relative to this process's directory when not absolute, as
    /// `Foundation.Process.executableURL` had it) with `arguments` (`argv[0]`, the executable, is added).
    /// - Parameters:
    ///   - environment: the child's whole environment; `nil`: this process's.
    ///   - workingDirectory: where it starts; `nil`: this process's.
    ///   - standardInput: default `/dev/null`.
    ///   - standardOutput: default this process's stdout (as `Foundation.Process` had it).
    ///   - standardError: default this process's stderr.
    package init(
        executable: String,
        arguments: [String],
        environment: [String: String]? = nil,
        workingDirectory: String? = nil,
        standardInput: ProcessSpawner.Stream = .null,
        standardOutput: ProcessSpawner.Stream = .descriptor(STDOUT_FILENO),
        standardError: ProcessSpawner.Stream = .descriptor(STDERR_FILENO)
    ) throws {
        // Resolved here: `posix_spawn` would resolve a relative path after changing to `workingDirectory`.
        let path = executable.hasPrefix("/") ? executable : URL(fileURLWithPath: executable).path
        processIdentifier = try ProcessSpawner.spawn(
            ProcessSpawner.Request(
                executable: path,
                arguments: [path] + arguments,
                environment: environment ?? ProcessInfo.processInfo.environment,
                workingDirectory: workingDirectory,
                standardInput: standardInput,
                standardOutput: standardOutput,
                standardError: standardError
            )
        )
    }

    /// Whether it has not exited yet. Never waits; reaps it once it has exited.
    package var isRunning: Bool { reap() == nil }

    /// How it ended; `nil` while it runs. Never waits.
    package var termination: ProcessTermination? { reap() }

    /// Waits (blocking the calling thread) until it has exited and returns how it ended.
    @discardableResult
    package func waitUntilExit() -> ProcessTermination {
        while true {
            if let ended = reap() { return ended }
            // Waits for the exit without reaping it (`WNOWAIT`) and outside the lock, so `isRunning` on other threads
            // is never held up; `reap()` then collects it.
            var info = siginfo_t()
            while waitid(P_PID, id_t(processIdentifier), &info, WEXITED | WNOWAIT) != 0 && errno == EINTR {}
        }
    }

    /// Sends `number` to it unless it has exited; returns whether it was sent. Checked and sent under the lock that
    /// reaping takes: an unreaped child keeps its pid, so the signal can never reach a process that reused the pid
    /// (as `kill(processIdentifier, ...)` after another thread's `isRunning` reaped it could).
    @discardableResult
    package func signal(_ number: Int32) -> Bool {
        ending.withLock { state in
            Self.collect(processIdentifier, into: &state)
            return state == nil && kill(processIdentifier, number) == 0
        }
    }

    /// What `Foundation.Process.terminationStatus` was: the exit status, or the number of the signal that ended it.
    /// Waits for the exit when it is still running.
    package var terminationStatus: Int32 {
        switch waitUntilExit() {
        case .exited(let status): status
        case .signalled(let signal): signal
        }
    }

    /// How it ended, reaping it if it has just exited; `nil` while it runs. A child reaped behind our back (`ECHILD`,
    /// which nothing here does) counts as ended with status -1, so no caller polls it for ever.
    private func reap() -> ProcessTermination? {
        ending.withLock { state in
            Self.collect(processIdentifier, into: &state)
            return state
        }
    }

    /// Reaps `pid` if it has exited and sets `state` to how it ended (unless already set). Called with the lock held.
    private static func collect(_ pid: pid_t, into state: inout ProcessTermination?) {
        guard state == nil else { return }
        var status: Int32 = 0
        var result: pid_t
        repeat {
            result = waitpid(pid, &status, WNOHANG)
        } while result < 0 && errno == EINTR
        if result == pid {
            state = ProcessTermination(waitStatus: status)
        } else if result < 0 && errno == ECHILD {
            state = .exited(-1)
        }
    }

    /// Reaps it if it has exited, so a child nobody waited for leaves no zombie; one still running is left alone.
    deinit { _ = reap() }
}
