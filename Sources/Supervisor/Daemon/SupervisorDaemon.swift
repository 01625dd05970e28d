import Glibc
import Logging
import ServiceLifecycle
import Shared

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The builtin supervisor's daemon (`ferry-agent supervisor --home DIR`): a separate process, like PM2's God daemon,
/// so apps outlive the agent and `ferry-agent once` works.
///
/// Layout of the home directory (mode 0700):
/// ```
/// supervisor.lock   flock held while the daemon lives: one daemon per home
/// supervisor.sock   the socket (0600), newline-delimited JSON requests (see `SupervisorRequest`)
/// supervisor.pid    the daemon's pid
/// supervisor.log    the daemon's own log (stdout and stderr)
/// apps.json         the app table, rewritten atomically on every change; started again by the next daemon
/// logs/<app>-<i>-out.log, logs/<app>-<i>-err.log   app output, rotated by size
/// ```
/// A `shutdown` request or SIGTERM/SIGINT stops every app (SIGINT, SIGKILL after kill_timeout) and exits.
package struct SupervisorDaemon: Service {
    /// The longest request line a daemon accepts unless told otherwise (`--max-request-bytes`): 8 MiB. An app's spec
    /// carries the release's, the app's and the instance env file's maps merged (each up to 256 KiB), its env again
    /// among its PM2 options, all JSON-escaped: over 1 MiB (the limit before) for an env PM2 runs. Only the socket's
    /// owner can connect.
    package static let defaultMaximumRequestBytes = 8 << 20

    /// Settings of the daemon, from `ferry-agent supervisor`'s options.
    package struct Configuration: Sendable {
        /// Home directory (see the type's documentation).
        package var home: String
        /// Namespace reported for every process. Default `ferry`.
        package var namespace = "ferry"
        /// Rotation of the app logs. Default 10 MiB, 3 rotated files kept.
        package var logRotation = LogRotation()
        /// Delays between automatic restarts when `restart_delay` is 0. Default 100 ms doubling up to 15 s.
        package var restartBackoff = RestartBackoff()
        /// Longest request line (`SupervisorDaemon.defaultMaximumRequestBytes`).
        package var maximumRequestBytes = SupervisorDaemon.defaultMaximumRequestBytes
        /// How often memory is checked against `max_memory_restart` between listings. Default 30 s, as PM2.
        package var memoryCheckInterval: Duration = .seconds(30)

        package init(home: String) {
            self.home = home
        }

        var socketPath: String { "\(home)/supervisor.sock" }
        var pidPath: String { "\(home)/supervisor.pid" }
        var lockPath: String { "\(home)/supervisor.lock" }
        package var logPath: String { DaemonLog.path(home: home) }
        var logsDirectory: String { "\(home)/logs" }
    }

    let configuration: Configuration
    let logger: Logger

    package init(configuration: Configuration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    /// Raises the soft open-file limit to the hard one: every instance holds four descriptors here (its stdout and
    /// stderr pipes, its two log files), so the 1024 instances a release may ask for need more than the usual soft
    /// limit of 1024. The apps inherit the raised limit, as PM2's do (Node raises its own at start-up).
    static func raiseOpenFileLimit(logger: Logger) {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
        let soft = limit.rlim_cur
        limit.rlim_cur = limit.rlim_max
        if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) != 0 {
            logger.info("supervisor.open_file_limit.kept", metadata: ["limit.soft": "\(soft)", "error.errno": "\(errno)"])
        }
    }

    package func run() async throws {
        try Self.makeDirectory(configuration.home)
        try Self.makeDirectory(configuration.logsDirectory)
        let lock = try acquireLock()
        defer { close(lock) }
        // A client gone mid-answer must not kill the daemon; children get default signal handling back at spawn.
        signal(SIGPIPE, SIG_IGN)
        // A hang-up (the terminal of a foreground `ferry-agent supervisor` closed, a logrotate hook's `kill -HUP`) or a
        // user signal (PM2's SIGUSR2, "reopen the logs") ended the daemon at once: every app's output pipe lost its
        // reader, and the next daemon stopped every app as a leftover and started it again. Logs follow their paths by
        // themselves (`RotatingLogFile`), so there is nothing to reopen. SIGQUIT stops it as SIGTERM does.
        for ignored in [SIGHUP, SIGUSR1, SIGUSR2] { signal(ignored, SIG_IGN) }
        Self.raiseOpenFileLimit(logger: logger)

        let pump = try OutputPump.start()
        var supervisorConfiguration = Supervisor.Configuration(home: configuration.home)
        supervisorConfiguration.namespace = configuration.namespace
        supervisorConfiguration.logRotation = configuration.logRotation
        supervisorConfiguration.restartBackoff = configuration.restartBackoff
        supervisorConfiguration.memoryCheckInterval = configuration.memoryCheckInterval
        let codePages = getenv("FERRY_CODE_PAGES").map { String(cString: $0) }
        if let warning = LoadedCode.unrecognised(environment: codePages) { logger.warning("\(warning)") }
        supervisorConfiguration.releasesCodePages = !LoadedCode.keepRequested(environment: codePages)
        let supervisor = Supervisor(configuration: supervisorConfiguration, pump: pump, logger: logger)
        // The socket answers at once; requests wait until the saved apps are back (stopping processes a crashed
        // daemon left behind can take a kill_timeout), so nobody sees a half-restored table.
        let resurrection = Task {
            await supervisor.resurrect()
            await supervisor.startSampling()
        }

        let (shutdownRequests, shutdown) = AsyncStream.makeStream(of: Void.self)
        var serverConfiguration = SupervisorServer.Configuration(socketPath: configuration.socketPath)
        serverConfiguration.maximumRequestBytes = configuration.maximumRequestBytes
        let server: SupervisorServer
        do {
            server = try SupervisorServer.start(
                configuration: serverConfiguration,
                logger: logger,
                handler: { request in
                    await resurrection.value
                    guard request == .shutdown else { return await supervisor.handle(request) }
                    await supervisor.stopAll()
                    return .success(pid: getpid())
                },
                onShutdownAnswered: { shutdown.finish() }
            )
        } catch {
            await supervisor.stopAll()
            await pump.stop()
            throw error
        }
        do {
            try AtomicFile.write(Array("\(getpid())\n".utf8), to: configuration.pidPath, mode: 0o644)
        } catch {
            logger.error("supervisor.pid_file.failed", metadata: ["error": "\(error)"])
        }
        logger.info("supervisor.started", metadata: ["supervisor.home": "\(configuration.home)", "process.pid": "\(getpid())"])

        await withGracefulShutdownHandler {
            for await _ in shutdownRequests {}
        } onGracefulShutdown: {
            shutdown.finish()
        }

        logger.info("supervisor.stopping")
        server.stop()
        await supervisor.stopAll()
        await pump.stop()
        unlink(configuration.pidPath)
        logger.info("supervisor.stopped")
    }

    /// Takes the home directory's lock, or throws `.alreadyRunning` naming the daemon that holds it.
    private func acquireLock() throws(SupervisorError) -> Int32 {
        do throws(ProcessLock.Failure) {
            return try ProcessLock.acquire(configuration.lockPath)
        } catch {
            switch error {
            case .held(let holder):
                throw .alreadyRunning(home: configuration.home, pid: holder ?? SmallFile.text(configuration.pidPath) ?? "unknown")
            case .unavailable(let operation, let code):
                throw .path(operation: operation == "open" ? "open lock" : operation, path: configuration.lockPath, errno: code)
            }
        }
    }

    /// Creates the home directory and sends this process's stdout and stderr to the daemon's log file, whoever started
    /// the daemon (for `ferry-agent supervisor` in the foreground).
    package static func redirectOutput(into configuration: Configuration) throws {
        try makeDirectory(configuration.home)
        let path = configuration.logPath
        let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw SupervisorError.path(operation: "open", path: path, errno: errno) }
        defer { close(fd) }
        guard dup2(fd, STDOUT_FILENO) >= 0, dup2(fd, STDERR_FILENO) >= 0 else {
            throw SupervisorError.path(operation: "dup2 onto stdout/stderr", path: path, errno: errno)
        }
    }

    /// Creates `path` (mode 0700) and its parents when missing.
    static func makeDirectory(_ path: String) throws(SupervisorError) {
        var prefix = ""
        for component in path.split(separator: "/", omittingEmptySubsequences: true) {
            prefix += "/\(component)"
            if mkdir(prefix, 0o700) != 0 && errno != EEXIST {
                throw .path(operation: "mkdir", path: prefix, errno: errno)
            }
        }
    }
}
