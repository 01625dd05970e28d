import Shared
import Synchronization

/// Runs one `PM2Command` through the shared `CommandRunner`, bounded in time and output, and names its failures in
/// pm2's terms (`PM2Error`).
///
/// Commands for one `PM2_HOME` run one at a time. Every pm2 CLI call first pings the daemon and spawns one when none
/// answers; two calls that overlap while there is no daemon (the agent's first pass next to a status report, or the
/// first calls after the daemon was killed) each spawn one, and the loser keeps running as a second God Daemon that
/// no table shows (seen in DaemonDeathTests: `daemons [18650, 18712]`). The reconciler is an actor, but actor
/// reentrancy lets a report's `jlist` run while a pass awaits its `pm2 start`, so the gate is here, below every caller.
///
/// pm2 starts in a process group of its own. When the command's timeout passes, or the calling task is cancelled,
/// the whole group gets SIGKILL: the CLI and anything it spawned in its group, never the agent. The PM2 daemon itself
/// is not in that group (pm2 spawns it detached, in its own session), so the apps keep running.
struct PM2CommandRunner: Sendable {
    /// What pm2 printed and how it ended.
    struct Output: Sendable, Equatable {
        /// How pm2 ended.
        var termination: ProcessTermination
        /// Raw stdout (the table of `jlist` is parsed from these bytes).
        var stdout: [UInt8]
        /// stderr as text.
        var stderr: String
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
        try await Self.gate(forHome: command.environment["PM2_HOME"] ?? "").withLock { () async throws(PM2Error) -> Output in
            try await runAlone(command)
        }
    }

    /// One lock per `PM2_HOME`, shared by every runner in the process.
    private static let gates = Mutex<[String: AsyncLock]>([:])

    private static func gate(forHome home: String) -> AsyncLock {
        gates.withLock { gates in
            if let gate = gates[home] { return gate }
            let gate = AsyncLock()
            gates[home] = gate
            return gate
        }
    }

    private func runAlone(_ command: PM2Command) async throws(PM2Error) -> Output {
        let request = CommandRunner.Request(
            executable: command.executable,
            arguments: command.arguments,
            environment: command.environment,
            workingDirectory: command.workingDirectory,
            standardOutputLimit: stdoutLimit,
            standardErrorLimit: stderrLimit,
            timeout: command.timeout
        )
        do throws(CommandRunner.Failure) {
            let output = try await CommandRunner.run(request)
            return Output(
                termination: output.termination,
                stdout: output.standardOutput,
                stderr: String(decoding: output.standardError, as: UTF8.self)
            )
        } catch {
            switch error {
            case .timedOut:
                throw .unresponsive(command: command.description, timeout: command.timeout)
            case .cancelled:
                throw .cancelled(command: command.description)
            case .outputTooLarge:
                throw .outputTooLarge(command: command.description, stdoutLimit: stdoutLimit, stderrLimit: stderrLimit)
            case .launchFailed, .system:
                throw .launchFailed(command: command.description, reason: "\(error)")
            }
        }
    }
}
