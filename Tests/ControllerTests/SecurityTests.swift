import Foundation
import HTTPTypes
import HummingbirdTesting
import SQLKit
import Shared
import TestSupport
import Testing

@testable import Controller

/// The token a security case presents, and how.
enum Presented: Sendable, CustomStringConvertible {
    case nothing
    case bearer(SecurityWorld.Key)
    case basic(SecurityWorld.Key)

    var isNothing: Bool {
        if case .nothing = self { return true }
        return false
    }

    var description: String {
        switch self {
        case .nothing: "no token"
        case .bearer(let key): "Bearer \(key)"
        case .basic(let key): "Basic \(key)"
        }
    }
}

/// One request an attacker (or a mistaken client) sends, and the exact answer it must get.
struct SecurityCase: Sendable, CustomTestStringConvertible {
    let name: String
    let method: String
    let path: @Sendable (SecurityWorld) -> String
    let token: Presented
    var headers: @Sendable (SecurityWorld) -> [String: String] = { _ in [:] }
    var body: @Sendable (SecurityWorld) throws -> Data? = { _ in nil }
    let status: Int
    /// The `error` code of the answer; `nil` for a success.
    let code: String?
    /// What must hold afterwards, beyond "a refused request changed nothing in the database".
    var after: (@Sendable (SecurityWorld) async throws -> Void)?

    var testDescription: String { "\(name): \(method) with \(token) → \(status) \(code ?? "")" }
}

/// What every security case starts from, built through the API of a live controller: agent A (service api) and
/// agent B (service worker), each service with a published release and its artifact, and tokens in every state —
/// used once before (so cached) where a later revocation must still be seen.
struct SecurityWorld: Sendable {
    enum Key: String, Sendable, CustomStringConvertible {
        case `operator`, viewer, enroll, apiEnroll, expiredEnroll, usedUpEnroll, revokedOperator, expiredViewer
        case agentA, agentB, removedAgent

        var description: String { rawValue }
    }

    let fixture: ControllerFixture
    let base: String
    let http: LiveHTTP
    let tokens: [Key: String]
    let agentA: (id: String, token: String)
    let agentB: (id: String, token: String)
    let apiArtifact: ArtifactReference
    let workerArtifact: ArtifactReference
    /// The id of the viewer token (a target for `DELETE /v1/tokens/{id}`).
    let viewerTokenID: String

    subscript(_ key: Key) -> String { tokens[key] ?? "" }

    /// `http://127.0.0.1:PORT`, the controller's own origin.
    var origin: String { base }

    static func make(_ fixture: ControllerFixture, base: String) async throws -> SecurityWorld {
        let http = LiveHTTP()
        let store = fixture.store
        func expectStatus(_ response: LiveHTTP.Response, _ status: Int, _ what: String) throws {
            guard response.status == status else {
                throw FixtureError("\(what): \(response.status) \(String(decoding: response.body, as: UTF8.self))")
            }
        }
        func enroll(_ name: String, _ services: [String], token: String) async throws -> (id: String, token: String) {
            let body = EnrollRequest(name: name, hostname: "\(name).internal", services: services).json.encoded()
            let response = try await http.send("POST", base + "/v1/agents", token: token, body: body)
            try expectStatus(response, 201, "enrolling \(name)")
            let enrolled = try EnrollResponse(json: JSONValue.parse(response.body))
            return (enrolled.agentID, enrolled.token)
        }
        func upload(_ text: String) async throws -> ArtifactReference {
            let bytes = Array(text.utf8)
            let response = try await http.send("POST", base + "/v1/artifacts", token: fixture.operatorToken, body: Data(bytes))
            try expectStatus(response, 201, "uploading \(text)")
            let digest = SHA256.hash(bytes)
            return ArtifactReference(url: ArtifactReference.controllerPath(for: digest), sha256: digest, size: Int64(bytes.count))
        }
        func publish(_ service: String, _ artifact: ArtifactReference) async throws {
            let body = try fixture.envelope(ControllerFixture.release(service: service, serial: 1, artifact: artifact))
            let response = try await http.send("POST", base + "/v1/releases", token: fixture.operatorToken, body: Data(body.readableBytesView))
            try expectStatus(response, 201, "publishing \(service)")
        }
        func create(_ role: TokenRole, scope: ServiceScope? = nil, expiresAt: Date? = nil, maxUses: Int? = nil) async throws -> (String, TokenRecord)
        {
            let token = Token.generate()
            let record = try await store.createToken(
                hash: Token.digest(token),
                name: "security-\(role.rawValue)",
                role: role,
                scope: scope,
                expiresAt: expiresAt,
                maxUses: maxUses,
                at: Date()
            )
            return (token, record)
        }

        let agentA = try await enroll("agent-a", ["api"], token: fixture.enrollToken)
        let agentB = try await enroll("agent-b", ["worker"], token: fixture.enrollToken)
        let apiArtifact = try await upload("api artifact")
        let workerArtifact = try await upload("worker artifact")
        try await publish("api", apiArtifact)
        try await publish("worker", workerArtifact)

        var tokens: [Key: String] = [
            .operator: fixture.operatorToken, .viewer: fixture.viewerToken, .enroll: fixture.enrollToken, .agentA: agentA.token,
            .agentB: agentB.token,
        ]
        tokens[.apiEnroll] = try await create(.enroll, scope: .services(["api"])).0
        tokens[.expiredEnroll] = try await create(.enroll, scope: .anyService, expiresAt: Date(timeIntervalSinceNow: -60)).0
        tokens[.expiredViewer] = try await create(.viewer, expiresAt: Date(timeIntervalSinceNow: -60)).0
        let usedUp = try await create(.enroll, scope: .anyService, maxUses: 1).0
        _ = try await enroll("used-once", ["api"], token: usedUp)
        tokens[.usedUpEnroll] = usedUp

        // Used first (so the server caches it), then revoked through the API.
        let (revoked, revokedRecord) = try await create(.operator)
        try expectStatus(try await http.send("GET", base + "/v1/fleet", token: revoked), 200, "the operator token before revocation")
        try expectStatus(
            try await http.send("DELETE", base + "/v1/tokens/\(revokedRecord.id)", token: fixture.operatorToken),
            200,
            "revoking a token"
        )
        tokens[.revokedOperator] = revoked

        // Polled first (cached), then removed.
        let gone = try await enroll("gone", ["api"], token: fixture.enrollToken)
        try expectStatus(try await http.send("GET", base + "/v1/agents/\(gone.id)/desired-state", token: gone.token), 200, "the agent before removal")
        try expectStatus(try await http.send("DELETE", base + "/v1/agents/gone", token: fixture.operatorToken), 200, "removing an agent")
        tokens[.removedAgent] = gone.token

        for agent in [agentA, agentB] {
            try expectStatus(try await http.send("GET", base + "/v1/agents/\(agent.id)/desired-state", token: agent.token), 200, "polling")
        }
        guard let viewer = try await store.tokens().first(where: { $0.name == "dashboard" }) else { throw FixtureError("no viewer token") }
        return SecurityWorld(
            fixture: fixture,
            base: base,
            http: http,
            tokens: tokens,
            agentA: agentA,
            agentB: agentB,
            apiArtifact: apiArtifact,
            workerArtifact: workerArtifact,
            viewerTokenID: viewer.id
        )
    }

    func send(
        _ method: String,
        _ path: String,
        _ presented: Presented,
        headers: [String: String] = [:],
        body: Data? = nil
    ) async throws
        -> LiveHTTP.Response
    {
        var fields = headers
        switch presented {
        case .nothing: break
        case .bearer(let key): fields["Authorization"] = "Bearer \(self[key])"
        case .basic(let key): fields["Authorization"] = "Basic " + Data("someone:\(self[key])".utf8).base64EncodedString()
        }
        return try await http.send(method, base + path, headers: fields, body: body)
    }

    /// Whether `token` still works for agent `id` (its desired state answers 200).
    func agentTokenWorks(_ id: String, _ token: String) async throws -> Bool {
        try await http.send("GET", base + "/v1/agents/\(id)/desired-state", token: token).status == 200
    }

    static func enrollment(_ name: String, _ services: [String], replace: Bool = false) -> @Sendable (SecurityWorld) throws -> Data? {
        { _ in EnrollRequest(name: name, hostname: "\(name).attacker", services: services, replace: replace).json.encoded() }
    }

    /// An enrolment offering the digest `digest(world)` of a token of the sender's choosing (`EnrollRequest.tokenSHA256`).
    static func enrollment(
        _ name: String,
        _ services: [String],
        digest: @escaping @Sendable (SecurityWorld) -> SHA256Digest
    ) -> @Sendable (SecurityWorld) throws -> Data? {
        { world in EnrollRequest(name: name, hostname: "\(name).attacker", services: services, tokenSHA256: digest(world)).json.encoded() }
    }

    /// Agent A is untouched: its token works, its services and hostname are what it enrolled with.
    static func agentAIsIntact(_ world: SecurityWorld) async throws {
        #expect(try await world.agentTokenWorks(world.agentA.id, world.agentA.token), "agent A's own token must keep working")
        let agent = try #require(try await world.fixture.store.agent(id: world.agentA.id))
        #expect(agent.services == ["api"])
        #expect(agent.hostname == "agent-a.internal")
    }

    /// A valid signed release of `api`, serial 2.
    static func releaseTwo(_ world: SecurityWorld) throws -> Data? {
        Data(try world.fixture.envelope(ControllerFixture.release(serial: 2, artifact: world.apiArtifact)).readableBytesView)
    }

    static let statusReport = Data(
        #"{"agentVersion":"0.1.0","hostname":"a","processManager":"builtin","services":[{"service":"api","phase":"running","message":"ok","health":"healthy","processes":[]}]}"#
            .utf8
    )

    static let crossSite: @Sendable (SecurityWorld) -> [String: String] = { _ in ["Origin": "https://attacker.example"] }
}

/// Every row of the database, as text, to show that a request changed nothing.
enum DatabaseSnapshot {
    /// All tables but `tokens.last_used_at` (recorded in the background on any authenticated use, by design).
    static func take(_ store: SQLiteControllerStore) async throws -> [String: [String]] {
        var tables: [String: [String]] = [:]
        let names = try await store.readDB.raw("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
            .all().map { try $0.decode(column: "name", as: String.self) }
        for table in names {
            let columns = try await store.readDB.raw("SELECT name FROM pragma_table_info(\(bind: table))").all()
                .map { try $0.decode(column: "name", as: String.self) }
                .filter { !(table == "tokens" && $0 == "last_used_at") }
            let expression = columns.map { "quote(\"\($0)\")" }.joined(separator: " || '|' || ")
            tables[table] = try await store.readDB.raw("SELECT \(unsafeRaw: expression) AS r FROM \"\(unsafeRaw: table)\" ORDER BY rowid").all()
                .map { try $0.decode(column: "r", as: String.self) }
        }
        return tables
    }
}

@Suite struct SecurityTests {
    typealias World = SecurityWorld

    static let cases: [SecurityCase] = [
        // Enrollment cannot take over an existing agent.
        SecurityCase(
            name: "enroll token re-enrolls an existing name",
            method: "POST",
            path: { _ in "/v1/agents" },
            token: .bearer(.enroll),
            body: World.enrollment("agent-a", ["api", "worker"]),
            status: 409,
            code: "agent_exists",
            after: World.agentAIsIntact
        ),
        SecurityCase(
            name: "enroll token re-enrolls an existing name with a token digest of its own",
            method: "POST",
            path: { _ in "/v1/agents" },
            token: .bearer(.enroll),
            body: World.enrollment("agent-a", ["api"], digest: { _ in SHA256.hash(Array("fyt_attacker".utf8)) }),
            status: 409,
            code: "agent_exists",
            after: World.agentAIsIntact
        ),
        // Even knowing the digest agent A's token is stored as (a leaked database backup), an enrollment token gets A's
        // id, which is no secret, and nothing else: no token, nothing written, A's token works on.
        SecurityCase(
            name: "enroll token repeats agent A's enrolment with A's stored token digest",
            method: "POST",
            path: { _ in "/v1/agents" },
            token: .bearer(.enroll),
            body: World.enrollment("agent-a", ["api"], digest: { world in SHA256.hash(Array(world.agentA.token.utf8)) }),
            status: 200,
            code: nil,
            after: { (world: SecurityWorld) async throws in
                try await World.agentAIsIntact(world)
                // As the world left them: the fixture's bootstrap token used 3 times, the used-up one once.
                #expect(try await world.fixture.store.agents().count == 3)
                let uses = try await world.fixture.store.tokens().filter { $0.uses > 0 }.map { "\($0.name):\($0.uses)" }.sorted()
                #expect(uses == ["bootstrap:3", "security-enroll:1"], "a repeat consumes no use")
            }
        ),
        SecurityCase(
            name: "enroll token offers agent A's stored token digest under a new name",
            method: "POST",
            path: { _ in "/v1/agents" },
            token: .bearer(.enroll),
            body: World.enrollment("new-1", ["api"], digest: { world in SHA256.hash(Array(world.agentA.token.utf8)) }),
            status: 409,
            code: "token_in_use",
            after: World.agentAIsIntact
        ),
        SecurityCase(
            name: "enrolment with a token digest that is not 64 lowercase hex characters",
            method: "POST",
            path: { _ in "/v1/agents" },
            token: .bearer(.enroll),
            body: { _ in Data(#"{"name":"new-1","hostname":"h","services":["api"],"tokenSHA256":"ABCDEF"}"#.utf8) },
            status: 422,
            code: "invalid_document"
        ),
        SecurityCase(
            name: "enroll token asks to replace an existing agent",
            method: "POST",
            path: { _ in "/v1/agents" },
            token: .bearer(.enroll),
            body: World.enrollment("agent-a", ["api"], replace: true),
            status: 403,
            code: "replace_needs_operator",
            after: World.agentAIsIntact
        ),
        SecurityCase(
            name: "scoped enroll token re-enrolls an existing name of its own service",
            method: "POST",
            path: { _ in "/v1/agents" },
            token: .bearer(.apiEnroll),
            body: World.enrollment("agent-a", ["api"]),
            status: 409,
            code: "agent_exists",
            after: World.agentAIsIntact
        ),
        SecurityCase(
            name: "operator replaces an agent: same id, the old token is dead at once",
            method: "POST",
            path: { _ in "/v1/agents" },
            token: .bearer(.operator),
            body: World.enrollment("agent-a", ["api"], replace: true),
            status: 201,
            code: nil,
            after: { (world: SecurityWorld) async throws in
                #expect(try await !world.agentTokenWorks(world.agentA.id, world.agentA.token), "the replaced token must be refused at once")
                let agents = try await world.fixture.store.agents().filter { $0.name == "agent-a" }
                #expect(agents.map(\.id) == [world.agentA.id])
            }
        ),
        SecurityCase(
            name: "operator enrolls an existing name without replace",
            method: "POST",
            path: { _ in "/v1/agents" },
            token: .bearer(.operator),
            body: World.enrollment("agent-a", ["api"]),
            status: 409,
            code: "agent_exists",
            after: World.agentAIsIntact
        ),
        // Scoped, expiring, counted enrollment tokens.
        SecurityCase(
            name: "enroll token scoped to api enrolls for worker",
            method: "POST",
            path: { _ in "/v1/agents" },
            token: .bearer(.apiEnroll),
            body: World.enrollment("new-1", ["api", "worker"]),
            status: 403,
            code: "out_of_scope"
        ),
        SecurityCase(
            name: "enroll token scoped to api enrolls a new api agent",
            method: "POST",
            path: { _ in "/v1/agents" },
            token: .bearer(.apiEnroll),
            body: World.enrollment("new-1", ["api"]),
            status: 201,
            code: nil,
            after: { (world: SecurityWorld) async throws in
                let token = try #require(try await world.fixture.store.tokens().first { $0.scope == .services(["api"]) })
                #expect(token.uses == 1)
            }
        ),
        SecurityCase(
            name: "expired enroll token",
            method: "POST",
            path: { _ in "/v1/agents" },
            token: .bearer(.expiredEnroll),
            body: World.enrollment("new-1", ["api"]),
            status: 401,
            code: "token_expired"
        ),
        SecurityCase(
            name: "used-up enroll token",
            method: "POST",
            path: { _ in "/v1/agents" },
            token: .bearer(.usedUpEnroll),
            body: World.enrollment("new-1", ["api"]),
            status: 403,
            code: "token_used_up"
        ),
        SecurityCase(
            name: "expired viewer token reads the fleet",
            method: "GET",
            path: { _ in "/v1/fleet" },
            token: .bearer(.expiredViewer),
            status: 401,
            code: "token_expired"
        ),
        // Agent tokens open only their own door.
        SecurityCase(
            name: "agent token fetches another service's artifact",
            method: "GET",
            path: { $0.workerArtifact.url },
            token: .bearer(.agentA),
            status: 403,
            code: "forbidden"
        ),
        SecurityCase(
            name: "agent token fetches its own service's artifact",
            method: "GET",
            path: { $0.apiArtifact.url },
            token: .bearer(.agentA),
            status: 200,
            code: nil
        ),
        SecurityCase(
            name: "agent token reads another agent's desired state",
            method: "GET",
            path: { "/v1/agents/\($0.agentB.id)/desired-state" },
            token: .bearer(.agentA),
            status: 403,
            code: "forbidden"
        ),
        SecurityCase(
            name: "agent token reports for another agent",
            method: "POST",
            path: { "/v1/agents/\($0.agentB.id)/status" },
            token: .bearer(.agentA),
            body: { _ in World.statusReport },
            status: 403,
            code: "forbidden"
        ),
        SecurityCase(
            name: "agent token reports a service it does not run",
            method: "POST",
            path: { "/v1/agents/\($0.agentB.id)/status" },
            token: .bearer(.agentB),
            body: { _ in World.statusReport },
            status: 422,
            code: "unknown_service"
        ),
        SecurityCase(
            name: "agent token lists tokens",
            method: "GET",
            path: { _ in "/v1/tokens" },
            token: .bearer(.agentA),
            status: 403,
            code: "forbidden"
        ),
        SecurityCase(
            name: "viewer lists tokens",
            method: "GET",
            path: { _ in "/v1/tokens" },
            token: .bearer(.viewer),
            status: 403,
            code: "forbidden"
        ),
        SecurityCase(
            name: "viewer removes an agent",
            method: "DELETE",
            path: { _ in "/v1/agents/agent-b" },
            token: .bearer(.viewer),
            status: 403,
            code: "forbidden"
        ),
        SecurityCase(
            name: "enroll token removes an agent",
            method: "DELETE",
            path: { _ in "/v1/agents/agent-b" },
            token: .bearer(.enroll),
            status: 403,
            code: "forbidden"
        ),
        // Revoked and removed tokens, refused although the server had them cached.
        SecurityCase(
            name: "revoked operator token",
            method: "GET",
            path: { _ in "/v1/fleet" },
            token: .bearer(.revokedOperator),
            status: 401,
            code: "token_revoked"
        ),
        SecurityCase(
            name: "revoked operator token publishes",
            method: "POST",
            path: { _ in "/v1/releases" },
            token: .bearer(.revokedOperator),
            body: World.releaseTwo,
            status: 401,
            code: "token_revoked"
        ),
        SecurityCase(
            name: "removed agent's token polls",
            method: "GET",
            path: { _ in "/v1/agents/agt_0000000000000000/desired-state" },
            token: .bearer(.removedAgent),
            status: 401,
            code: "unauthorized"
        ),
        SecurityCase(
            name: "removed agent's token fetches an artifact",
            method: "GET",
            path: { $0.apiArtifact.url },
            token: .bearer(.removedAgent),
            status: 401,
            code: "unauthorized"
        ),
        // HTTP Basic only on reads.
        SecurityCase(
            name: "Basic on a publish",
            method: "POST",
            path: { _ in "/v1/releases" },
            token: .basic(.operator),
            body: World.releaseTwo,
            status: 401,
            code: "bearer_required"
        ),
        SecurityCase(
            name: "Basic on an enrolment",
            method: "POST",
            path: { _ in "/v1/agents" },
            token: .basic(.enroll),
            body: World.enrollment("new-1", ["api"]),
            status: 401,
            code: "bearer_required"
        ),
        SecurityCase(
            name: "Basic on a rollout abort",
            method: "POST",
            path: { _ in "/v1/services/api/rollout/abort" },
            token: .basic(.operator),
            status: 401,
            code: "bearer_required"
        ),
        SecurityCase(
            name: "Basic on a token revocation",
            method: "DELETE",
            path: { "/v1/tokens/\($0.viewerTokenID)" },
            token: .basic(.operator),
            status: 401,
            code: "bearer_required"
        ),
        SecurityCase(
            name: "Basic on an agent's desired state",
            method: "GET",
            path: { "/v1/agents/\($0.agentA.id)/desired-state" },
            token: .basic(.agentA),
            status: 401,
            code: "bearer_required"
        ),
        SecurityCase(
            name: "Basic on the release listing (envelopes)",
            method: "GET",
            path: { _ in "/v1/services/api/releases" },
            token: .basic(.operator),
            status: 401,
            code: "bearer_required"
        ),
        SecurityCase(name: "Basic on the fleet JSON", method: "GET", path: { _ in "/v1/fleet" }, token: .basic(.viewer), status: 200, code: nil),
        SecurityCase(name: "Basic on the dashboard", method: "GET", path: { _ in "/" }, token: .basic(.viewer), status: 200, code: nil),
        // The trust root chain and approvals (issue 16): readable by agents and viewers, changed by operators only.
        SecurityCase(
            name: "agent reads the trust root chain",
            method: "GET",
            path: { _ in "/v1/roots" },
            token: .bearer(.agentA),
            status: 200,
            code: nil
        ),
        SecurityCase(
            name: "Basic on the trust root chain",
            method: "GET",
            path: { _ in "/v1/roots" },
            token: .basic(.viewer),
            status: 200,
            code: nil
        ),
        SecurityCase(
            name: "enroll token reads the trust root chain",
            method: "GET",
            path: { _ in "/v1/roots" },
            token: .bearer(.enroll),
            status: 403,
            code: "forbidden"
        ),
        SecurityCase(
            name: "viewer publishes a trust root",
            method: "POST",
            path: { _ in "/v1/roots" },
            token: .bearer(.viewer),
            body: { _ in Data("{}".utf8) },
            status: 403,
            code: "forbidden"
        ),
        SecurityCase(
            name: "agent publishes a trust root",
            method: "POST",
            path: { _ in "/v1/roots" },
            token: .bearer(.agentA),
            body: { _ in Data("{}".utf8) },
            status: 403,
            code: "forbidden"
        ),
        SecurityCase(
            name: "Basic on a trust root publish",
            method: "POST",
            path: { _ in "/v1/roots" },
            token: .basic(.operator),
            body: { _ in Data("{}".utf8) },
            status: 401,
            code: "bearer_required"
        ),
        SecurityCase(
            name: "cross-site POST /v1/roots",
            method: "POST",
            path: { _ in "/v1/roots" },
            token: .bearer(.operator),
            headers: World.crossSite,
            body: { _ in Data("{}".utf8) },
            status: 403,
            code: "cross_origin"
        ),
        SecurityCase(
            name: "viewer approves a release",
            method: "POST",
            path: { _ in "/v1/services/api/releases/1/signatures" },
            token: .bearer(.viewer),
            body: { _ in Data(#"{"signatures":[]}"#.utf8) },
            status: 403,
            code: "forbidden"
        ),
        SecurityCase(
            name: "Basic on an approval",
            method: "POST",
            path: { _ in "/v1/services/api/releases/1/signatures" },
            token: .basic(.operator),
            body: { _ in Data(#"{"signatures":[]}"#.utf8) },
            status: 401,
            code: "bearer_required"
        ),
        SecurityCase(
            name: "cross-site POST /v1/services/:service/releases/:serial/signatures",
            method: "POST",
            path: { _ in "/v1/services/api/releases/1/signatures" },
            token: .bearer(.operator),
            headers: World.crossSite,
            body: { _ in Data(#"{"signatures":[]}"#.utf8) },
            status: 403,
            code: "cross_origin"
        ),
        // Cross-site requests on every state-changing route, each with a valid Bearer token of the right role.
        SecurityCase(
            name: "cross-site POST /v1/artifacts",
            method: "POST",
            path: { _ in "/v1/artifacts" },
            token: .bearer(.operator),
            headers: World.crossSite,
            body: { _ in Data("csrf".utf8) },
            status: 403,
            code: "cross_origin"
        ),
        SecurityCase(
            name: "cross-site POST /v1/releases",
            method: "POST",
            path: { _ in "/v1/releases" },
            token: .bearer(.operator),
            headers: World.crossSite,
            body: World.releaseTwo,
            status: 403,
            code: "cross_origin"
        ),
        SecurityCase(
            name: "cross-site POST /v1/agents",
            method: "POST",
            path: { _ in "/v1/agents" },
            token: .bearer(.enroll),
            headers: World.crossSite,
            body: World.enrollment("new-1", ["api"]),
            status: 403,
            code: "cross_origin"
        ),
        SecurityCase(
            name: "cross-site POST /v1/agents/:id/status",
            method: "POST",
            path: { "/v1/agents/\($0.agentA.id)/status" },
            token: .bearer(.agentA),
            headers: World.crossSite,
            body: { _ in World.statusReport },
            status: 403,
            code: "cross_origin"
        ),
        SecurityCase(
            name: "cross-site POST /v1/services/:service/rollout/pause",
            method: "POST",
            path: { _ in "/v1/services/api/rollout/pause" },
            token: .bearer(.operator),
            headers: World.crossSite,
            status: 403,
            code: "cross_origin"
        ),
        SecurityCase(
            name: "cross-site POST /v1/services/:service/rollout/resume",
            method: "POST",
            path: { _ in "/v1/services/api/rollout/resume" },
            token: .bearer(.operator),
            headers: World.crossSite,
            status: 403,
            code: "cross_origin"
        ),
        SecurityCase(
            name: "cross-site POST /v1/services/:service/rollout/abort",
            method: "POST",
            path: { _ in "/v1/services/api/rollout/abort" },
            token: .bearer(.operator),
            headers: World.crossSite,
            status: 403,
            code: "cross_origin"
        ),
        SecurityCase(
            name: "cross-site DELETE /v1/tokens/:id",
            method: "DELETE",
            path: { "/v1/tokens/\($0.viewerTokenID)" },
            token: .bearer(.operator),
            headers: World.crossSite,
            status: 403,
            code: "cross_origin"
        ),
        SecurityCase(
            name: "cross-site DELETE /v1/agents/:name",
            method: "DELETE",
            path: { _ in "/v1/agents/agent-b" },
            token: .bearer(.operator),
            headers: World.crossSite,
            status: 403,
            code: "cross_origin"
        ),
        SecurityCase(
            name: "Origin null on a publish",
            method: "POST",
            path: { _ in "/v1/releases" },
            token: .bearer(.operator),
            headers: { _ in ["Origin": "null"] },
            body: World.releaseTwo,
            status: 403,
            code: "cross_origin"
        ),
        SecurityCase(
            name: "same host on another port",
            method: "POST",
            path: { _ in "/v1/releases" },
            token: .bearer(.operator),
            headers: { _ in ["Origin": "http://127.0.0.1:1"] },
            body: World.releaseTwo,
            status: 403,
            code: "cross_origin"
        ),
        SecurityCase(
            name: "Sec-Fetch-Site cross-site without Origin",
            method: "DELETE",
            path: { _ in "/v1/agents/agent-b" },
            token: .bearer(.operator),
            headers: { _ in ["Sec-Fetch-Site": "cross-site"] },
            status: 403,
            code: "cross_origin"
        ),
        SecurityCase(
            name: "the controller's own origin passes the check",
            method: "DELETE",
            path: { _ in "/v1/agents/nobody" },
            token: .bearer(.operator),
            headers: { world in ["Origin": world.origin, "Sec-Fetch-Site": "same-origin"] },
            status: 404,
            code: "unknown_agent"
        ),
        // Token and agent management routes.
        SecurityCase(
            name: "revoke a malformed token id",
            method: "DELETE",
            path: { _ in "/v1/tokens/fyt_secret" },
            token: .bearer(.operator),
            status: 400,
            code: "invalid_token_id"
        ),
        SecurityCase(
            name: "revoke an unknown token id",
            method: "DELETE",
            path: { _ in "/v1/tokens/tok_0000000000000000" },
            token: .bearer(.operator),
            status: 404,
            code: "unknown_token"
        ),
        SecurityCase(
            name: "operator revokes the viewer token: refused at once",
            method: "DELETE",
            path: { "/v1/tokens/\($0.viewerTokenID)" },
            token: .bearer(.operator),
            status: 200,
            code: nil,
            after: { (world: SecurityWorld) async throws in
                let fleet = try await world.send("GET", "/v1/fleet", .bearer(.viewer))
                #expect(fleet.status == 401)
                #expect(ControllerFixture.errorCode(fleet.body) == "token_revoked")
            }
        ),
        SecurityCase(
            name: "operator removes agent B: its token is refused at once, its events stay",
            method: "DELETE",
            path: { _ in "/v1/agents/agent-b" },
            token: .bearer(.operator),
            status: 200,
            code: nil,
            after: { (world: SecurityWorld) async throws in
                #expect(try await !world.agentTokenWorks(world.agentB.id, world.agentB.token))
                #expect(try await world.fixture.store.agent(id: world.agentB.id) == nil)
                #expect(try await !world.fixture.store.events(service: nil, limit: 100).isEmpty)
            }
        ),
        SecurityCase(
            name: "operator lists tokens: no secret, no hash",
            method: "GET",
            path: { _ in "/v1/tokens" },
            token: .bearer(.operator),
            status: 200,
            code: nil
        ),
    ]

    @Test(arguments: cases)
    func securityCaseGetsItsAnswer(_ row: SecurityCase) async throws {
        try await ControllerFixture.with { fixture in
            try await fixture.withLiveServer { base in
                let world = try await SecurityWorld.make(fixture, base: base)
                let before = try await DatabaseSnapshot.take(fixture.store)
                let response = try await world.send(row.method, row.path(world), row.token, headers: row.headers(world), body: try row.body(world))
                let text = String(decoding: response.body, as: UTF8.self)
                #expect(response.status == row.status, "\(text)")
                if let code = row.code {
                    #expect(ControllerFixture.errorCode(response.body) == code, "\(text)")
                    // A refused request changed nothing.
                    #expect(try await DatabaseSnapshot.take(fixture.store) == before)
                }
                // No answer ever carries a token or a token's hash.
                for secret in world.tokens.values {
                    #expect(!text.contains(secret) && !text.contains(Token.digest(secret)))
                }
                try await row.after?(world)
            }
        }
    }

    /// Nothing changes state on GET or HEAD: every read route, with every credential that may use it (and some that
    /// may not), leaves every row of the database as it was.
    @Test func readRoutesChangeNothing() async throws {
        try await ControllerFixture.with { fixture in
            try await fixture.withLiveServer { base in
                let world = try await SecurityWorld.make(fixture, base: base)
                let before = try await DatabaseSnapshot.take(fixture.store)
                let paths = [
                    "/", "/healthz", "/metrics", "/v1/fleet", "/v1/services", "/v1/services/api/releases", "/v1/rollouts",
                    "/v1/rollouts?service=api", "/v1/events", "/v1/tokens", "/v1/agents/\(world.agentA.id)/desired-state",
                    "/v1/agents/\(world.agentA.id)/desired-state?wait=0", world.apiArtifact.url, world.workerArtifact.url,
                ]
                let credentials: [Presented] = [.bearer(.operator), .bearer(.viewer), .bearer(.agentA), .basic(.viewer), .bearer(.enroll), .nothing]
                var answered = 0
                for path in paths {
                    for method in ["GET", "HEAD"] {
                        // (URLSession on Linux never returns from a Basic challenge without credentials: the dashboard's
                        // 401 is checked in-process by RouteTests.)
                        for credential in credentials where !(path == "/" && credential.isNothing) {
                            let response = try await world.send(method, path, credential)
                            if response.status == 200 { answered += 1 }
                        }
                    }
                }
                #expect(answered >= 40, "most reads were answered, so they ran their handlers")
                #expect(try await DatabaseSnapshot.take(fixture.store) == before)
            }
        }
    }

    /// Two (here eight) enrolments racing for the last use of a token: exactly one wins.
    @Test func racingEnrolmentsForTheLastUseSeeOneWinner() async throws {
        try await ControllerFixture.with { fixture in
            try await fixture.withLiveServer { base in
                let token = Token.generate()
                let record = try await fixture.store.createToken(
                    hash: Token.digest(token),
                    name: "once",
                    role: .enroll,
                    scope: .anyService,
                    maxUses: 1,
                    at: Date()
                )
                let http = LiveHTTP(maximumConnections: 16)
                let statuses = try await withThrowingTaskGroup(of: (Int, String?).self) { group in
                    for index in 0..<8 {
                        group.addTask {
                            let body = EnrollRequest(name: "racer-\(index)", hostname: "h", services: ["api"]).json.encoded()
                            let response = try await http.send("POST", base + "/v1/agents", token: token, body: body)
                            return (response.status, ControllerFixture.errorCode(response.body))
                        }
                    }
                    var all: [(Int, String?)] = []
                    for try await status in group { all.append(status) }
                    return all
                }
                #expect(statuses.filter { $0.0 == 201 }.count == 1)
                #expect(statuses.filter { $0.0 == 403 && $0.1 == "token_used_up" }.count == 7)
                #expect(try await fixture.store.agents().filter { $0.name.hasPrefix("racer-") }.count == 1)
                #expect(try await fixture.store.tokens().first { $0.id == record.id }?.uses == 1)
            }
        }
    }

    /// Every state-changing route of the API.
    static let stateChangingRoutes = [
        "POST /v1/artifacts", "POST /v1/releases", "POST /v1/agents", "POST /v1/agents/:id/status",
        "POST /v1/services/:service/rollout/pause", "POST /v1/services/:service/rollout/resume",
        "POST /v1/services/:service/rollout/abort", "DELETE /v1/tokens/:id", "DELETE /v1/agents/:name",
    ]

    /// The table has a cross-site row for every state-changing route, and each of those routes exists and is
    /// authenticated (a request without a token gets 401, not 404).
    @Test func tableCoversEveryStateChangingRoute() async throws {
        let names = Set(Self.cases.map(\.name))
        #expect(names.count == Self.cases.count, "row names are unique")
        for route in Self.stateChangingRoutes {
            #expect(names.contains("cross-site \(route)"), "no cross-site row for \(route)")
        }
        try await ControllerFixture.with { fixture in
            try await fixture.withRouter { client in
                for route in Self.stateChangingRoutes {
                    let parts = route.split(separator: " ")
                    let path = parts[1].replacingOccurrences(of: ":service", with: "api").replacingOccurrences(
                        of: ":id",
                        with: "tok_0000000000000000"
                    )
                    .replacingOccurrences(of: ":name", with: "x")
                    let response = try await client.execute(uri: path, method: HTTPRequest.Method(String(parts[0])) ?? .post)
                    #expect(response.status == .unauthorized, "\(route)")
                }
            }
        }
    }
}

extension ControllerFixture {
    /// The `error` code of a JSON error body given as bytes.
    static func errorCode(_ body: Data) -> String? {
        guard case .object(let fields)? = try? JSONValue.parse(body), case .string(let code)? = fields["error"] else { return nil }
        return code
    }
}
