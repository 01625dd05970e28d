import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import Shared
import Synchronization
import TestSupport

@testable import Controller

/// A wall clock tests move by hand (the controller reads time only through `ControllerCore.now`).
final class RolloutClock: Sendable {
    private let current = Mutex(Date())

    var now: Date { current.withLock { $0 } }

    func advance(seconds: Double) {
        current.withLock { $0 = $0.addingTimeInterval(seconds) }
    }
}

/// A controller built in-process around a real SQLite file in a temporary directory, with an operator key, tokens and
/// a movable clock. `reopen` closes the store and builds a new application on the same file (a restart).
final class RolloutHarness: Sendable {
    let directory: URL
    let key: SigningKey
    /// The second release key: a release signed by `key` alone awaits its approval under `releaseThreshold: 2`.
    let secondKey: SigningKey
    /// How many release keys a release needs (1: `key` alone, the only one trusted; 2: `key` and `secondKey`).
    let releaseThreshold: Int
    let clock = RolloutClock()
    let configuration: ControllerConfiguration
    let operatorToken: String
    let enrollToken: String
    let viewerToken: String
    private let current: Mutex<(store: SQLiteControllerStore, app: ControllerApplication)>

    var app: ControllerApplication { current.withLock { $0.app } }
    var store: SQLiteControllerStore { current.withLock { $0.store } }

    private init(
        directory: URL,
        keys: (SigningKey, SigningKey),
        configuration: ControllerConfiguration,
        tokens: [String],
        store: SQLiteControllerStore
    ) throws {
        self.directory = directory
        (key, secondKey) = keys
        releaseThreshold = configuration.trustPolicy?.threshold ?? 1
        self.configuration = configuration
        operatorToken = tokens[0]
        enrollToken = tokens[1]
        viewerToken = tokens[2]
        current = Mutex((store, try Self.application(configuration: configuration, store: store, clock: clock)))
    }

    /// A fresh controller whose releases need `releaseThreshold` of its two release keys; remove it with `close()`.
    static func make(releaseThreshold: Int = 1) async throws -> RolloutHarness {
        let directory = try TestPaths.makeTemporaryDirectory("ferry-rollout")
        do {
            let key = try SigningKey.generate()
            let secondKey = try SigningKey.generate()
            var configuration = ControllerConfiguration(
                trustPolicy: try TrustPolicy(
                    trustedKeys: releaseThreshold > 1 ? [key.publicKey, secondKey.publicKey] : [key.publicKey],
                    threshold: releaseThreshold
                )
            )
            configuration.dataDirectory = directory.path
            let store = try await SQLiteControllerStore.open(.init(path: configuration.databasePath), logger: Self.logger)
            var tokens: [String] = []
            for role in [TokenRole.operator, .enroll, .viewer] {
                let token = Token.generate()
                let scope: ServiceScope? = role == .enroll ? .anyService : nil
                try await store.createToken(hash: Token.digest(token), name: "test-\(role.rawValue)", role: role, scope: scope, at: Date())
                tokens.append(token)
            }
            return try RolloutHarness(directory: directory, keys: (key, secondKey), configuration: configuration, tokens: tokens, store: store)
        } catch {
            try? FileManager.default.removeItem(at: directory)
            throw error
        }
    }

    static let logger: Logger = {
        var logger = Logger(label: "ferry.test.rollout")
        logger.logLevel = .warning
        return logger
    }()

    private static func application(
        configuration: ControllerConfiguration,
        store: SQLiteControllerStore,
        clock: RolloutClock
    ) throws
        -> ControllerApplication
    {
        try makeApplication(configuration: configuration, store: store, logger: logger, now: { clock.now })
    }

    /// Closes the store and opens the same file again under a new application: what a controller restart keeps.
    func reopen() async throws {
        try await store.close()
        let store = try await SQLiteControllerStore.open(.init(path: configuration.databasePath), logger: Self.logger)
        let app = try Self.application(configuration: configuration, store: store, clock: clock)
        current.withLock { $0 = (store, app) }
    }

    /// Runs `body` with a fresh controller, then closes its store and removes its directory, whatever happens.
    static func with(releaseThreshold: Int = 1, _ body: (RolloutHarness) async throws -> Void) async throws {
        let harness = try await make(releaseThreshold: releaseThreshold)
        do {
            try await body(harness)
        } catch {
            await harness.close()
            throw error
        }
        await harness.close()
    }

    /// Closes the store and removes the directory.
    func close() async {
        try? await store.close()
        try? FileManager.default.removeItem(at: directory)
    }

    /// Runs `body` against the current application's router, in process.
    func withClient<T: Sendable>(_ body: @escaping @Sendable (RolloutClient) async throws -> T) async throws -> T {
        try await app.application.test(.router) { client in try await body(RolloutClient(client: client, harness: self)) }
    }

    /// A signed release of `service` (artifact by absolute URL, so no upload is needed), by as many release keys as a
    /// release needs, or by `key` alone when `signedOnce`.
    func envelope(service: String = "web", serial: Int64, version: String, signedOnce: Bool = false) throws -> Envelope {
        let now = clock.now
        let release = Release(
            service: service,
            serial: serial,
            version: version,
            createdAt: now,
            expiresAt: now.addingTimeInterval(86_400),
            artifact: ArtifactReference(
                url: "https://artifacts.example/\(service)-\(version).tgz",
                sha256: SHA256.hash(Array("\(service) \(version)".utf8)),
                size: 1000
            ),
            pm2: PM2Config(apps: [PM2App(name: "\(service)-app", script: "server.js")])
        )
        return try Envelope.sign(
            payload: release.payload(),
            payloadType: Release.payloadType,
            with: signedOnce || releaseThreshold == 1 ? [key] : [key, secondKey]
        )
    }
}

/// An answer: status code and parsed JSON body (`.null` when empty or not JSON).
struct RolloutAnswer: Sendable {
    var status: Int
    var json: RolloutDoc
}

/// The API calls the rollout tests make, through HummingbirdTesting's client.
struct RolloutClient: Sendable {
    let client: any TestClientProtocol
    let harness: RolloutHarness

    func call(_ method: HTTPTypes.HTTPRequest.Method, _ uri: String, token: String, body: [UInt8]? = nil) async throws -> RolloutAnswer {
        let response = try await client.execute(
            uri: uri,
            method: method,
            headers: [.authorization: "Bearer \(token)", .contentType: "application/json"],
            body: body.map { ByteBuffer(bytes: $0) }
        )
        let bytes = Array(response.body.readableBytesView)
        return RolloutAnswer(status: Int(response.status.code), json: RolloutDoc((try? JSONValue.parse(bytes)) ?? .null))
    }

    /// Enrolls an agent; its id and token.
    func enroll(_ name: String, services: [String] = ["web"]) async throws -> RolloutAgent {
        let request = EnrollRequest(name: name, hostname: "\(name).test", services: services)
        let answer = try await call(.post, "/v1/agents", token: harness.enrollToken, body: Array(request.json.encoded()))
        guard answer.status == 201, let id = answer.json["agentId"].string, let token = answer.json["token"].string else {
            throw RolloutTestError("enrolment of \(name) failed: \(answer.status) \(answer.json)")
        }
        return RolloutAgent(id: id, name: name, token: token)
    }

    /// `POST /v1/releases[?query]` with a freshly signed release (by one release key of two when `signedOnce`).
    func publish(
        service: String = "web",
        serial: Int64,
        version: String,
        query: String = "",
        signedOnce: Bool = false
    ) async throws
        -> RolloutAnswer
    {
        let envelope = try harness.envelope(service: service, serial: serial, version: version, signedOnce: signedOnce)
        return try await call(
            .post,
            "/v1/releases" + (query.isEmpty ? "" : "?\(query)"),
            token: harness.operatorToken,
            body: Array(envelope.encoded())
        )
    }

    /// Publishes and requires a 201.
    @discardableResult
    func mustPublish(
        service: String = "web",
        serial: Int64,
        version: String,
        query: String = "",
        signedOnce: Bool = false
    ) async throws
        -> RolloutDoc
    {
        let answer = try await publish(service: service, serial: serial, version: version, query: query, signedOnce: signedOnce)
        guard answer.status == 201 else { throw RolloutTestError("publish of serial \(serial) failed: \(answer.status) \(answer.json)") }
        return answer.json
    }

    /// The serial of `service` in the agent's desired state, or `nil` when it gets none.
    func desiredSerial(_ agent: RolloutAgent, service: String = "web") async throws -> Int64? {
        let answer = try await call(.get, "/v1/agents/\(agent.id)/desired-state", token: agent.token)
        guard answer.status == 200 else { throw RolloutTestError("desired state of \(agent.name): \(answer.status) \(answer.json)") }
        let state = try DesiredState(json: answer.json.value)
        for envelope in state.releases {
            let release = try Release.decode(envelope.payload)
            if release.service == service { return release.serial }
        }
        return nil
    }

    /// The desired serials of `agents`, in order.
    func desiredSerials(_ agents: [RolloutAgent], service: String = "web") async throws -> [Int64?] {
        var serials: [Int64?] = []
        for agent in agents { serials.append(try await desiredSerial(agent, service: service)) }
        return serials
    }

    /// Posts a status report for one service.
    func report(_ agent: RolloutAgent, _ status: ServiceStatus) async throws {
        let report = StatusReport(agentVersion: "test", hostname: "\(agent.name).test", processManager: "builtin", services: [status])
        let answer = try await call(.post, "/v1/agents/\(agent.id)/status", token: agent.token, body: Array(report.json.encoded()))
        guard answer.status == 204 else { throw RolloutTestError("status of \(agent.name): \(answer.status) \(answer.json)") }
    }

    /// Reports `serial` running and healthy.
    func reportHealthy(_ agent: RolloutAgent, serial: Int64, service: String = "web", failures: [ReleaseFailure] = []) async throws {
        try await report(
            agent,
            ServiceStatus(
                service: service,
                serial: serial,
                version: "v\(serial)",
                targetSerial: serial,
                phase: .running,
                message: "serial \(serial) is running and healthy",
                health: .healthy,
                failures: failures,
                processes: []
            )
        )
    }

    /// Reports that `failed` was rolled back to `runs`, as the agent does after a failed health gate.
    func reportRolledBack(
        _ agent: RolloutAgent,
        failed: Int64,
        runs: Int64,
        service: String = "web",
        reason: String = "crashed at boot"
    )
        async throws
    {
        try await report(agent, Self.rolledBack(failed: failed, runs: runs, service: service, reason: reason))
    }

    /// The status of a service whose serial `failed` was rolled back to `runs`, as the agent reports it.
    static func rolledBack(failed: Int64, runs: Int64, service: String = "web", reason: String = "crashed at boot") -> ServiceStatus {
        ServiceStatus(
            service: service,
            serial: runs,
            version: "v\(runs)",
            targetSerial: failed,
            phase: .rolledBack,
            message: "serial \(failed) failed and was rolled back to serial \(runs): \(reason)",
            health: .unhealthy,
            failures: [ReleaseFailure(serial: failed, reason: reason, kind: "rolled-back")],
            processes: []
        )
    }

    /// The latest rollout of `service` (`GET /v1/rollouts?service=`).
    func rollout(_ service: String = "web") async throws -> RolloutDoc {
        let answer = try await call(.get, "/v1/rollouts?service=\(service)&limit=1", token: harness.viewerToken)
        guard answer.status == 200 else { throw RolloutTestError("rollouts: \(answer.status) \(answer.json)") }
        return answer.json["rollouts"][0]
    }

    /// The rollout of `serial` of `service`, from the service's listing (`.null` when it is not among the newest ten).
    func rollout(_ service: String = "web", serial: Int64) async throws -> RolloutDoc {
        let answer = try await call(.get, "/v1/rollouts?service=\(service)&limit=10", token: harness.viewerToken)
        guard answer.status == 200 else { throw RolloutTestError("rollouts: \(answer.status) \(answer.json)") }
        return answer.json["rollouts"].array.first { $0["serial"].int == serial } ?? RolloutDoc(.null)
    }

    /// The second release key's approval of `serial` of `service` (`POST .../signatures`), over the stored payload.
    func approve(service: String = "web", serial: Int64) async throws -> RolloutAnswer {
        guard let stored = try await harness.store.releases([ReleaseKey(service: service, serial: serial)]).first else {
            throw RolloutTestError("no release \(service) \(serial)")
        }
        let message = Envelope.pae(payloadType: Release.payloadType, payload: stored.envelope.payload)
        let signature = Envelope.json(of: .init(keyid: "", sig: try harness.secondKey.signature(for: message)))
        return try await call(
            .post,
            "/v1/services/\(service)/releases/\(serial)/signatures",
            token: harness.operatorToken,
            body: Array(JSONValue.object(["signatures": .array([signature])]).encoded())
        )
    }

    /// `POST /v1/services/{service}/rollout/{action}`.
    func act(_ action: String, service: String = "web", token: String? = nil) async throws -> RolloutAnswer {
        try await call(.post, "/v1/services/\(service)/rollout/\(action)", token: token ?? harness.operatorToken)
    }

    /// `GET /v1/events` kinds and messages, newest first.
    func events(limit: Int = 100) async throws -> [RolloutDoc] {
        let answer = try await call(.get, "/v1/events?limit=\(limit)", token: harness.viewerToken)
        guard answer.status == 200 else { throw RolloutTestError("events: \(answer.status) \(answer.json)") }
        return answer.json["events"].array
    }

    /// One evaluation pass, as the timer service runs every second.
    func tick() async {
        await harness.app.core.rollouts.tick()
    }
}

/// An enrolled agent.
struct RolloutAgent: Sendable {
    var id: String
    var name: String
    var token: String
}

/// Read-only navigation in a JSON answer: missing keys and indices give `.null`.
struct RolloutDoc: Sendable, CustomStringConvertible {
    let value: JSONValue

    init(_ value: JSONValue) { self.value = value }

    subscript(key: String) -> RolloutDoc {
        if case .object(let fields) = value, let field = fields[key] { return RolloutDoc(field) }
        return RolloutDoc(.null)
    }

    subscript(index: Int) -> RolloutDoc {
        if case .array(let items) = value, items.indices.contains(index) { return RolloutDoc(items[index]) }
        return RolloutDoc(.null)
    }

    var string: String? {
        if case .string(let text) = value { return text }
        return nil
    }

    var int: Int64? {
        if case .integer(let number) = value { return number }
        return nil
    }

    var array: [RolloutDoc] {
        if case .array(let items) = value { return items.map(RolloutDoc.init) }
        return []
    }

    var isNull: Bool { value == .null }

    var description: String { String(decoding: value.encoded(), as: UTF8.self) }
}

struct RolloutTestError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
