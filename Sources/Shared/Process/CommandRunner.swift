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
        let result: Result<Output, Failure>
        do {
            // No fallback to the calling thread: the wait may last the whole timeout.
            result = try await withTaskCancellationHandler {
                try await DedicatedThread.run(name: "command runner") {
                    Execution(request: request, wake: wake, exitDetection: exitDetection).run()
                }
            } onCancel: {
                wake.signal()
            }
        } catch {
            // The body returns its outcome as a value: the only error is a thread the system refused.
            throw .system(operation: "pthread_create (command runner)", errno: (error as? DedicatedThread.StartFailure)?.errno ?? EAGAIN)
        }
        return try result.get()
    }
}

/// A pipe whose read end `poll` watches, so a cancellation wakes the blocked run at once.
private final class WakeSignal: Sendable {
    private let pipe: Mutex<PipeDescriptors?>
    /// The read end, for `poll`; valid until `close()`.
    let readEnd: Int32

    init() throws(CommandRunner.Failure) {
        do throws(SystemCallError) {
            let descriptors = try PipeDescriptors.open(nonBlocking: true)
            readEnd = descriptors.readEnd
            pipe = Mutex(descriptors)
        } catch {
            throw .system(operation: error.operation, errno: error.errno)
        }
    }

    /// Makes the read end readable. Safe from any thread, also after `close()` (then it does nothing).
    func signal() {
        pipe.withLock { descriptors in
            guard let descriptors else { return }
            var byte: UInt8 = 1
            _ = write(descriptors.writeEnd, &byte, 1)
        }
    }

    func close() {
        pipe.withLock { descriptors in
            guard let open = descriptors else { return }
            Glibc.close(open.readEnd)
            Glibc.close(open.writeEnd)
            descriptors = nil
        }
    }
}

/// One run, on its own thread: spawn, pump the pipes, notice the exit or a reason to kill, reap.
private struct Execution {
    let request: CommandRunner.Request
    let wake: WakeSignal
    let exitDetection: CommandRunner.ExitDetection

    func run() -> Result<CommandRunner.Output, CommandRunner.Failure> {
        // A command that closes its stdin early makes our write fail with EPIPE; SIGPIPE, blocked on this thread,
        // must not end the whole process. (The signal mask is per thread: restored before the thread goes back.)
        var blocked = sigset_t()
        sigemptyset(&blocked)
        sigaddset(&blocked, SIGPIPE)
        var previousMask = sigset_t()
        pthread_sigmask(SIG_BLOCK, &blocked, &previousMask)
        defer { pthread_sigmask(SIG_SETMASK, &previousMask, nil) }

        let command: RunningCommand
        do throws(CommandRunner.Failure) {
            command = try RunningCommand(request, pidFD: exitDetection == .pidFD)
        } catch {
            return .failure(error)
        }
        defer {
            command.closeAll()
            if command.sawBrokenPipe { Self.discardPendingSIGPIPE(blocked) }
        }
        let failure = command.communicate(timeout: request.timeout, wake: wake)
        if failure != nil {
            // Before reaping: until then the zombie keeps the group id from being reused.
            kill(-command.pid, SIGKILL)
        }
        var status: Int32 = 0
        while waitpid(command.pid, &status, 0) < 0 {
            if errno == EINTR { continue }
            return .failure(failure ?? .system(operation: "waitpid", errno: errno))
        }
        if let failure { return .failure(failure) }
        return .success(
            CommandRunner.Output(
                termination: ProcessTermination(waitStatus: status),
                standardOutput: command.standardOutput.bytes,
                standardError: command.standardError.bytes
            )
        )
    }

    /// Consumes a SIGPIPE our own write raised on this thread, so it is not delivered once the mask is restored.
    private static func discardPendingSIGPIPE(_ set: sigset_t) {
        var pending = sigset_t()
        guard sigpending(&pending) == 0, sigismember(&pending, SIGPIPE) == 1 else { return }
        var set = set
        var immediately = timespec(tv_sec: 0, tv_nsec: 0)
        _ = sigtimedwait(&set, nil, &immediately)
    }
}

/// A spawned command and our ends of its pipes. Used by one thread only.
private final class RunningCommand {
    /// One of our pipe ends and what went through it.
    struct Channel {
        var fd: Int32?
        var bytes: [UInt8] = []
        let limit: Int
    }

    let pid: pid_t
    private(set) var standardOutput: Channel
    private(set) var standardError: Channel
    private var standardInput: Channel
    private var written = 0
    private let pidFD: Int32?
    private(set) var sawBrokenPipe = false

    /// Spawns `request` in a new process group with fresh pipes; throws `.launchFailed` or `.system`.
    init(_ request: CommandRunner.Request, pidFD usePidFD: Bool) throws(CommandRunner.Failure) {
        var opened: [Int32] = []
        func open() throws(CommandRunner.Failure) -> PipeDescriptors {
            do throws(SystemCallError) {
                let descriptors = try PipeDescriptors.open()
                opened += [descriptors.readEnd, descriptors.writeEnd]
                return descriptors
            } catch {
                for fd in opened { close(fd) }
                throw .system(operation: error.operation, errno: error.errno)
            }
        }
        let output = try open()
        let errors = try open()
        let input = request.standardInput.isEmpty ? nil : try open()
        do throws(SpawnError) {
            pid = try ProcessSpawner.spawn(
                ProcessSpawner.Request(
                    executable: request.executable,
                    arguments: [request.executable] + request.arguments,
                    environment: request.environment,
                    workingDirectory: request.workingDirectory,
                    standardInput: input.map { .descriptor($0.readEnd) } ?? .null,
                    standardOutput: .descriptor(output.writeEnd),
                    standardError: .descriptor(errors.writeEnd),
                    grouping: .newProcessGroup
                )
            )
        } catch {
            for fd in opened { close(fd) }
            throw .launchFailed(error)
        }
        // The child's ends are the child's now: ours see end of file once it (and its descendants) close theirs.
        for fd in [output.writeEnd, errors.writeEnd] + (input.map { [$0.readEnd] } ?? []) { close(fd) }
        for fd in [output.readEnd, errors.readEnd] + (input.map { [$0.writeEnd] } ?? []) {
            PipeDescriptors.setNonBlocking(fd)
        }
        standardOutput = Channel(fd: output.readEnd, limit: request.standardOutputLimit)
        standardError = Channel(fd: errors.readEnd, limit: request.standardErrorLimit)
        standardInput = Channel(fd: input?.writeEnd, bytes: request.standardInput, limit: request.standardInput.count)
        pidFD = usePidFD ? GlibcExtensions.openPidFD(pid) : nil
    }

    /// Closes every descriptor still open.
    func closeAll() {
        for fd in [standardOutput.fd, standardError.fd, standardInput.fd, pidFD].compactMap({ $0 }) { close(fd) }
        standardOutput.fd = nil
        standardError.fd = nil
        standardInput.fd = nil
    }

    /// Feeds stdin and collects stdout and stderr until the command exits (`nil`), or until a reason to kill it: the
    /// timeout, a cancellation (`wake`), output over a limit, a failed `poll`.
    func communicate(timeout: Duration, wake: WakeSignal) -> CommandRunner.Failure? {
        // Capped at a year, so no timeout can overflow the clock.
        let deadline = ContinuousClock.now + min(timeout, .seconds(366 * 86_400))
        while true {
            let remaining = ContinuousClock.now.duration(to: deadline)
            guard remaining > .zero else { return .timedOut(after: timeout) }
            var descriptors = [pollfd(fd: wake.readEnd, events: Int16(POLLIN), revents: 0)]
            for fd in [standardOutput.fd, standardError.fd].compactMap({ $0 }) {
                descriptors.append(pollfd(fd: fd, events: Int16(POLLIN), revents: 0))
            }
            if let fd = standardInput.fd {
                descriptors.append(pollfd(fd: fd, events: Int16(POLLOUT), revents: 0))
            }
            if let pidFD {
                descriptors.append(pollfd(fd: pidFD, events: Int16(POLLIN), revents: 0))
            }
            // Without a pidfd nothing wakes `poll` when the command exits while a descendant holds its pipes.
            let slice = pidFD == nil ? min(remaining, .milliseconds(10)) : remaining
            if poll(&descriptors, nfds_t(descriptors.count), Self.milliseconds(slice)) < 0 && errno != EINTR {
                return .system(operation: "poll", errno: errno)
            }
            if descriptors[0].revents != 0 { return .cancelled }
            if let failure = collectOutput() { return failure }
            feedInput()
            let exited =
                if let pidFD {
                    descriptors.last.map { $0.fd == pidFD && $0.revents != 0 } ?? false
                } else {
                    hasExited()
                }
            // What it wrote before exiting is in the pipes already: take it, and do not wait for its descendants.
            if exited { return collectOutput() }
        }
    }

    /// Reads what stdout and stderr hold now; `.outputTooLarge` when one went over its limit.
    private func collectOutput() -> CommandRunner.Failure? {
        if !Self.drain(&standardOutput) { return .outputTooLarge(stream: .standardOutput, limit: standardOutput.limit) }
        if !Self.drain(&standardError) { return .outputTooLarge(stream: .standardError, limit: standardError.limit) }
        return nil
    }

    /// Reads until the pipe is empty; closes it at end of file. False when the channel went over its limit.
    private static func drain(_ channel: inout Channel) -> Bool {
        guard let fd = channel.fd else { return true }
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count > 0 {
                channel.bytes += chunk[..<count]
                if channel.bytes.count > channel.limit { return false }
                continue
            }
            if count < 0 && errno == EINTR { continue }
            if count < 0 && errno == EAGAIN { return true }
            // End of file, or an error that will not go away.
            close(fd)
            channel.fd = nil
            return true
        }
    }

    /// Writes what stdin can take now; closes it when all is written or the command will not read more (EPIPE).
    private func feedInput() {
        guard let fd = standardInput.fd else { return }
        let count = standardInput.bytes[written...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        if count > 0 { written += count }
        let failed = count < 0 && errno != EAGAIN && errno != EINTR
        if failed && errno == EPIPE { sawBrokenPipe = true }
        if written == standardInput.bytes.count || failed {
            close(fd)
            standardInput.fd = nil
        }
    }

    /// Whether the command has exited, without reaping it. A command that is gone altogether (`ECHILD`: reaped
    /// behind our back) counts as exited, so the run ends instead of waiting for its timeout.
    private func hasExited() -> Bool {
        var info = siginfo_t()
        while waitid(P_PID, id_t(pid), &info, WEXITED | WNOHANG | WNOWAIT) != 0 {
            if errno == EINTR { continue }
            return true
        }
        return info._sifields._sigchld.si_pid != 0
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
