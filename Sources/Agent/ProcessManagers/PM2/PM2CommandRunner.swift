import Subprocess

#if canImport(System)
import System
#else
import SystemPackage
#endif

/// Runs one `PM2Command` through swift-subprocess, bounded in time and output.
///
/// pm2 starts in a process group of its own (`setpgid(0, 0)` at spawn). When the command's timeout passes, the run is
/// cancelled and the whole group gets SIGKILL: the CLI and anything it spawned in its group, never the agent. The PM2
/// daemon itself is not in that group (pm2 spawns it detached, in its own session), so the apps keep running.
struct PM2CommandRunner: Sendable {
    /// What pm2 printed and how it ended.
    struct Output: Sendable, Equatable {
        /// How pm2 ended.
        var termination: Termination
        /// Raw stdout (the table of `jlist` is parsed from these bytes).
        var stdout: [UInt8]
        /// stderr as text.
        var stderr: String
    }

    /// How a pm2 process ended.
    enum Termination: Sendable, Equatable, CustomStringConvertible {
        case exited(Int32)
        case signalled(Int32)

        /// Exit status 0.
        var isSuccess: Bool { self == .exited(0) }

        var description: String {
            switch self {
            case .exited(let code): "exit status \(code)"
            case .signalled(let signal): "killed by signal \(signal)"
            }
        }
    }

    /// Most bytes accepted on stdout (a `jlist` element is 3–9 KB, so a few hundred instances fit easily).
    var stdoutLimit: Int = 16 << 20
    /// Most bytes accepted on stderr.
    var stderrLimit: Int = 256 << 10

    /// Runs `command` and returns its output whatever its exit status.
    ///
    /// - Throws: `PM2Error.unresponsive` when the timeout passed (the process group was killed),
    ///   `PM2Error.launchFailed` when pm2 could not be started, `PM2Error.outputTooLarge`, `PM2Error.cancelled` when the
    ///   calling task was cancelled (the group was killed the same way).
    ///   A non-zero exit is not thrown here: `PM2ProcessManager` decides what it means.
    func run(_ command: PM2Command) async throws(PM2Error) -> Output {
        var options = PlatformOptions()
        options.processGroupID = 0
        // Cancellation (our timeout, or the agent shutting down) kills the whole group at once: pm2 would only keep
        // waiting on a wedged daemon, so there is nothing graceful to wait for.
        options.teardownSequence = [.send(signal: .kill, toProcessGroup: true, allowedDurationToNextStep: .milliseconds(200))]
        let configuration = Configuration(
            executable: .path(FilePath(command.executable)),
            arguments: Arguments(command.arguments),
            environment: .custom(Dictionary(uniqueKeysWithValues: command.environment.map { (Environment.Key(stringLiteral: $0), $1) })),
            workingDirectory: FilePath(command.workingDirectory),
            platformOptions: options
        )
        let stdoutLimit = stdoutLimit
        let stderrLimit = stderrLimit
        let race: Race
        do {
            race = try await withThrowingTaskGroup(of: Race.self) { group in
                group.addTask {
                    let result = try await Subprocess.run(
                        configuration,
                        output: .bytes(limit: stdoutLimit),
                        error: .bytes(limit: stderrLimit)
                    )
                    return .finished(result.terminationStatus, stdout: result.standardOutput, stderr: result.standardError)
                }
                group.addTask {
                    try await Task.sleep(for: command.timeout)
                    return .timedOut
                }
                // The group always has both tasks; `next()` is nil only for an empty group.
                let first = try await group.next() ?? .timedOut
                // Cancelling the run makes swift-subprocess apply the teardown above (SIGKILL to the group) and
                // wait for pm2 to be reaped before the group returns.
                group.cancelAll()
                return first
            }
        } catch is CancellationError {
            throw .cancelled(command: command.description)
        } catch let error as SubprocessError {
            if error.code == .outputLimitExceeded {
                throw .outputTooLarge(command: command.description, stdoutLimit: stdoutLimit, stderrLimit: stderrLimit)
            }
            throw .launchFailed(command: command.description, reason: "\(error)")
        } catch {
            throw .launchFailed(command: command.description, reason: "\(error)")
        }
        switch race {
        case .timedOut:
            throw .unresponsive(command: command.description, timeout: command.timeout)
        case .finished(let status, let stdout, let stderr):
            let termination: Termination
            switch status {
            case .exited(let code): termination = .exited(code)
            case .signaled(let signal): termination = .signalled(signal)
            }
            return Output(termination: termination, stdout: stdout, stderr: String(decoding: stderr, as: UTF8.self))
        }
    }

    private enum Race: Sendable {
        case finished(TerminationStatus, stdout: [UInt8], stderr: [UInt8])
        case timedOut
    }
}
