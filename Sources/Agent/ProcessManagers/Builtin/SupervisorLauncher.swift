import Glibc

/// Starts the supervisor daemon detached from whoever needs it.
///
/// The client runs `ferry-agent supervisor --home DIR --detach ...` and waits for that short-lived process, which
/// spawns the real daemon in a new session (`POSIX_SPAWN_SETSID`) and exits. The daemon is thus adopted by init: it
/// is not the agent's child (never its zombie), not in its process group or session, and survives it.
enum SupervisorLauncher {
    /// The environment the daemon runs with: nothing of the agent's (tokens, config) reaches it or its apps.
    static let daemonEnvironment = ["PATH": AppSpec.defaultSearchPath]

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
        let pid = try ProcessSpawner.spawn(
            ProcessSpawner.Request(
                executable: executable,
                arguments: arguments,
                environment: daemonEnvironment,
                workingDirectory: "/",
                standardInput: .null,
                standardOutput: .appending(path: configuration.daemonLogPath),
                standardError: .appending(path: configuration.daemonLogPath),
                grouping: .newProcessGroup
            )
        )
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            if errno == EINTR { continue }
            return  // ECHILD: someone else reaped it; the socket will tell
        }
        let exited = status & 0x7f == 0
        let code = (status >> 8) & 0xff
        guard exited && code == 0 else {
            let how = exited ? "exit status \(code)" : "signal \(status & 0x7f)"
            throw .detachFailed(executable: executable, arguments: arguments, status: "\(how), see \(configuration.daemonLogPath)")
        }
    }

    /// For `--detach`: spawns the daemon (`arguments` is its argv) in a new session with its output appended to
    /// `logPath`, and returns its pid.
    static func spawnDetached(executable: String, arguments: [String], logPath: String) throws(SupervisorError) -> pid_t {
        try ProcessSpawner.spawn(
            ProcessSpawner.Request(
                executable: executable,
                arguments: arguments,
                environment: daemonEnvironment,
                workingDirectory: "/",
                standardInput: .null,
                standardOutput: .appending(path: logPath),
                standardError: .appending(path: logPath),
                grouping: .newSession
            )
        )
    }

    /// The daemon's command line after the executable, carrying the client's settings.
    static func daemonArguments(_ configuration: BuiltinProcessManager.Configuration) -> [String] {
        [
            "supervisor", "--home", configuration.home, "--namespace", configuration.namespace,
            "--log-max-bytes", String(configuration.logRotation.maximumFileBytes),
            "--log-keep", String(configuration.logRotation.keptFiles),
            "--backoff-initial-ms", String(milliseconds(configuration.restartBackoff.initial)),
            "--backoff-max-ms", String(milliseconds(configuration.restartBackoff.maximum)),
        ]
    }

    /// The path of the running executable (`/proc/self/exe`).
    static func currentExecutable() throws(SupervisorError) -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let count = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard count > 0 else { throw .path(operation: "readlink", path: "/proc/self/exe", errno: errno) }
        return String(decoding: buffer[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func milliseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}
