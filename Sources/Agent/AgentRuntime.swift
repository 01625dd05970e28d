import Logging
import Shared

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
import Supervisor
#endif

/// Everything a running agent is made of, built from its configuration.
struct AgentRuntime: Sendable {
    let config: AgentConfig
    let layout: AgentLayout
    let client: AgentControllerClient
    let processManager: any ProcessManager
    let processManagerName: String
    let reconciler: Reconciler
    /// The trust root releases are checked against, followed through the controller's newer roots.
    let trust: AgentTrust
    /// Instance env values to mask in everything that leaves the agent (shared with the logger).
    let secrets: InstanceSecrets
    let logger: Logger
    /// Whether the agent lets go of its code pages once a pass settles (`LoadedCode`); `FERRY_CODE_PAGES=keep` keeps
    /// them mapped.
    var releasesCodePages = true

    /// Builds the runtime. Test-only pause points come from `FERRY_TEST_PAUSE_AFTER_BYTES` (download) and
    /// `FERRY_TEST_PAUSE_AFTER_ENTRIES` (extraction), `FERRY_TEST_PAUSE_BEFORE_ROLLBACK=1` (a failed release's verdict
    /// saved, before it is taken out): the agent then stops there until killed.
    /// `FERRY_TEST_SUPERVISOR_REQUEST_SECONDS` shortens the builtin supervisor's request timeout (a wedged daemon).
    static func make(
        config: AgentConfig,
        logger: Logger,
        secrets: InstanceSecrets,
        environment: [String: String] = ProcessEnvironment.current
    ) throws -> AgentRuntime {
        let layout = AgentLayout(stateDir: config.stateDir)
        var httpConfiguration = HTTPClient.Configuration()
        httpConfiguration.caFile = config.caFile
        let http = HTTPClient(configuration: httpConfiguration)
        let token = try config.token()
        // Polls and reports each keep one connection open (one TLS handshake each for the agent's life, not one per
        // poll), apart so that a report never waits behind a parked long-poll.
        let client = AgentControllerClient(
            baseURL: config.controllerURL,
            token: token,
            http: http,
            connections: (HTTPConnection(configuration: httpConfiguration), HTTPConnection(configuration: httpConfiguration))
        )
        let (processManager, name) = try makeProcessManager(
            config: config,
            layout: layout,
            logger: logger,
            supervisorRequestTimeout: environment["FERRY_TEST_SUPERVISOR_REQUEST_SECONDS"].flatMap { Int64($0) }.map { .seconds(max(1, $0)) }
        )

        var fetcherConfiguration = ArtifactFetcher.Configuration(stateDirectory: layout.stateDir)
        fetcherConfiguration.pauseAfterBytes = environment["FERRY_TEST_PAUSE_AFTER_BYTES"].flatMap { Int64($0) }
        // Test hook: full-disk tests run on a small tmpfs, where the default 64 MiB margin alone would not fit.
        if let margin = environment["FERRY_TEST_FREE_SPACE_MARGIN"].flatMap({ Int64($0) }), margin >= 0 {
            fetcherConfiguration.freeSpaceMargin = margin
        }
        let fetcher = ArtifactFetcher(
            configuration: fetcherConfiguration,
            client: http,
            controllerURL: config.controllerURL,
            token: token,
            logger: logger
        )
        var extractorConfiguration = ArchiveExtractor.Configuration()
        extractorConfiguration.pauseAfterEntries = environment["FERRY_TEST_PAUSE_AFTER_ENTRIES"].flatMap { Int($0) }
        extractorConfiguration.freeSpaceFloor = fetcherConfiguration.freeSpaceMargin
        let extractor = ArchiveExtractor(configuration: extractorConfiguration, logger: logger)

        let healthGate = HealthGate(probe: HealthProbe.http(client: HTTPClient(configuration: HealthProbe.clientConfiguration)))
        let pinned = try config.pinnedRoot()
        let trust = AgentTrust(
            configuration: .init(clockSkewGrace: .seconds(config.clockSkewSeconds)),
            pinned: pinned,
            file: layout.trustRootFile,
            logger: logger
        )
        // The pin until the first pass hands over the stored (or newly fetched) root: `refreshTrust(for:)`.
        let evaluator = DesiredStateEvaluator(
            policy: pinned.root.policy(for: .release),
            admission: ReleaseAdmission(clockSkewGrace: .seconds(config.clockSkewSeconds)),
            services: Set(config.services)
        )
        let reconciler = Reconciler(
            configuration: .init(
                services: config.services,
                namespace: config.namespace,
                envDir: config.envDir,
                keepReleases: config.keepReleases,
                pausesBeforeTakingOut: environment["FERRY_TEST_PAUSE_BEFORE_ROLLBACK"] == "1"
            ),
            layout: layout,
            processManager: processManager,
            processManagerName: name,
            evaluator: evaluator,
            fetcher: fetcher,
            extractor: extractor,
            healthGate: healthGate,
            secrets: secrets,
            logger: logger
        )
        let codePages = environment["FERRY_CODE_PAGES"]
        if let warning = LoadedCode.unrecognised(environment: codePages) { logger.warning("\(warning)") }
        return AgentRuntime(
            config: config,
            layout: layout,
            client: client,
            processManager: processManager,
            processManagerName: name,
            reconciler: reconciler,
            trust: trust,
            secrets: secrets,
            logger: logger,
            releasesCodePages: !LoadedCode.keepRequested(environment: codePages)
        )
    }

    /// Lets go of the code pages start-up or the last deploy ran (`LoadedCode.release()`): called when a pass settles
    /// after passes that did not, so an idle agent's RSS is what its polls and reports run, not everything it ran once.
    func releaseCodePages() {
        guard releasesCodePages else {
            logger.debug("code pages kept (FERRY_CODE_PAGES=keep)")
            return
        }
        // Not inside the log call: its metadata is an autoclosure, which runs only when debug lines are logged.
        let outcome = LoadedCode.release()
        logger.debug("released code pages", metadata: outcome.logFields.mapValues { .string($0) })
    }

    /// Brings the trust root up to the version `desired` names (fetching and verifying each step) and hands its
    /// verdict to the reconciler, before the pass evaluates any release. `desired` is `nil` when the controller could
    /// not be reached: the root stays as it is, its expiry is still checked.
    func refreshTrust(for desired: DesiredState?) async {
        if let desired {
            let client = client
            await trust.catchUp(to: desired.rootVersion) { version in try await client.root(version: version) }
        }
        await reconciler.updateTrust(await trust.snapshot(at: Date()))
    }

    /// PM2 when configured (or, for `auto`, when the apps run under it or, on a first start, when `pm2` is on PATH:
    /// `ProcessManagerChoice`), else the builtin supervisor. `repairs`: false for a command that only looks (`status`): PM2's stray daemons and dead daemons' leftovers are
    /// left to the running agent. `startsDaemon`: false for a command that only looks: no daemon is started where none
    /// runs (the table read fails, saying so).
    static func makeProcessManager(
        config: AgentConfig,
        layout: AgentLayout,
        logger: Logger,
        repairs: Bool = true,
        startsDaemon: Bool = true,
        supervisorRequestTimeout: Duration? = nil
    ) throws -> (any ProcessManager, String) {
        let usePM2 = try ProcessManagerChoice.usesPM2(
            config.processManager,
            pm2Found: config.pm2Path != nil || ExecutableLookup.find("pm2") != nil,
            layout: layout,
            records: repairs
        )
        if usePM2 {
            var configuration = PM2ProcessManager.Configuration(
                executable: config.pm2Path ?? "pm2",
                pm2Home: config.pm2Home,
                namespace: config.namespace,
                commandTimeout: .seconds(config.pm2TimeoutSeconds),
                repairsDaemons: repairs,
                readsTableFromDaemon: config.pm2TableSource == .socket,
                logRotation: config.logMaxBytes == 0 ? nil : LogRotation(maximumFileBytes: config.logMaxBytes, keptFiles: config.logKeep)
            )
            configuration.startsDaemon = startsDaemon
            return (try PM2ProcessManager(configuration: configuration, logger: logger), "pm2")
        }
        var configuration = BuiltinProcessManager.Configuration(home: layout.supervisorHome, namespace: config.namespace)
        // The supervisor rotates its apps' logs itself, always: `0` (leave PM2's logs to pm2-logrotate) keeps its default.
        let maximum = config.logMaxBytes == 0 ? AgentConfig.defaultLogMaxBytes : config.logMaxBytes
        configuration.logRotation = LogRotation(maximumFileBytes: maximum, keptFiles: config.logKeep)
        if let supervisorRequestTimeout { configuration.requestTimeout = supervisorRequestTimeout }
        configuration.startsDaemon = startsDaemon
        return (BuiltinProcessManager(configuration: configuration, logger: logger), "builtin")
    }

    /// This host's name, for reports.
    static func hostname() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "unknown" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// Finds executables on PATH.
enum ExecutableLookup {
    static func find(_ name: String, path: String? = ProcessEnvironment.current["PATH"]) -> String? {
        for directory in (path ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":") {
            let candidate = "\(directory)/\(name)"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }
}
