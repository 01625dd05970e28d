import Glibc
import Shared

/// Starts the supervisor daemon detached from whoever needs it.
///
/// The client runs `ferry-agent supervisor --home DIR --detach ...` and waits for that short-lived process, which
/// spawns the real daemon in a new session (`POSIX_SPAWN_SETSID`) and exits. The daemon is thus adopted by init: it
/// is not the agent's child (never its zombie), not in its process group or session, and survives it.
package enum SupervisorLauncher {
    /// The environment the daemon runs with: nothing of the agent's (tokens, config) reaches it or its apps, but for
    /// the switches of the binary's own runtime (`FERRY_EXECUTOR`, `FERRY_CODE_PAGES`): a way back set on the agent
    /// holds for the daemon it starts too.
    static func daemonEnvironment(lookup: (String) -> String? = { getenv($0).map { String(cString: $0) } }) -> [String: String] {
        var daemon = ["PATH": AppSpec.defaultSearchPath]
        for name in ["FERRY_EXECUTOR", "FERRY_CODE_PAGES"] { daemon[name] = lookup(name) }
        return daemon
    }

    /// Starts a daemon for `configuration.home` and returns once the intermediate process has exited. Whether the
    /// daemon came up is for the caller to see on the socket (its log says why not).
    static func startDaemon(_ configuration: BuiltinProcessManager.Configuration) throws(SupervisorError) {
        try SupervisorDaemon.makeDirectory(configuration.home)
        let executable: String
        if let path = configuration.executablePath {
            executable = path
        } else {
            executable = try currentExecutable()
        }
        let arguments = [executable] + daemonArguments(configuration) + ["--detach"]
        let pid = try spawn(executable: executable, arguments: arguments, logPath: configuration.daemonLogPath, grouping: .newProcessGroup)
        // Our own child, reaped by pid.
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            if errno == EINTR { continue }
            return  // ECHILD: someone else reaped it; the socket will tell
        }
        let termination = ProcessTermination(waitStatus: status)
        guard termination.isSuccess else {
            let how =
                switch termination {
                case .exited(let code): "exit status \(code)"
                case .signalled(let signal): "signal \(signal)"
                }
            throw .detachFailed(executable: executable, arguments: arguments, status: "\(how), see \(configuration.daemonLogPath)")
        }
    }

    /// `ferry-agent supervisor --detach`: spawns the daemon for `configuration` (this executable, in a new session,
    /// its output appended to the daemon log) and returns its pid without waiting for it.
    package static func detach(_ configuration: BuiltinProcessManager.Configuration, maximumRequestBytes: Int) throws -> pid_t {
        let executable = try currentExecutable()
        let arguments = [executable] + daemonArguments(configuration) + ["--max-request-bytes", String(maximumRequestBytes)]
        return try spawn(executable: executable, arguments: arguments, logPath: configuration.daemonLogPath, grouping: .newSession)
    }

    private static func spawn(
        executable: String,
        arguments: [String],
        logPath: String,
        grouping: ProcessSpawner.Grouping
    ) throws(SupervisorError) -> pid_t {
        do throws(SpawnError) {
            return try ProcessSpawner.spawn(
                ProcessSpawner.Request(
                    executable: executable,
                    arguments: arguments,
                    environment: daemonEnvironment(),
                    workingDirectory: "/",
                    standardInput: .null,
                    standardOutput: .appending(path: logPath),
                    standardError: .appending(path: logPath),
                    grouping: grouping
                )
            )
        } catch {
            throw .spawn(error)
        }
    }

    /// The daemon's command line after the executable, carrying the client's settings.
    static func daemonArguments(_ configuration: BuiltinProcessManager.Configuration) -> [String] {
        [
            "supervisor", "--home", configuration.home, "--namespace", configuration.namespace,
            "--log-max-bytes", String(configuration.logRotation.maximumFileBytes),
            "--log-keep", String(configuration.logRotation.keptFiles),
            "--backoff-initial-ms", String(milliseconds(configuration.restartBackoff.initial)),
            "--backoff-max-ms", String(milliseconds(configuration.restartBackoff.maximum)),
            "--memory-check-ms", String(milliseconds(configuration.memoryCheckInterval)),
        ]
    }

    /// The path of the running executable (`/proc/self/exe`).
    static func currentExecutable() throws(SupervisorError) -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let count = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard count > 0 else { throw .path(operation: "readlink", path: "/proc/self/exe", errno: errno) }
        return executablePath(fromLink: String(decoding: buffer[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self))
    }

    /// The executable a `/proc/self/exe` link target names. Once a package upgrade replaced the running binary,
    /// Linux shows it as `/usr/local/bin/ferry-agent (deleted)`: the binary now at the path is the one to run (and
    /// the only one that can be), so the suffix goes. Only one is removed: a file named `x (deleted)` that was
    /// replaced reads `x (deleted) (deleted)`.
    static func executablePath(fromLink target: String) -> String {
        let suffix = " (deleted)"
        return target.hasSuffix(suffix) ? String(target.dropLast(suffix.count)) : target
    }

    /// Whole milliseconds of `duration` (for the daemon's command line).
    package static func milliseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}
