import Glibc
import Logging
import Shared
import Synchronization

/// The builtin supervisor, as the agent's process manager where PM2 is not installed (the demo, the tests, small
/// hosts). It is a client of the supervisor daemon (`ferry-agent supervisor --home DIR`, see `SupervisorDaemon`):
/// every call connects to the daemon's socket; when nothing answers, it starts the daemon (detached in its own
/// session, not a child of the agent) and retries until `connectTimeout`. A socket or pid file left by a dead daemon
/// is replaced by the new one. The daemon outlives the agent, so apps keep running across agent restarts.
///
/// Semantics are PM2's where they matter to the agent (see `Supervisor`). The `ecosystem` arguments of the protocol
/// are not used: the `AppSpec` carries everything the daemon needs.
package struct BuiltinProcessManager: ProcessManager {
    /// Settings of the client; the last five apply only when this client has to start the daemon.
    package struct Configuration: Sendable {
        /// The daemon's home directory (socket, pid file, app table, logs). Default `/var/lib/ferry/supervisor`.
        /// Its socket path must stay under 108 bytes.
        package var home: String
        /// The `ferry-agent` executable that runs the daemon. Default `nil`: this process's own executable
        /// (`/proc/self/exe`); tests point it at the built `ferry-agent`.
        package var executablePath: String?
        /// Namespace the daemon reports for its processes. Default `ferry`.
        package var namespace: String
        /// How long to wait for the socket to answer, including starting the daemon. Default 10 s.
        package var connectTimeout: Duration
        /// How long one request may take before anything is stopped. Default 120 s. A request that stops processes
        /// gets more, from the app's definition (`BuiltinProcessManager.timeout(instances:killTimeoutMilliseconds:base:)`).
        package var requestTimeout: Duration
        /// Rotation of the app logs. Default 10 MiB per file, 3 rotated files kept.
        package var logRotation: LogRotation
        /// Delays between automatic restarts when an app's `restart_delay` is 0. Default 100 ms doubling up to 15 s.
        package var restartBackoff: RestartBackoff
        /// How often the daemon checks memory against `max_memory_restart` between listings. Default 30 s, as PM2.
        package var memoryCheckInterval: Duration
        /// Whether a call starts the daemon when none runs. Default `true`; a command that only looks
        /// (`ferry-agent status`) turns it off: run by an operator (as root, or outside the agent's unit) it would start
        /// a daemon of its own that brings back every app of the table, and, as root, one the agent cannot reach.
        package var startsDaemon = true

        package init(
            home: String = "/var/lib/ferry/supervisor",
            executablePath: String? = nil,
            namespace: String = "ferry",
            connectTimeout: Duration = .seconds(10),
            requestTimeout: Duration = .seconds(120),
            logRotation: LogRotation = LogRotation(),
            restartBackoff: RestartBackoff = RestartBackoff(),
            memoryCheckInterval: Duration = .seconds(30)
        ) {
            self.home = home
            self.executablePath = executablePath
            self.namespace = namespace
            self.connectTimeout = connectTimeout
            self.requestTimeout = requestTimeout
            self.logRotation = logRotation
            self.restartBackoff = restartBackoff
            self.memoryCheckInterval = memoryCheckInterval
        }

        /// The daemon's socket.
        package var socketPath: String { "\(home)/supervisor.sock" }
        /// The daemon's own log.
        package var daemonLogPath: String { DaemonLog.path(home: home) }
    }

    package let configuration: Configuration
    let logger: Logger

    package init(configuration: Configuration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    package func processes() async throws -> [ManagedProcess] {
        let answer = try await send(.list)
        daemonLimit.value.withLock { $0 = answer.maximumRequestBytes ?? Self.olderDaemonsLimit }
        return answer.processes ?? []
    }

    /// The longest request line the daemon accepts, as its last table answer said (`nil`: not asked yet). A daemon
    /// outlives the agent that started it: after an upgrade, one of an older version may still run.
    private let daemonLimit = DaemonLimit()

    private final class DaemonLimit: Sendable {
        let value = Mutex<Int?>(nil)
    }

    /// What a daemon that does not say accepts.
    static let olderDaemonsLimit = 1 << 20

    package func start(_ app: AppSpec, ecosystem: String) async throws {
        _ = try await send(.start(app), timeout: timeout(for: app))
    }

    package func reload(_ app: AppSpec, ecosystem: String) async throws {
        _ = try await send(.reload(app), timeout: timeout(for: app))
    }

    /// What the daemon would refuse of `app` (a rule of `validateForSupervisor`, or a request line longer than a
    /// daemon started by the agent accepts), checked before a replace deletes the running app: the app runs on.
    package func refusal(toRun app: AppSpec) -> (any Error)? {
        do {
            try app.validateForSupervisor()
            let line = try SupervisorRequest.start(app).encodedLine()
            let limit = daemonLimit.value.withLock { $0 } ?? SupervisorDaemon.defaultMaximumRequestBytes
            guard line.count <= limit else {
                return SupervisorError.rejected(
                    operation: .start,
                    failure: SupervisorFailure(
                        .requestTooLarge,
                        "app \(app.name): its spec is \(line.count) bytes as a request, more than the \(limit) the supervisor "
                            + "accepts (a daemon of an older version accepts 1 MiB: restart it, ferry-agent supervisor --stop)"
                    )
                )
            }
            return nil
        } catch {
            return error
        }
    }

    package func delete(appNamed name: String) async throws {
        _ = try await send(.delete(name: name), timeout: try await timeout(forAppNamed: name))
    }

    package func restart(appNamed name: String) async throws {
        _ = try await send(.restart(name: name), timeout: try await timeout(forAppNamed: name))
    }

    /// How long the daemon may take over a request that stops and starts `instances` processes one after another:
    /// `base`, plus for each instance its `kill_timeout`, the daemon's grace after SIGKILL and its reload settle limit
    /// (the longest one instance's stop, start and settling can take). A 4-instance reload with a 40 s drain takes
    /// about 164 s: a fixed timeout reported it failed while the daemon was still doing it right, and a replace
    /// (delete, then start) never sent its start. Numbers beyond what the daemon accepts count as its limits (it
    /// refuses those specs at once).
    package static func timeout(instances: Int, killTimeoutMilliseconds: Int64, base: Duration) -> Duration {
        let step =
            PM2App.waitedTimeout(milliseconds: killTimeoutMilliseconds) + Supervisor.Configuration.defaultKillGrace
            + Supervisor.Configuration.defaultReloadSettleLimit
        return PM2App.callTimeout(base: base, perInstance: step, instances: instances)
    }

    /// A start or reload: one step more than the new instances, for the surplus a smaller count stops (all at once).
    private func timeout(for app: AppSpec) -> Duration {
        Self.timeout(
            instances: min(max(0, app.instances), AppSpec.maximumInstances) + 1,
            killTimeoutMilliseconds: app.killTimeoutMilliseconds,
            base: configuration.requestTimeout
        )
    }

    /// A restart or delete by name: the daemon's table says how many instances and which `kill_timeout`. A daemon of
    /// an older version does not say the `kill_timeout`: the longest accepted is assumed.
    private func timeout(forAppNamed name: String) async throws -> Duration {
        let answer = try await send(.list)
        let instances = answer.processes?.filter { $0.name == name }.count ?? 0
        guard instances > 0 else { return configuration.requestTimeout }
        let killTimeout = answer.killTimeouts?[name] ?? AppSpec.maximumKillTimeoutMilliseconds
        return Self.timeout(instances: instances, killTimeoutMilliseconds: killTimeout, base: configuration.requestTimeout)
    }

    /// Nothing to do: the daemon writes its table on every change and starts it again when it restarts.
    package func save() async throws {}

    /// The daemon's pid, starting the daemon when it is not running.
    package func daemonPID() async throws -> Int32 {
        guard let pid = try await send(.ping).pid else {
            throw SupervisorError.malformedResponse(operation: .ping, reason: "no pid in the answer")
        }
        return pid
    }

    /// Stops the daemon and every app it runs, and waits until the daemon has exited. Returns `false` when no
    /// daemon was running (nothing is started just to stop it). The apps stay in its table: the next daemon starts
    /// them again.
    @discardableResult
    package func shutdown() async throws -> Bool {
        // Every app is stopped at once: one kill_timeout (the longest) and grace on top of the base.
        guard let table = try await send(.list, timeout: configuration.requestTimeout, startingDaemon: false) else { return false }
        let longest = table.killTimeouts.map { $0.values.max() ?? 0 } ?? AppSpec.maximumKillTimeoutMilliseconds
        let timeout = Self.timeout(instances: 1, killTimeoutMilliseconds: longest, base: configuration.requestTimeout)
        guard let response = try await send(.shutdown, timeout: timeout, startingDaemon: false) else { return false }
        guard let pid = response.pid else { return true }
        let deadline = ContinuousClock.now + configuration.connectTimeout
        while ProcStat.isAlive(pid: pid), ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        return true
    }

    /// Sends one request and returns the daemon's successful answer; throws `.rejected` for a refusal, and
    /// `.requestTimedOut` when no answer came within `timeout` (default `Configuration.requestTimeout`).
    func send(_ request: SupervisorRequest, timeout: Duration? = nil) async throws -> SupervisorResponse {
        let starting = configuration.startsDaemon
        guard let response = try await send(request, timeout: timeout ?? configuration.requestTimeout, startingDaemon: starting) else {
            if !starting { throw SupervisorError.notRunning(socketPath: configuration.socketPath) }
            throw SupervisorError.daemonUnreachable(
                socketPath: configuration.socketPath,
                waited: configuration.connectTimeout,
                lastErrno: ECONNREFUSED,
                logTail: ""
            )
        }
        return response
    }

    private func send(_ request: SupervisorRequest, timeout: Duration, startingDaemon: Bool) async throws -> SupervisorResponse? {
        let line = try request.encodedLine()
        let configuration = configuration
        let logger = logger
        return try await DedicatedThread.run(name: "supervisor call") { () throws(SupervisorError) -> SupervisorResponse? in
            // A daemon that dies between accepting the connection and answering (killed, crashed) drops the call.
            // Reading the table changes nothing, so that one is asked again of the daemon the next connect starts;
            // a change is not repeated blindly: its caller reads the table and the next pass repairs.
            var attempts = request.operation == .list ? 2 : 1
            while true {
                attempts -= 1
                guard let fd = try Self.connect(configuration, startingDaemon: startingDaemon, logger: logger) else { return nil }
                defer { close(fd) }
                do throws(SupervisorError) {
                    return try Self.exchange(line, operation: request.operation, on: fd, timeout: timeout, configuration: configuration)
                } catch {
                    guard attempts > 0, Self.isDroppedConnection(error) else { throw error }
                    logger.info("supervisor.call.retried", metadata: ["supervisor.error": "\(error)"])
                }
            }
        }
    }

    private static func isDroppedConnection(_ error: SupervisorError) -> Bool {
        switch error {
        case .connectionClosed: true
        case .path(let operation, _, let code): (operation == "receive from" || operation == "send to") && [ECONNRESET, EPIPE].contains(code)
        default: false
        }
    }

    /// Connects to the daemon, starting it once if nothing listens. `nil` when nothing listens and
    /// `startingDaemon` is false.
    private static func connect(_ configuration: Configuration, startingDaemon: Bool, logger: Logger) throws(SupervisorError) -> Int32? {
        let deadline = ContinuousClock.now + configuration.connectTimeout
        // When the daemon that answers no more is still on its way out (a shutdown in progress), the one started for
        // this call finds the lock taken and exits: so start again, at most once a second, until one stays up.
        var lastStart: ContinuousClock.Instant?
        while true {
            let lastErrno: Int32
            switch try UnixSocket.connect(to: configuration.socketPath, timeout: max(.milliseconds(1), ContinuousClock.now.duration(to: deadline))) {
            case .success(let fd):
                return fd
            case .failure(let error) where [ENOENT, ECONNREFUSED].contains(error.code):
                // No socket, or a stale one from a dead daemon.
                guard startingDaemon else { return nil }
                if lastStart.map({ $0.duration(to: .now) >= .seconds(1) }) ?? true {
                    logger.info("supervisor.daemon.starting", metadata: ["supervisor.home": "\(configuration.home)"])
                    try SupervisorLauncher.startDaemon(configuration)
                    lastStart = .now
                }
                lastErrno = error.code
            case .failure(let error) where error.code == EAGAIN || error.code == EINTR:
                lastErrno = error.code  // backlog full: the daemon is busy, try again
            case .failure(let error):
                throw .path(operation: "connect", path: configuration.socketPath, errno: error.code)
            }
            guard ContinuousClock.now < deadline else {
                throw .daemonUnreachable(
                    socketPath: configuration.socketPath,
                    waited: configuration.connectTimeout,
                    lastErrno: lastErrno,
                    logTail: SmallFile.tail(configuration.daemonLogPath, bytes: 2048)
                )
            }
            usleep(20_000)
        }
    }

    private static func exchange(
        _ line: [UInt8],
        operation: SupervisorOperation,
        on fd: Int32,
        timeout: Duration,
        configuration: Configuration
    ) throws(SupervisorError) -> SupervisorResponse {
        let deadline = ContinuousClock.now + timeout
        if let error = UnixSocket.write(line, to: fd, deadline: deadline) {
            if error == ETIMEDOUT {
                throw .requestTimedOut(operation: operation, socketPath: configuration.socketPath, timeout: timeout)
            }
            // The daemon refuses a request too large for it before reading all of it, answers why and hangs up: the
            // answer is still there to read, and says more than "broken pipe".
            if error == EPIPE || error == ECONNRESET, let failure = refusal(on: fd, deadline: min(deadline, .now + .seconds(1))) {
                throw .rejected(operation: operation, failure: failure)
            }
            throw .path(operation: "send to", path: configuration.socketPath, errno: error)
        }
        var reader = LineReader(fd: fd)
        let answer: [UInt8]
        switch reader.readLine(limit: 256 << 20, deadline: deadline) {
        case .line(let bytes):
            answer = bytes
        case .endOfStream:
            throw .connectionClosed(operation: operation, socketPath: configuration.socketPath)
        case .timedOut:
            throw .requestTimedOut(operation: operation, socketPath: configuration.socketPath, timeout: timeout)
        case .tooLong:
            throw .malformedResponse(operation: operation, reason: "answer longer than 256 MiB")
        case .failed(let error):
            throw .path(operation: "receive from", path: configuration.socketPath, errno: error)
        }
        let response: SupervisorResponse
        do {
            response = try SupervisorResponse.decode(answer)
        } catch {
            throw .malformedResponse(operation: operation, reason: SupervisorRequest.describe(error))
        }
        guard response.ok else {
            throw .rejected(
                operation: operation,
                failure: response.error
                    ?? SupervisorFailure(.internal, "refused without a reason")
            )
        }
        return response
    }

    /// The daemon's refusal waiting on `fd`, if one came before it hung up.
    private static func refusal(on fd: Int32, deadline: ContinuousClock.Instant) -> SupervisorFailure? {
        var reader = LineReader(fd: fd)
        guard case .line(let bytes) = reader.readLine(limit: 1 << 20, deadline: deadline),
            let response = try? SupervisorResponse.decode(bytes), !response.ok
        else { return nil }
        return response.error
    }
}
