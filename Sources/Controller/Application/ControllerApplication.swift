import Foundation
import Hummingbird
import Logging
import NIOCore
import Prometheus
import ServiceLifecycle
import Shared

/// The controller server: the Hummingbird application plus the services that must start and stop around it.
struct ControllerApplication: Sendable {
    typealias HTTPApplication = Application<RouterResponder<FerryRequestContext>>

    /// The HTTP application (run it through `serviceGroup`; tests may also `application.test(.router)`).
    let application: HTTPApplication
    /// What the handlers use (the store, the long-poll hub, metrics).
    let core: ControllerCore
    /// The served certificate when the controller speaks TLS itself (`nil`: plain HTTP).
    let certificates: TLSCertificateStore?
    /// Every open client connection (the connection cap).
    let connections: ConnectionRegistry
    /// With PostgreSQL: carries changes between the controllers sharing the database.
    let relay: PostgresChangeRelay?
    /// With PostgreSQL: elects the controller that drives rollouts.
    let election: PostgresLeaderElection?
    /// With PostgreSQL: keeps this controller's clock on the database server's.
    let clockSync: ClusterClockSync?

    /// How long a graceful shutdown may take before the services still running are cancelled.
    static let maximumGracefulShutdown: Duration = .seconds(30)

    /// All long-running parts, in start order: the store (closed last), with PostgreSQL the clock sync, the change relay
    /// and the leader election, the rollout timer, the sweeps of agents removed elsewhere and (when set) of silent agents, the
    /// token-use recorder, the HTTP server, the long-poll hub.
    ///
    /// `ServiceGroup` shuts services down in reverse order, so on SIGTERM the hub answers every parked long-poll
    /// first, then the server stops accepting and lets in-flight requests finish (status reports among them wait for
    /// their batch to commit), then the rollout timer stops, then the database closes.
    /// - Parameters:
    ///   - handlingSignals: shut down gracefully on SIGTERM and SIGINT (`serve`); tests trigger it themselves.
    ///   - reloading: reloads the TLS certificate on SIGHUP (`serve`).
    func serviceGroup(handlingSignals: Bool = true, reloading: TLSReloadService? = nil) -> ServiceGroup {
        var services: [any Service] = [StoreService(store: core.store, logger: core.logger)]
        if let clockSync { services.append(clockSync) }
        if let relay { services.append(relay) }
        if let election { services.append(election) }
        services.append(RolloutTicker(coordinator: core.rollouts, logger: core.logger))
        services.append(GoneAgentSweep(core: core))
        if let after = core.configuration.removeSilentAgentsAfter {
            services.append(SilentAgentRemoval(core: core, after: after, started: .now))
        }
        if let schedule = core.configuration.codePages { services.append(CodePageService(schedule: schedule, logger: core.logger)) }
        if let reloading { services.append(reloading) }
        services += [
            TokenUsageRecorder(authenticator: core.authenticator, logger: core.logger), application,
            LongPollShutdownService(hub: core.desiredStates.hub, logger: core.logger),
        ]
        var configuration = ServiceGroupConfiguration(
            services: services,
            gracefulShutdownSignals: handlingSignals ? [.sigterm, .sigint] : [],
            logger: core.logger
        )
        // A service that does not end within this of a graceful shutdown is cancelled: the controller stops rather than
        // hang (systemd's own stop timeout is 90 s by default).
        configuration.maximumGracefulShutdownDuration = Self.maximumGracefulShutdown
        return ServiceGroup(configuration: configuration)
    }
}

/// Builds the controller application around an opened store.
///
/// - Parameters:
///   - registry: where Ferry's metrics go and what `GET /metrics` prints. Pass a fresh one per app in tests.
///   - selector: which release each agent receives; default `RolloutReleaseSelector` (staged rollouts).
///   - now: the wall clock; with PostgreSQL, corrected to the database server's (`ClusterClock`).
///   - onServerRunning: called with the bound port once the server listens (port 0 picks a free one).
/// - Throws: `DataDirectoryError`, `ArtifactStoreError` or `TokenRevocationError` when the data directory, the
///   artifact directory or the revocation signal file cannot be created; `TLSFileError` when the TLS certificate or key
///   cannot be used; `RootError` when the trusted keys cannot make a trust root.
func makeApplication(
    configuration: ControllerConfiguration,
    store: any ControllerStore,
    registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry(),
    logger: Logger,
    selector: any ReleaseSelector = RolloutReleaseSelector(),
    now hostNow: @escaping @Sendable () -> Date = { Date() },
    onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }
) throws -> ControllerApplication {
    let metrics = ControllerMetrics(registry: registry)
    let waiters = metrics.longPollWaiters
    let hub = LongPollHub(onCountChange: { waiters.set(to: Double($0)) })
    let builder = DesiredStateBuilder(configuration: .init(pollInterval: configuration.pollInterval), store: store, selector: selector)
    // Several controllers on one PostgreSQL database: changes travel between them, one is elected to drive rollouts.
    let postgres = (store as? SQLControllerStore)?.backend as? PostgresStoreBackend
    // Controllers sharing a database judge each other's timestamps (a report's arrival, a token's expiry): all of them
    // read the database server's clock.
    let clusterClock = postgres.map { _ in ClusterClock(base: hostNow) }
    let now: @Sendable () -> Date
    if let clusterClock { now = { clusterClock.now() } } else { now = hostNow }
    let changes: ClusterChangeFeed = postgres.map { .enabled(origin: $0.origin) } ?? .disabled()
    let leadership: RolloutLeadership = postgres == nil ? .always() : .elected()
    let desiredStates = DesiredStateProvider(builder: builder, hub: hub, changes: changes)
    let rollouts = RolloutCoordinator(
        configuration: .init(tickInterval: configuration.rolloutTickInterval, staleAfter: configuration.staleAfter),
        store: store,
        desiredStates: desiredStates,
        logger: logger,
        now: now,
        leadership: leadership
    )
    try DataDirectory.prepare(configuration.dataDirectory)
    // Several controllers on PostgreSQL: artifact bytes live in the database too, the directory is a cache.
    var sharedArtifacts: (any ArtifactBlobStore)?
    if postgres != nil { sharedArtifacts = store as? any ArtifactBlobStore }
    let artifacts = try ArtifactStore(
        .init(
            directory: configuration.artifactDirectory,
            maximumBytes: configuration.maximumArtifactBytes,
            shared: sharedArtifacts,
            logger: logger
        )
    )
    let revocations = TokenRevocations(dataDirectory: configuration.dataDirectory)
    try revocations.prepare()
    let heapTrim = HeapTrim(logger: logger)
    let core = ControllerCore(
        configuration: configuration,
        store: store,
        trust: try configuration.trust(),
        artifacts: artifacts,
        authenticator: Authenticator(store: store, revocations: revocations, now: now),
        revocations: revocations,
        desiredStates: desiredStates,
        rollouts: rollouts,
        statusReports: StatusReportQueue(
            configuration: .init(historyLimit: configuration.statusHistoryLimit),
            store: store,
            logger: logger,
            onBatch: { size, duration in metrics.statusBatch(size: size, duration: duration) },
            onDrained: { queue, committed in heapTrim.writerDrained(after: committed, isIdle: { queue.isIdle }) }
        ),
        metrics: metrics,
        logger: logger,
        bodyBudget: BodyBudget(
            limit: configuration.connectionLimits.maximumBodyBytesInFlight,
            largestBody: max(configuration.maximumStatusBytes, configuration.maximumBodyBytes)
        ),
        now: now
    )
    let uncertainCommits = postgres.map { postgres in
        let resync = UncertainCommitResync(delay: postgres.configuration.statementDeadline) { await core.apply(remote: .resync) }
        postgres.whenACommitIsUncertain { resync.request() }
        return resync
    }
    let router = try ControllerRouter.build(core: core)
    let certificates = try configuration.tls.map { files throws(TLSFileError) in try TLSCertificateStore(files: files) }
    let connections = ConnectionRegistry(
        maximumConnections: configuration.connectionLimits.maximumConnections,
        metrics: metrics.connections,
        logger: logger
    )
    let application = Application(
        // The guarded server answers each request in a task of its own (`ChildTaskHTTP1Channel`), so a kept-alive
        // connection does not keep its deepest request's memory.
        responder: router.buildResponder(),
        server: .guarded(
            registry: connections,
            limits: configuration.connectionLimits,
            certificates: certificates,
            polls: .init(
                authenticator: core.authenticator,
                desiredStates: desiredStates,
                metrics: metrics,
                maximumWait: configuration.maximumWait,
                statusReports: StatusReportIntake(core: core),
                maximumStatusBytes: configuration.maximumStatusBytes,
                bodyBudget: core.bodyBudget
            )
        ),
        // A deep accept queue: thousands of agents reconnect at once after a restart (the kernel caps it at somaxconn).
        configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: nil, backlog: 4096),
        onServerRunning: { channel in await onServerRunning(channel.localAddress?.port ?? configuration.port) },
        logger: logger
    )
    let relay = postgres.map { backend in
        // Until the listener hears the others' changes, no token is served from the cache (a revocation committed through
        // another controller could not be heard).
        core.revocations.othersUnheard(true)
        var relay = PostgresChangeRelay(backend: backend, feed: changes, apply: { change in await core.apply(remote: change) }, logger: logger)
        relay.onListening = { [revocations = core.revocations] listening in revocations.othersUnheard(!listening) }
        relay.appliesOwn = { change in change == .tokenRevoked || uncertainCommits?.appliesOwnChanges() == true }
        relay.reconnectDelay = configuration.changeListenerReconnectDelay
        relay.unheardResyncInterval = configuration.unheardResyncInterval
        return relay
    }
    let election = postgres.map { backend in
        var election = PostgresLeaderElection(backend: backend, leadership: leadership, logger: logger)
        if let clusterClock { election.isReady = { clusterClock.offset != nil } }
        return election
    }
    var clockSync: ClusterClockSync?
    if let postgres, let clusterClock { clockSync = ClusterClockSync(clock: clusterClock, database: postgres.readDB, logger: logger) }
    return ControllerApplication(
        application: application,
        core: core,
        certificates: certificates,
        connections: connections,
        relay: relay,
        election: election,
        clockSync: clockSync
    )
}

/// Closes the store when the service group shuts down (after the HTTP server, which is started after it), or when it is
/// cancelled because another service failed (the server could not bind its port): `close()` closes from a cancelled
/// task too.
struct StoreService: Service {
    let store: any ControllerStore
    let logger: Logger

    func run() async throws {
        try? await gracefulShutdown()
        do {
            try await store.close()
        } catch {
            logger.warning("Closing the store failed", metadata: ["error.message": "\(error)"])
        }
    }
}

/// Answers every parked long-poll when the service group shuts down, before the HTTP server waits for in-flight
/// requests (otherwise shutdown would wait up to the longest `?wait=`).
struct LongPollShutdownService: Service {
    let hub: LongPollHub
    let logger: Logger

    func run() async throws {
        try? await gracefulShutdown()
        logger.debug("Answering parked long-polls", metadata: ["ferry.long_poll.waiters": "\(hub.waiterCount)"])
        hub.shutdown()
    }
}
