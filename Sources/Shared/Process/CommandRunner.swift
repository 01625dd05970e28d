import Glibc
import Synchronization

/// Runs a command to completion: explicit argv, environment and working directory, bytes on stdin, stdout and stderr
/// collected up to a cap, a timeout. The one runner for short-lived commands (the controller's ecosystem evaluation
/// with node, the agent's pm2 calls); long-running children (the builtin supervisor's apps) use `ProcessSpawner`
/// directly.
///
/// - The child leads a process group of its own. On timeout, on output over a cap and on cancellation of the calling
///   task, the whole group gets SIGKILL (the command and whatever it started in its group, never the caller), then
///   the command is reaped. Something the command started in another session (PM2's daemon) is not touched.
/// - Only this run's child is reaped, by pid: never `waitpid(-1)`, so children of other owners in the same process
///   are never stolen.
/// - Blocking work (poll, read, write, wait) runs on a `DedicatedThread`, never on the cooperative pool.
/// - The run ends when the command exits: output its descendants still write into the inherited pipes afterwards is
///   not waited for.
package enum CommandRunner {
    /// One command to run.
    package struct Request: Sendable {
        /// Absolute path of the program (no `PATH` lookup).
        package var executable: String
        /// Arguments after the program (`argv[0]` is `executable`).
        package var arguments: [String]
        /// The command's whole environment: nothing of this process's is passed on.
        package var environment: [String: String]
        /// Directory the command starts in. Default `nil`: this process's.
        package var workingDirectory: String?
        /// Written to the command's stdin, which is then closed. Default empty: stdin is `/dev/null`.
        package var standardInput: [UInt8]
        /// Most bytes of stdout accepted; more ends the run with `.outputTooLarge`. Default 16 MiB.
        package var standardOutputLimit: Int
        /// Most bytes of stderr accepted. Default 256 KiB.
        package var standardErrorLimit: Int
        /// How long the command may run before its process group is killed.
        package var timeout: Duration

        package init(
            executable: String,
            arguments: [String],
            environment: [String: String],
            workingDirectory: String? = nil,
            standardInput: [UInt8] = [],
            standardOutputLimit: Int = 16 << 20,
            standardErrorLimit: Int = 256 << 10,
            timeout: Duration
        ) {
            self.executable = executable
            self.arguments = arguments
            self.environment = environment
            self.workingDirectory = workingDirectory
            self.standardInput = standardInput
            self.standardOutputLimit = standardOutputLimit
            self.standardErrorLimit = standardErrorLimit
            self.timeout = timeout
        }
    }

    /// What the command printed and how it ended.
    package struct Output: Sendable, Equatable {
        package var termination: ProcessTermination
        package var standardOutput: [UInt8]
        package var standardError: [UInt8]

        package init(termination: ProcessTermination, standardOutput: [UInt8], standardError: [UInt8]) {
            self.termination = termination
            self.standardOutput = standardOutput
            self.standardError = standardError
        }
    }

    /// One of the command's output streams.
    package enum Stream: String, Sendable, Equatable {
        case standardOutput = "stdout"
        case standardError = "stderr"
    }

    /// Why a run has no `Output`. A non-zero exit is not a failure here: the caller decides what it means.
    package enum Failure: Error, Sendable, Equatable, CustomStringConvertible {
        /// The command could not be started.
        case launchFailed(SpawnError)
        /// It ran past its timeout; its process group was killed.
        case timedOut(after: Duration)
        /// It wrote more than the limit on one stream; its process group was killed.
        case outputTooLarge(stream: Stream, limit: Int)
        /// The calling task was cancelled; the command's process group was killed.
        case cancelled
        /// A system call around the command failed (`pipe`, `poll`, `waitpid`).
        case system(operation: String, errno: Int32)

        package var description: String {
            switch self {
            case .launchFailed(let error): "\(error)"
            case .timedOut(let timeout): "did not finish within \(timeout) (its process group was killed)"
            case .outputTooLarge(let stream, let limit): "wrote more than \(limit) bytes on \(stream.rawValue) (its process group was killed)"
            case .cancelled: "cancelled (its process group was killed)"
            case .system(let operation, let errno): "\(operation) failed: \(SystemErrorText.describe(errno))"
            }
        }
    }

    /// How a run notices that the command exited while its output pipes may still be open (held by a descendant).
    package enum ExitDetection: Sendable {
        /// A `pidfd` polled with the pipes: exact. Needs glibc 2.36 and Linux 5.3; where either is missing, `run`
        /// uses `.polling`.
        case pidFD
        /// `waitid(WNOHANG | WNOWAIT)` every 10 ms.
        case polling

        /// `.pidFD` where this system has it, else `.polling`.
        package static var best: ExitDetection { GlibcExtensions.hasPidFD ? .pidFD : .polling }
    }

    /// Runs `request` to its end and returns its output whatever its exit status.
    ///
    /// - Throws: `.launchFailed`, `.timedOut`, `.outputTooLarge`, `.cancelled`, `.system`. In every case but
    ///   `.launchFailed` the command's process group was killed and the command reaped before the error is thrown.
    package static func run(_ request: Request, exitDetection: ExitDetection = .best) async throws(Failure) -> Output {
        let wake = try WakeSignal()
        defer { wake.close() }
        let result = await withTaskCancellationHandler {
            await DedicatedThread.run(cancellation: CancellationFlag()) {
                Execution(request: request, wake: wake, exitDetection: exitDetection).run()
            }
        } onCancel: {
            wake.signal()
        }
        return try result.get()
    }
}

/// A pipe whose read end `poll` watches, so a cancellation wakes the blocked run at once.
private final class WakeSignal: Sendable {
    private let descriptors: Mutex<(read: Int32, write: Int32)?>
    /// The read end, for `poll`; valid until `close()`.
    let readEnd: Int32

    init() throws(CommandRunner.Failure) {
        var ends: [Int32] = [-1, -1]
        guard pipe(&ends) == 0 else { throw .system(operation: "pipe", errno: errno) }
        for fd in ends {
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        }
        readEnd = ends[0]
        descriptors = Mutex((ends[0], ends[1]))
    }

    /// Makes the read end readable. Safe from any thread, also after `close()` (then it does nothing).
    func signal() {
        descriptors.withLock { ends in
            guard let ends else { return }
            var byte: UInt8 = 1
            _ = write(ends.write, &byte, 1)
        }
    }

    func close() {
        descriptors.withLock { ends in
            guard let open = ends else { return }
            Glibc.close(open.read)
            Glibc.close(open.write)
            ends = nil
        }
    }
}

/// One run, on its own thread: spawn, pump the pipes, notice the exit or a reason to kill, reap.
private struct Execution {
    let request: CommandRunner.Request
    let wake: WakeSignal
    let exitDetection: CommandRunner.ExitDetection

    /// A pipe end this run reads or writes, and what it has collected.
    private struct Channel {
        var fd: Int32?
        var bytes: [UInt8] = []
    }

    func run() -> Result<CommandRunner.Output, CommandRunner.Failure> {
        // A command that closes its stdin early makes our write fail with EPIPE; SIGPIPE, blocked on this thread,
        // must not end the whole process. (The signal mask is per thread: restored before the thread goes back.)
        var blocked = sigset_t()
        sigemptyset(&blocked)
        sigaddset(&blocked, SIGPIPE)
        var previousMask = sigset_t()
        pthread_sigmask(SIG_BLOCK, &blocked, &previousMask)
        var sawBrokenPipe = false
        defer {
            if sawBrokenPipe { Self.discardPendingSIGPIPE(blocked) }
            pthread_sigmask(SIG_SETMASK, &previousMask, nil)
        }

        var owned: [Int32] = []
        defer {
            for fd in owned { close(fd) }
        }
        func makePipe() throws(CommandRunner.Failure) -> (read: Int32, write: Int32) {
            var ends: [Int32] = [-1, -1]
            guard pipe(&ends) == 0 else { throw .system(operation: "pipe", errno: errno) }
            for fd in ends { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
            owned += ends
            return (ends[0], ends[1])
        }
        func release(_ fd: Int32) {
            close(fd)
            owned.removeAll { $0 == fd }
        }

        let output: (read: Int32, write: Int32)
        let errors: (read: Int32, write: Int32)
        let input: (read: Int32, write: Int32)?
        let pid: pid_t
        do throws(CommandRunner.Failure) {
            output = try makePipe()
            errors = try makePipe()
            input = request.standardInput.isEmpty ? nil : try makePipe()
            do throws(SpawnError) {
                pid = try ProcessSpawner.spawn(
                    ProcessSpawner.Request(
                        executable: request.executable,
                        arguments: [request.executable] + request.arguments,
                        environment: request.environment,
                        workingDirectory: request.workingDirectory,
                        standardInput: input.map { .descriptor($0.read) } ?? .null,
                        standardOutput: .descriptor(output.write),
                        standardError: .descriptor(errors.write),
                        grouping: .newProcessGroup
                    )
                )
            } catch {
                throw .launchFailed(error)
            }
        } catch {
            return .failure(error)
        }
        // The child's ends belong to the child now; ours see end of file once it (and its descendants) close them.
        release(output.write)
        release(errors.write)
        if let input { release(input.read) }
        for fd in [output.read, errors.read] + (input.map { [$0.write] } ?? []) {
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        }
        let pidFD = exitDetection == .pidFD ? GlibcExtensions.openPidFD(pid) : nil
        if let pidFD { owned.append(pidFD) }

        var stdout = Channel(fd: output.read)
        var stderr = Channel(fd: errors.read)
        var stdin = Channel(fd: input?.write, bytes: request.standardInput)
        var written = 0
        var failure: CommandRunner.Failure?
        let deadline = ContinuousClock.now + request.timeout

        /// Reads what is there now; false when the stream went over its limit.
        func pump(_ channel: inout Channel, limit: Int) -> Bool {
            guard let fd = channel.fd else { return true }
            var chunk = [UInt8](repeating: 0, count: 64 * 1024)
            while true {
                let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if count > 0 {
                    channel.bytes += chunk[..<count]
                    if channel.bytes.count > limit { return false }
                    continue
                }
                if count < 0 && errno == EINTR { continue }
                if count < 0 && errno == EAGAIN { return true }
                // End of file, or an error that will not go away.
                release(fd)
                channel.fd = nil
                return true
            }
        }

        while true {
            let remaining = ContinuousClock.now.duration(to: deadline)
            guard remaining > .zero else {
                failure = .timedOut(after: request.timeout)
                break
            }
            var descriptors = [pollfd(fd: wake.readEnd, events: Int16(POLLIN), revents: 0)]
            for fd in [stdout.fd, stderr.fd].compactMap({ $0 }) {
                descriptors.append(pollfd(fd: fd, events: Int16(POLLIN), revents: 0))
            }
            if let fd = stdin.fd {
                descriptors.append(pollfd(fd: fd, events: Int16(POLLOUT), revents: 0))
            }
            if let pidFD {
                descriptors.append(pollfd(fd: pidFD, events: Int16(POLLIN), revents: 0))
            }
            let slice = pidFD == nil ? min(remaining, .milliseconds(10)) : remaining
            if poll(&descriptors, nfds_t(descriptors.count), Self.milliseconds(slice)) < 0 && errno != EINTR {
                failure = .system(operation: "poll", errno: errno)
                break
            }
            if descriptors[0].revents != 0 {
                failure = .cancelled
                break
            }
            guard pump(&stdout, limit: request.standardOutputLimit) else {
                failure = .outputTooLarge(stream: .standardOutput, limit: request.standardOutputLimit)
                break
            }
            guard pump(&stderr, limit: request.standardErrorLimit) else {
                failure = .outputTooLarge(stream: .standardError, limit: request.standardErrorLimit)
                break
            }
            if let fd = stdin.fd {
                let count = stdin.bytes[written...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                if count > 0 { written += count }
                if written == stdin.bytes.count || (count < 0 && errno != EAGAIN && errno != EINTR) {
                    // All written, or the command will not read more (EPIPE): either way its stdin ends here.
                    if count < 0 && errno == EPIPE { sawBrokenPipe = true }
                    release(fd)
                    stdin.fd = nil
                }
            }
            let exited =
                if let pidFD {
                    descriptors.last.map { $0.fd == pidFD && $0.revents != 0 } ?? false
                } else {
                    Self.hasExited(pid)
                }
            if exited {
                // What it wrote before exiting is in the pipes already: take it, do not wait for its descendants.
                guard pump(&stdout, limit: request.standardOutputLimit) else {
                    failure = .outputTooLarge(stream: .standardOutput, limit: request.standardOutputLimit)
                    break
                }
                guard pump(&stderr, limit: request.standardErrorLimit) else {
                    failure = .outputTooLarge(stream: .standardError, limit: request.standardErrorLimit)
                    break
                }
                break
            }
        }
        if failure != nil {
            // Before reaping: until then the zombie keeps the group id from being reused.
            kill(-pid, SIGKILL)
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            if errno == EINTR { continue }
            return .failure(failure ?? .system(operation: "waitpid", errno: errno))
        }
        if let failure { return .failure(failure) }
        return .success(
            CommandRunner.Output(
                termination: ProcessTermination(waitStatus: status),
                standardOutput: stdout.bytes,
                standardError: stderr.bytes
            )
        )
    }

    /// Whether the child has exited, without reaping it. A child that is gone altogether (`ECHILD`: reaped behind our
    /// back) counts as exited, so the run ends instead of waiting for its timeout.
    private static func hasExited(_ pid: pid_t) -> Bool {
        var info = siginfo_t()
        while waitid(P_PID, id_t(pid), &info, WEXITED | WNOHANG | WNOWAIT) != 0 {
            if errno == EINTR { continue }
            return true
        }
        return info._sifields._sigchld.si_pid != 0
    }

    /// Consumes a SIGPIPE our own write raised on this thread, so it is not delivered once the mask is restored.
    private static func discardPendingSIGPIPE(_ set: sigset_t) {
        var pending = sigset_t()
        guard sigpending(&pending) == 0, sigismember(&pending, SIGPIPE) == 1 else { return }
        var set = set
        var immediately = timespec(tv_sec: 0, tv_nsec: 0)
        _ = sigtimedwait(&set, nil, &immediately)
    }

    /// A duration as a poll timeout: whole milliseconds, rounded up, at least 1, at most `Int32.max`.
    private static func milliseconds(_ duration: Duration) -> Int32 {
        let (seconds, attoseconds) = duration.components
        let (whole, overflow) = seconds.multipliedReportingOverflow(by: 1000)
        guard !overflow else { return Int32.max }
        let (total, overflowed) = whole.addingReportingOverflow((attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000)
        return overflowed ? Int32.max : Int32(clamping: max(1, total))
    }
}
