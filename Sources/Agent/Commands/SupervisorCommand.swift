import ArgumentParser
import Glibc
import Logging
import ServiceLifecycle
import Supervisor

/// `ferry-agent supervisor --home DIR`: the builtin supervisor's daemon. The agent starts it on demand (through
/// `BuiltinProcessManager`); operators and tests stop it with `--stop`. Hidden from help: not a command to type.
struct SupervisorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "supervisor",
        abstract: "Run the builtin process supervisor daemon (started by the agent on demand).",
        discussion: """
            Runs in the foreground until SIGTERM, SIGINT or a shutdown request, then stops every app it runs. \
            Its socket, pid file, app table and logs live in --home. With --stop, asks the daemon running for \
            --home to stop (a no-op when none runs).
            """,
        shouldDisplay: false
    )

    @Option(help: "Directory of the daemon: socket, pid file, app table, logs (the socket path must stay under 108 bytes).")
    var home: String

    @Flag(help: "Stop the daemon running for --home and every app it runs, then exit.")
    var stop = false

    @Flag(help: .hidden)
    var detach = false

    @Option(help: "Namespace reported for the processes.")
    var namespace = "ferry"

    @Option(help: "Rotate an app log before it grows past this many bytes.")
    var logMaxBytes: Int64 = LogRotation().maximumFileBytes

    @Option(help: "Rotated app log files to keep.")
    var logKeep: Int = LogRotation().keptFiles

    @Option(help: "First automatic restart delay in milliseconds when an app's restart_delay is 0.")
    var backoffInitialMs: Int64 = SupervisorLauncher.milliseconds(RestartBackoff().initial)

    @Option(help: "Longest automatic restart delay in milliseconds (at most a day).")
    var backoffMaxMs: Int64 = SupervisorLauncher.milliseconds(RestartBackoff().maximum)

    @Option(help: "Longest request line the socket accepts, in bytes.")
    var maxRequestBytes: Int = SupervisorDaemon.defaultMaximumRequestBytes

    @Option(
        help: ArgumentHelp(
            "How often, in milliseconds, every app's memory is checked against max_memory_restart.",
            discussion: "Memory and CPU are also read whenever the agent lists the table. Default 30000, as PM2."
        )
    )
    var memoryCheckMs: Int64 = SupervisorLauncher.milliseconds(BuiltinProcessManager.Configuration().memoryCheckInterval)

    func validate() throws {
        guard !home.isEmpty else { throw ValidationError("--home must not be empty") }
        guard logMaxBytes >= 1024 else { throw ValidationError("--log-max-bytes must be at least 1024, got \(logMaxBytes)") }
        guard (0...100).contains(logKeep) else { throw ValidationError("--log-keep must be between 0 and 100, got \(logKeep)") }
        guard backoffInitialMs > 0, backoffMaxMs >= backoffInitialMs else {
            throw ValidationError("--backoff-initial-ms must be positive and at most --backoff-max-ms")
        }
        guard backoffMaxMs <= 86_400_000 else {
            throw ValidationError("--backoff-max-ms must be at most 86400000 (a day), got \(backoffMaxMs)")
        }
        guard maxRequestBytes >= 4096 else { throw ValidationError("--max-request-bytes must be at least 4096") }
        guard (100...86_400_000).contains(memoryCheckMs) else {
            throw ValidationError("--memory-check-ms must be between 100 and 86400000 (a day), got \(memoryCheckMs)")
        }
    }

    /// `--home` made absolute: the daemon runs in `/`.
    var absoluteHome: String {
        if home.hasPrefix("/") { return home }
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        guard getcwd(&buffer, buffer.count) != nil else { return home }
        let directory = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return directory == "/" ? "/\(home)" : "\(directory)/\(home)"
    }

    /// The client settings matching these options.
    var clientConfiguration: BuiltinProcessManager.Configuration {
        BuiltinProcessManager.Configuration(
            home: absoluteHome,
            namespace: namespace,
            logRotation: LogRotation(maximumFileBytes: logMaxBytes, keptFiles: logKeep),
            restartBackoff: RestartBackoff(initial: .milliseconds(backoffInitialMs), maximum: .milliseconds(backoffMaxMs)),
            memoryCheckInterval: .milliseconds(memoryCheckMs)
        )
    }

    func run() async throws {
        let home = absoluteHome
        if stop {
            let stopped = try await BuiltinProcessManager(configuration: clientConfiguration, logger: Logger(label: "ferry.supervisor"))
                .shutdown()
            print(stopped ? "supervisor for \(home) stopped" : "no supervisor runs for \(home)")
            return
        }
        if detach {
            _ = try SupervisorLauncher.detach(clientConfiguration, maximumRequestBytes: maxRequestBytes)
            return
        }

        var configuration = SupervisorDaemon.Configuration(home: home)
        configuration.namespace = namespace
        configuration.logRotation = LogRotation(maximumFileBytes: logMaxBytes, keptFiles: logKeep)
        configuration.restartBackoff = RestartBackoff(initial: .milliseconds(backoffInitialMs), maximum: .milliseconds(backoffMaxMs))
        configuration.maximumRequestBytes = maxRequestBytes
        configuration.memoryCheckInterval = .milliseconds(memoryCheckMs)
        try SupervisorDaemon.redirectOutput(into: configuration)

        var logger = Logger(label: "ferry.supervisor") { StreamLogHandler.standardError(label: $0) }
        logger.logLevel = .info
        let daemon = SupervisorDaemon(configuration: configuration, logger: logger)
        // The daemon returning (after a shutdown request) ends the group normally, not as a failure.
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: [.init(service: daemon, successTerminationBehavior: .gracefullyShutdownGroup, serviceName: "supervisor")],
                gracefulShutdownSignals: [.sigterm, .sigint, .sigquit],
                logger: logger
            )
        )
        try await group.run()
    }
}
