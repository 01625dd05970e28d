import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import Prometheus
import ServiceLifecycle
import Shared
import TestSupport
import Testing

@testable import Controller

/// A controller with a fresh data directory, real SQLite store (or a PostgreSQL one, chosen by `adjust`), trusted keys
/// and one token of each role.
struct ControllerFixture: Sendable {
    let directory: URL
    let store: SQLiteControllerStore
    let controller: ControllerApplication
    let registry: PrometheusCollectorRegistry
    /// Trusted keys (the second one matters for threshold 2).
    let signingKey: SigningKey
    let secondKey: SigningKey
    /// A well-formed key the controller does not trust.
    let untrustedKey: SigningKey
    let operatorToken: String
    let enrollToken: String
    let viewerToken: String
    let ports: AsyncStream<Int>

    /// Silent, unless `FERRY_TEST_CONTROLLER_LOG` names a level (`debug`, `info`, ...): then every fixture controller
    /// logs to standard error at that level (the service group's start and shutdown steps are `debug`).
    static let logger: Logger = {
        guard let name = ProcessInfo.processInfo.environment["FERRY_TEST_CONTROLLER_LOG"], let level = Logger.Level(rawValue: name) else {
            return Logger(label: "ferry.test", factory: { _ in SwiftLogNoOpLogHandler() })
        }
        var logger = Logger(label: "ferry.test", factory: { label in StreamLogHandler.standardError(label: label) })
        logger.logLevel = level
        return logger
    }()

    /// Runs `body` with a fresh fixture, closing the store and removing the directory afterwards.
    /// - Parameter now: the host's wall clock (a skewed one for HighAvailabilityTests).
    static func with<R: Sendable>(
        threshold: Int = 1,
        directory existing: URL? = nil,
        adjust: (inout ControllerConfiguration) -> Void = { _ in },
        now: @escaping @Sendable () -> Date = { Date() },
        _ body: (ControllerFixture) async throws -> R
    ) async throws -> R {
        let fixture = try await make(threshold: threshold, directory: existing, adjust: adjust, now: now)
        do {
            let result = try await body(fixture)
            await fixture.close(removing: existing == nil)
            return result
        } catch {
            await fixture.close(removing: existing == nil)
            throw error
        }
    }

    /// Runs `body` with a fresh fixture whose store is a fresh database of `kind` (SQLite in the data directory, or a
    /// database made for the test on `PostgresTestServer`, dropped afterwards).
    static func with<R: Sendable>(
        _ kind: StoreBackendKind,
        threshold: Int = 1,
        adjust: @escaping (inout ControllerConfiguration) -> Void = { _ in },
        _ body: (ControllerFixture) async throws -> R
    ) async throws -> R {
        try await TestStore.withLocation(kind) { location in
            let selection = try location.selection
            return try await with(
                threshold: threshold,
                adjust: { configuration in
                    adjust(&configuration)
                    configuration.database = selection
                },
                body
            )
        }
    }

    static func make(
        threshold: Int = 1,
        directory existing: URL? = nil,
        adjust: (inout ControllerConfiguration) -> Void = { _ in },
        now: @escaping @Sendable () -> Date = { Date() }
    ) async throws -> ControllerFixture {
        let directory = try existing ?? TestPaths.makeTemporaryDirectory("ferry-controller-test")
        let signingKey = try SigningKey.generate()
        let secondKey = try SigningKey.generate()
        var configuration = ControllerConfiguration(
            trustPolicy: try TrustPolicy(trustedKeys: [signingKey.publicKey, secondKey.publicKey], threshold: threshold)
        )
        configuration.host = "127.0.0.1"
        configuration.port = 0
        configuration.dataDirectory = directory.path
        adjust(&configuration)
        // SQLite in the data directory unless `adjust` chose a PostgreSQL database (HighAvailabilityTests).
        let store = try await configuration.database.openStore(sqlitePath: configuration.databasePath, logger: logger)
        do {
            return try await make(directory: directory, configuration: configuration, store: store, keys: (signingKey, secondKey), now: now)
        } catch {
            // A store dropped open trips SQLiteNIO's assertion and takes the whole test process down (a test cancelled
            // by its time limit throws here; `close()` closes from a cancelled task too).
            try? await store.close()
            if existing == nil { try? FileManager.default.removeItem(at: directory) }
            throw error
        }
    }

    private static func make(
        directory: URL,
        configuration: ControllerConfiguration,
        store: SQLiteControllerStore,
        keys: (signing: SigningKey, second: SigningKey),
        now: @escaping @Sendable () -> Date
    ) async throws -> ControllerFixture {
        let (signingKey, secondKey) = keys
        let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
        let registry = PrometheusCollectorRegistry()
        let controller = try makeApplication(
            configuration: configuration,
            store: store,
            registry: registry,
            logger: logger,
            now: now,
            onServerRunning: { port in continuation.yield(port) }
        )
        func token(_ role: TokenRole, _ name: String) async throws -> String {
            let token = Token.generate()
            // The enroll token may enroll for any service (`--any-service`); SecurityTests make scoped ones.
            try await store.createToken(hash: Token.digest(token), name: name, role: role, scope: role == .enroll ? .anyService : nil, at: Date())
            return token
        }
        return ControllerFixture(
            directory: directory,
            store: store,
            controller: controller,
            registry: registry,
            signingKey: signingKey,
            secondKey: secondKey,
            untrustedKey: try SigningKey.generate(),
            operatorToken: try await token(.operator, "alice"),
            enrollToken: try await token(.enroll, "bootstrap"),
            viewerToken: try await token(.viewer, "dashboard"),
            ports: ports
        )
    }

    func close(removing: Bool = true) async {
        // Also from a cancelled test (a time limit): a connection left open trips SQLiteNIO's assertion and takes the
        // whole test process down with it, and `close()` closes from a cancelled task too.
        try? await store.close()
        if removing { try? FileManager.default.removeItem(at: directory) }
    }

    // MARK: In-process requests

    /// Runs `body` against the router in-process.
    func withRouter<R: Sendable>(_ body: @Sendable (any TestClientProtocol) async throws -> R) async throws -> R {
        try await controller.application.test(.router, body)
    }

    /// Runs the whole service group (store, server, long-poll hub) on 127.0.0.1 and a free port; shuts it down
    /// gracefully afterwards, whatever happens.
    func withLiveServer<R: Sendable>(_ body: @Sendable (_ baseURL: String) async throws -> R) async throws -> R {
        let group = controller.serviceGroup(handlingSignals: false)
        // Run outside the test's task tree, so a controller that does not stop fails this test (`stop`) instead of
        // hanging the whole test run; a cancelled test (its time limit) cancels it as a child task would be.
        // A run that ends before the server reports its port (a port in use, a store that fails to open) ends the wait
        // for the port too, instead of leaving the test waiting for a port that never comes.
        let (ended, endedContinuation) = AsyncStream.makeStream(of: Never.self)
        let running = Task {
            defer { endedContinuation.finish() }
            try await group.run()
        }
        let ports = ports
        return try await withTaskCancellationHandler {
            let reported = await withTaskGroup(of: Int?.self) { waits in
                waits.addTask {
                    var iterator = ports.makeAsyncIterator()
                    return await iterator.next()
                }
                waits.addTask {
                    for await _ in ended {}
                    return nil
                }
                defer { waits.cancelAll() }
                return await waits.next() ?? nil
            }
            guard let port = reported else {
                if case .failure(let error) = await running.result {
                    throw FixtureError("the server stopped before it reported its port: \(error)")
                }
                try? await Self.stop(group, running)
                throw FixtureError("the server never reported its port")
            }
            do {
                let result = try await body("http://127.0.0.1:\(port)")
                try await Self.stop(group, running, recording: true)
                return result
            } catch {
                try? await Self.stop(group, running)
                throw error
            }
        } onCancel: {
            running.cancel()
        }
    }

    /// How long a live controller may take to stop after a graceful shutdown is triggered: its own bound on the
    /// graceful part (`ControllerApplication.maximumGracefulShutdown`), then its services' cancellation.
    static let stopLimit: Duration = ControllerApplication.maximumGracefulShutdown + .seconds(30)

    /// Shuts `group` down and waits for `running` (its `run()`) at most `stopLimit`. A controller still running then
    /// is recorded as an issue (a service that ignores cancellation would hang a real `serve` on SIGTERM) and left
    /// behind; with `recording`, an error its run ended with is thrown.
    private static func stop(_ group: ServiceGroup, _ running: Task<Void, any Error>, recording: Bool = false) async throws {
        await group.triggerGracefulShutdown()
        let ended = await FirstOf.run(
            { () async -> Result<Void, any Error>? in await running.result },
            or: { () async -> Result<Void, any Error>? in
                try? await Task.sleep(for: stopLimit)
                return nil
            }
        )
        guard let ended else {
            Issue.record("the controller did not stop within \(stopLimit) of a graceful shutdown; left running")
            return
        }
        if recording { try ended.get() }
    }

    // MARK: Building requests

    static func bearer(_ token: String, _ extra: HTTPFields = [:]) -> HTTPFields {
        var fields = extra
        fields[.authorization] = "Bearer \(token)"
        return fields
    }

    /// Enrolls an agent through the API with the enroll token, or replaces it with `operatorToken` (`"replace":
    /// true`); its id and token.
    func enroll(
        _ client: any TestClientProtocol,
        name: String,
        services: [String] = ["api"],
        replacingWith operatorToken: String? = nil
    ) async throws -> (id: String, token: String) {
        let body = EnrollRequest(name: name, hostname: "\(name).example", services: services, replace: operatorToken != nil).json.encoded()
        let response = try await client.execute(
            uri: "/v1/agents",
            method: .post,
            headers: Self.bearer(operatorToken ?? enrollToken),
            body: ByteBuffer(bytes: body)
        )
        #expect(response.status == .created)
        let enrolled = try EnrollResponse(json: JSONValue.parse(Array(response.body.readableBytesView)))
        return (enrolled.agentID, enrolled.token)
    }

    /// Uploads `bytes` as an artifact; its reference.
    func upload(_ client: any TestClientProtocol, _ bytes: [UInt8]) async throws -> ArtifactReference {
        let response = try await client.execute(
            uri: "/v1/artifacts",
            method: .post,
            headers: Self.bearer(operatorToken),
            body: ByteBuffer(bytes: bytes)
        )
        #expect(response.status == .created || response.status == .ok)
        let digest = SHA256.hash(bytes)
        return ArtifactReference(url: ArtifactReference.controllerPath(for: digest), sha256: digest, size: Int64(bytes.count))
    }

    /// A valid release of `service`.
    static func release(
        service: String = "api",
        serial: Int64,
        version: String = "1.0.0",
        artifact: ArtifactReference,
        createdAt: Date = Date(),
        expiresIn: TimeInterval = 86_400
    ) -> Release {
        Release(
            service: service,
            serial: serial,
            version: version,
            createdAt: createdAt,
            expiresAt: createdAt.addingTimeInterval(expiresIn),
            artifact: artifact,
            env: ["NODE_ENV": "production"],
            pm2: PM2Config(apps: [PM2App(name: service, script: "server.js", options: ["instances": .integer(2)])])
        )
    }

    /// The envelope of `release` signed by `keys` (default: the first trusted key).
    func envelope(_ release: Release, keys: [SigningKey]? = nil) throws -> ByteBuffer {
        let envelope = try Envelope.sign(payload: release.payload(), payloadType: Release.payloadType, with: keys ?? [signingKey])
        return ByteBuffer(bytes: envelope.encoded())
    }

    /// Publishes `release` through the API; the response.
    func publish(_ client: any TestClientProtocol, _ release: Release, keys: [SigningKey]? = nil) async throws -> TestResponse {
        try await client.execute(
            uri: "/v1/releases",
            method: .post,
            headers: Self.bearer(operatorToken),
            body: try envelope(release, keys: keys)
        )
    }

    /// The `error` code of a JSON error body.
    /// The value of the unlabelled counter `name` (its full exposition name, `_total` included), 0 before its first
    /// increment.
    func counter(_ name: String) -> Int {
        var bytes: [UInt8] = []
        registry.emit(into: &bytes)
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") where line.hasPrefix(name + " ") {
            return Int(Double(line.split(separator: " ").last ?? "") ?? 0)
        }
        return 0
    }

    static func errorCode(_ response: TestResponse) -> String? {
        guard case .object(let fields)? = try? JSONValue.parse(Array(response.body.readableBytesView)),
            case .string(let code)? = fields["error"]
        else { return nil }
        return code
    }

    static func json(_ response: TestResponse) throws -> JSONValue {
        try JSONValue.parse(Array(response.body.readableBytesView))
    }
}

struct FixtureError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
