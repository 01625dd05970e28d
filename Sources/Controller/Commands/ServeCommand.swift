import ArgumentParser
import Foundation
import Logging
import Metrics
import Prometheus
import Shared

/// `ferry-controller serve`: the HTTP server agents poll and operators publish to.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the controller: artifact store, releases, agents' desired state, status, dashboard.",
        discussion: """
            Every flag has an environment twin (FERRY_LISTEN, FERRY_DATA_DIR, FERRY_TRUSTED_KEYS as a comma-separated \
            list, FERRY_THRESHOLD, FERRY_TRUST_ROOT, FERRY_POLL_SECONDS, FERRY_MAX_BODY_BYTES, FERRY_MAX_STATUS_BYTES, \
            FERRY_MAX_ARTIFACT_BYTES, FERRY_STATUS_HISTORY, FERRY_LOG_LEVEL, FERRY_TLS_CERT, FERRY_TLS_KEY, \
            FERRY_HEADER_TIMEOUT, FERRY_IDLE_TIMEOUT, FERRY_MAX_CONNECTIONS, FERRY_REMOVE_SILENT_AGENTS_AFTER, FERRY_DATABASE, FERRY_DATABASE_POOL_SIZE, \
            FERRY_DATABASE_STATEMENT_TIMEOUT, FERRY_DATABASE_CA_FILE, FERRY_INSTANCE_IDENTITY_CERT, \
            FERRY_INSTANCE_IDENTITY_ACCOUNTS as a comma-separated list) and a key in the optional --config file \
            (YAML or JSON: listen, dataDir, trustedKeys, threshold, trustRoot, pollSeconds, maxBodyBytes, maxStatusBytes, \
            maxArtifactBytes, statusHistory, logLevel, tlsCert, tlsKey, headerTimeout, idleTimeout, maxConnections, \
            removeSilentAgentsAfter, database, databasePoolSize, databaseStatementTimeout, databaseCAFile, instanceIdentityCert, \
            instanceIdentityAccounts). Flags win over the environment, which wins over the file. The database password goes in FERRY_DATABASE_PASSWORD when the URL has none.

            With --database postgres://... several controllers share one PostgreSQL database (docs/ha.md); without it \
            the store is SQLite in the data directory.

            With --tls-cert and --tls-key it serves HTTPS itself; without them plain HTTP (for loopback, or behind a \
            TLS-terminating load balancer or proxy). Once listening it prints `ferry-controller listening on \
            https://HOST:PORT` (or http://; useful with --listen 127.0.0.1:0). SIGHUP reloads the certificate and key \
            for new connections (a pair that does not load is logged and the old one kept). SIGTERM or SIGINT: parked \
            long-polls are answered, in-flight requests finish, then it exits.

            With --instance-identity-cert (AWS's public certificate for EC2 instance identity documents, PEM) and \
            --instance-identity-account, an enrollment token enrolls only an EC2 instance of those accounts that sends \
            its signed identity document (`ferry-agent enroll --machine-identity ec2`), and each instance once: \
            a token copied out of user data does not enroll anything else (docs/security.md).
            """
    )

    @Option(name: .long, help: ArgumentHelp("A YAML or JSON config file.", valueName: "FILE"))
    var config: String?

    @Option(name: .long, help: ArgumentHelp("Address to listen on (default 127.0.0.1:8080; port 0 picks one).", valueName: "HOST:PORT"))
    var listen: String?

    @Option(name: .customLong("data-dir"), help: ArgumentHelp("Database and artifacts directory (default ./ferry-data).", valueName: "DIR"))
    var dataDirectory: String?

    @Option(name: .long, help: ArgumentHelp("An operator public key releases must be signed by. Repeatable.", valueName: "FILE.pub"))
    var trustedKey: [String] = []

    @Option(name: .long, help: "How many distinct trusted keys must sign a release (default 1).")
    var threshold: Int?

    @Option(
        name: .long,
        help: ArgumentHelp(
            "A signed trust root to pin instead of --trusted-key (root 1 from `ferry-controller root init` and `root sign`).",
            valueName: "FILE"
        )
    )
    var trustRoot: String?

    @Option(name: .long, help: "Poll interval told to agents, in seconds; 3 without a report marks an agent stale (default 15).")
    var pollSeconds: Int?

    @Option(name: .long, help: ArgumentHelp("Largest JSON request body (default 2M).", valueName: "SIZE"))
    var maxBodyBytes: String?

    @Option(name: .long, help: ArgumentHelp("Largest status report (default 1M).", valueName: "SIZE"))
    var maxStatusBytes: String?

    @Option(name: .long, help: ArgumentHelp("Largest artifact (default 4G).", valueName: "SIZE"))
    var maxArtifactBytes: String?

    @Option(
        name: .long,
        help: "Status reports kept per agent, of those that changed something besides uptime, memory and CPU (default 50)."
    )
    var statusHistory: Int?

    @Option(name: .long, help: "trace, debug, info, notice, warning, error or critical (default info).")
    var logLevel: String?

    @Option(
        name: .customLong("tls-cert"),
        help: ArgumentHelp("Serve HTTPS with this PEM certificate chain (server certificate first).", valueName: "FILE")
    )
    var tlsCertificate: String?

    @Option(name: .customLong("tls-key"), help: ArgumentHelp("The certificate's PEM private key (unencrypted).", valueName: "FILE"))
    var tlsKey: String?

    @Option(
        name: .long,
        help: ArgumentHelp("A request head (and TLS handshake) must arrive within this (default 15s).", valueName: "SECONDS")
    )
    var headerTimeout: String?

    @Option(
        name: .long,
        help: ArgumentHelp(
            "Close kept-alive connections idle this long, and stalled uploads or readers (default 75s; long-polls are not idle).",
            valueName: "SECONDS"
        )
    )
    var idleTimeout: String?

    @Option(name: .long, help: "Open connections kept at most; the longest-idle one is closed to admit a new one (default 16384).")
    var maxConnections: Int?

    @Option(
        name: .long,
        help: ArgumentHelp(
            "Remove agents that sent no status report for this long (at least 1h, like 7d or 12h), as `agents remove` does: the instances an autoscaling group terminated. Counted once the controller has run three poll intervals (5 minutes at least). Default: never.",
            valueName: "DURATION"
        )
    )
    var removeSilentAgentsAfter: String?

    @Option(
        name: .long,
        help: ArgumentHelp(
            "A PostgreSQL database shared by several controllers (default: SQLite in the data directory).",
            valueName: "postgres://USER@HOST:PORT/DB?sslmode=verify-full"
        )
    )
    var database: String?

    @Option(name: .long, help: "PostgreSQL: connections this controller keeps at most (default 10).")
    var databasePoolSize: Int?

    @Option(name: .long, help: ArgumentHelp("PostgreSQL: cancel a statement running longer (default 30s).", valueName: "SECONDS"))
    var databaseStatementTimeout: String?

    @Option(
        name: .customLong("database-ca-file"),
        help: ArgumentHelp("PostgreSQL: PEM CA certificates the server must chain to (implies sslmode=verify-full).", valueName: "FILE")
    )
    var databaseCAFile: String?

    @Option(
        name: .customLong("instance-identity-cert"),
        help: ArgumentHelp(
            "AWS's public certificates (PEM) for EC2 instance identity documents: enrollment tokens then enroll only attested instances, each once.",
            valueName: "FILE"
        )
    )
    var instanceIdentityCertificate: String?

    @Option(
        name: .long,
        help: ArgumentHelp("An AWS account whose instances may enroll (with --instance-identity-cert). Repeatable.", valueName: "ID")
    )
    var instanceIdentityAccount: [String] = []

    /// The settings given as flags.
    func flagSettings() throws -> ServeSettings {
        var settings = ServeSettings()
        settings.listen = listen
        settings.dataDirectory = dataDirectory
        settings.trustedKeys = trustedKey
        settings.threshold = threshold
        settings.trustRoot = trustRoot
        settings.pollSeconds = pollSeconds
        settings.maxBodyBytes = try maxBodyBytes.map { try ServeSettings.parseSize($0, name: "--max-body-bytes") }
        settings.maxStatusBytes = try maxStatusBytes.map { try ServeSettings.parseSize($0, name: "--max-status-bytes") }
        settings.maxArtifactBytes = try maxArtifactBytes.map { try ServeSettings.parseSize($0, name: "--max-artifact-bytes") }
        settings.statusHistory = statusHistory
        settings.logLevel = logLevel
        settings.tlsCertificate = tlsCertificate
        settings.tlsKey = tlsKey
        settings.headerTimeout = headerTimeout
        settings.idleTimeout = idleTimeout
        settings.maxConnections = maxConnections
        settings.removeSilentAgentsAfter = removeSilentAgentsAfter
        settings.database = database
        settings.databasePoolSize = databasePoolSize
        settings.databaseStatementTimeout = databaseStatementTimeout
        settings.databaseCAFile = databaseCAFile
        settings.instanceIdentityCertificate = instanceIdentityCertificate
        settings.instanceIdentityAccounts = instanceIdentityAccount
        return settings
    }

    /// Flags over environment over config file.
    func resolvedSettings(environment: [String: String]) throws -> ServeSettings {
        var settings = ServeSettings()
        if let file = config ?? environment["FERRY_CONFIG"].flatMap({ $0.isEmpty ? nil : $0 }) {
            settings = try ServeSettings.fromFile(file)
        }
        return try settings.overlaid(by: ServeSettings.fromEnvironment(environment)).overlaid(by: flagSettings())
    }

    /// The config file's `listen`, `dataDir` and `database` that the environment overrides with another value, said
    /// at start: the systemd unit sets `FERRY_LISTEN` and `FERRY_DATA_DIR`, and a `listen:` in the file then changed
    /// nothing without a word.
    func fileSettingsOverridden(environment: [String: String]) -> [String] {
        guard let path = config ?? environment["FERRY_CONFIG"].flatMap({ $0.isEmpty ? nil : $0 }),
            let file = try? ServeSettings.fromFile(path), let overriding = try? ServeSettings.fromEnvironment(environment)
        else { return [] }
        let pairs: [(key: String, variable: String, file: String?, environment: String?)] = [
            ("listen", "FERRY_LISTEN", file.listen, overriding.listen),
            ("dataDir", "FERRY_DATA_DIR", file.dataDirectory, overriding.dataDirectory),
            ("database", "FERRY_DATABASE", file.database.map(RedactedDatabaseURL.redact), overriding.database.map(RedactedDatabaseURL.redact)),
        ]
        return pairs.compactMap { pair in
            guard let inFile = pair.file, let fromEnvironment = pair.environment, inFile != fromEnvironment else { return nil }
            return "\(path): \(pair.key) \(inFile) is overridden by \(pair.variable)=\(fromEnvironment) (the environment wins over the file)"
        }
    }

    /// The lock of the data directory, held for the life of the process.
    nonisolated(unsafe) private static var dataDirectoryLock: Int32 = -1

    /// One `serve` per data directory (`<data-dir>/serve.lock`): a second one, even one that then fails to bind its
    /// port, removed the first one's uploads in progress at its start (the artifact store clears its temporary files)
    /// and wrote the same SQLite database. Other commands (`token create --database`, ...) take no lock.
    static func lockDataDirectory(_ directory: String) throws {
        do {
            try DataDirectory.prepare(directory)
        } catch {
            throw CLIError("\(error)")
        }
        let path = "\(directory)/serve.lock"
        do throws(ProcessLock.Failure) {
            dataDirectoryLock = try ProcessLock.acquire(path)
        } catch {
            switch error {
            case .held(let holder):
                throw CLIError(
                    "another ferry-controller serve\(holder.map { " (pid \($0))" } ?? "") uses the data directory \(directory) (\(path) is "
                        + "locked): stop it first, or give this one a --data-dir of its own"
                )
            case .unavailable:
                throw CLIError("cannot lock the data directory (\(path)): \(error.reason)")
            }
        }
    }

    func run() async throws {
        let settings: ServeSettings
        var resolved: ControllerConfiguration
        let level: Logger.Level
        do {
            settings = try resolvedSettings(environment: ProcessInfo.processInfo.environment)
            resolved = try settings.configuration()
            level = try settings.resolvedLogLevel()
            // Checked before the database is opened: a pair that cannot be served must not leave a data directory behind.
            if let files = resolved.tls { _ = try TLSCertificateStore(files: files) }
        } catch {
            throw CLIError("\(error)")
        }
        LoggingSystem.bootstrap { label in ControllerLogHandler(label: label, level: level) }
        var logger = Logger(label: "ferry.controller")
        logger.logLevel = level
        for overridden in fileSettingsOverridden(environment: ProcessInfo.processInfo.environment) { logger.warning("\(overridden)") }
        let registry = PrometheusCollectorRegistry()
        // Once per process, here only: metrics of libraries using swift-metrics go to the same registry as Ferry's own.
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        resolved.connectionLimits.maximumConnections = Self.raiseOpenFileLimit(for: resolved.connectionLimits, logger: logger)
        resolved.codePages = Self.codePageSchedule(environment: ProcessInfo.processInfo.environment, logger: logger)
        let configuration = resolved

        try Self.lockDataDirectory(configuration.dataDirectory)
        let store: SQLControllerStore
        do {
            store = try await configuration.database.openStore(sqlitePath: configuration.databasePath, logger: logger)
        } catch {
            throw CLIError("\(error)")
        }
        let application: ControllerApplication
        do {
            application = try makeApplication(
                configuration: configuration,
                store: store,
                registry: registry,
                logger: logger,
                onServerRunning: { port in
                    let host = configuration.host.contains(":") ? "[\(configuration.host)]" : configuration.host
                    let scheme = configuration.tls == nil ? "http" : "https"
                    // Tests and scripts read the bound port from this line: write it in one piece, unbuffered.
                    FileHandle.standardOutput.write(Data("ferry-controller listening on \(scheme)://\(host):\(port)\n".utf8))
                }
            )
            // A chain that no longer follows from the pin (the flags changed under published roots) is refused here,
            // before anything is served with it.
            _ = try await application.core.trust.current(in: store)
        } catch {
            try? await store.close()
            throw CLIError("\(error)")
        }
        logger.info(
            "Starting controller",
            metadata: [
                "ferry.data_dir": "\(configuration.dataDirectory)", "ferry.trust.pinned_version": "\(application.core.trust.pinned.version)",
                "ferry.trust.release_threshold": "\(application.core.trust.pinned.root.releaseRole.threshold)",
                "ferry.header_timeout": "\(configuration.connectionLimits.headerTimeout)",
                "ferry.idle_timeout": "\(configuration.connectionLimits.idleTimeout)",
                "ferry.max_connections": "\(configuration.connectionLimits.maximumConnections)",
            ]
        )
        application.certificates?.logCurrent("Serving HTTPS", logger: logger)
        if let warning = Self.plainHTTPWarning(host: configuration.host, tls: configuration.tls != nil) { logger.warning("\(warning)") }
        // Trapped before the group starts: a SIGHUP right after the "listening" line must reload, not kill.
        let reloading = await TLSReloadService(certificates: application.certificates, logger: logger)
        try await application.serviceGroup(reloading: reloading).run()
        logger.info("Controller stopped")
    }

    /// When `serve` lets go of the code pages it ran once: the default schedule, which keeps them with
    /// `FERRY_CODE_PAGES=keep`. `FERRY_TEST_CODE_PAGES_FIRST_MS` (tests) brings the first release forward.
    static func codePageSchedule(environment: [String: String], logger: Logger) -> CodePageService.Schedule {
        let value = environment["FERRY_CODE_PAGES"]
        if let warning = LoadedCode.unrecognised(environment: value) { logger.warning("\(warning)") }
        var schedule = CodePageService.Schedule()
        schedule.keeps = LoadedCode.keepRequested(environment: value)
        if let milliseconds = environment["FERRY_TEST_CODE_PAGES_FIRST_MS"].flatMap({ Int($0) }), milliseconds >= 0 {
            schedule.first = .milliseconds(milliseconds)
        }
        return schedule
    }

    /// Raises the soft open-file limit so the connection cap fits; returns the cap to use: the configured one, or
    /// what the hard limit leaves room for when that is less (with a warning). Past the descriptor limit the server
    /// could not accept anything, `/healthz` included, so shedding idle connections has to start before it.
    static func raiseOpenFileLimit(for limits: ConnectionLimits, logger: Logger) -> Int {
        let reserved = ConnectionLimits.reservedFileDescriptors
        guard let outcome = OpenFileLimit.raise(toFit: limits.maximumConnections + reserved) else {
            logger.warning("Cannot read the open-file limit (RLIMIT_NOFILE): keeping --max-connections as given")
            return limits.maximumConnections
        }
        let fit = max(16, outcome.connections(reserving: reserved))
        let cap = min(limits.maximumConnections, fit)
        let metadata: Logger.Metadata = [
            "ferry.nofile.soft": "\(outcome.current)", "ferry.nofile.hard": "\(outcome.hard)", "ferry.nofile.previous": "\(outcome.previous)",
            "ferry.nofile.reserved": "\(reserved)", "ferry.max_connections.configured": "\(limits.maximumConnections)",
            "ferry.max_connections": "\(cap)",
        ]
        if cap < limits.maximumConnections {
            logger.warning(
                "The open-file limit leaves room for fewer connections than --max-connections: the cap is lowered to fit; raise LimitNOFILE (systemd) or ulimit -n to allow more",
                metadata: metadata
            )
        } else {
            logger.debug("Open-file limit", metadata: metadata)
        }
        return cap
    }

    /// The warning for plain HTTP on an address other hosts reach: tokens and releases cross the network in clear unless a
    /// load balancer in front ends TLS. Said at start, since an empty `tlsCert:` (a template's variable left undefined)
    /// or `FERRY_TLS_CERT=` reads as no TLS, and only the scheme of the "listening on" line showed it.
    static func plainHTTPWarning(host: String, tls: Bool) -> String? {
        guard !tls, !ControllerOptions.isLoopback(host) else { return nil }
        return "serving plain HTTP on \(host.isEmpty ? "every interface" : host): tokens and releases cross the network unencrypted "
            + "unless TLS ends at a load balancer in front; give --tls-cert and --tls-key (tlsCert/tlsKey, FERRY_TLS_CERT/FERRY_TLS_KEY) "
            + "to serve HTTPS"
    }
}
