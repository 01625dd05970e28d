import Foundation
import Logging
import NIOCore
import SQLKit
import Shared
import Synchronization
import TestSupport
import Testing

@testable import Controller

/// Two controllers on one PostgreSQL database, each with its own data directory, both live on loopback: what one
/// commits, the other serves at once.
@Suite(.enabled(if: PostgresTestServer.unavailableReason == nil, "PostgreSQL binaries are missing (see StoreBackendKind.available)"))
struct HighAvailabilityTests {
    /// Runs `body` with controllers A and B live on one fresh database (their relays listening), stopped afterwards.
    static func withTwoControllers(
        configure: @escaping @Sendable (inout ControllerConfiguration) -> Void = { _ in },
        _ body: @Sendable (_ a: ControllerFixture, _ aURL: String, _ b: ControllerFixture, _ bURL: String) async throws -> Void
    ) async throws {
        try await TestStore.withLocation(.postgres) { location in
            try await withTwoControllers(on: try location.selection, configure: configure, body)
        }
    }

    /// Runs `body` with controllers A and B live on the database `selection` (their relays listening).
    static func withTwoControllers(
        on selection: DatabaseSelection,
        configure: @escaping @Sendable (inout ControllerConfiguration) -> Void = { _ in },
        _ body: @Sendable (_ a: ControllerFixture, _ aURL: String, _ b: ControllerFixture, _ bURL: String) async throws -> Void
    ) async throws {
        let adjust: (inout ControllerConfiguration) -> Void = { configuration in
            configuration.database = selection
            configuration.rolloutTickInterval = .milliseconds(200)
            configure(&configuration)
        }
        try await ControllerFixture.with(adjust: adjust) { a in
            try await ControllerFixture.with(adjust: adjust) { b in
                try await a.withLiveServer { aURL in
                    try await b.withLiveServer { bURL in
                        try await waitUntilListening(a, b)
                        try await body(a, aURL, b, bURL)
                    }
                }
            }
        }
    }

    /// Waits (up to 30 s) until both controllers' change relays listen.
    static func waitUntilListening(_ fixtures: ControllerFixture...) async throws {
        for fixture in fixtures {
            let relay = try #require(fixture.controller.relay)
            let deadline = ContinuousClock.now + .seconds(30)
            while !relay.listening.isListening, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
            try #require(relay.listening.isListening, "the change relay listens")
        }
    }

    /// Agent `name` of `api`, enrolled through `a`.
    static func enroll(_ name: String, through a: ControllerFixture, _ aURL: String, _ http: LiveHTTP) async throws -> EnrollResponse {
        let enrolled = try await http.send(
            "POST",
            aURL + "/v1/agents",
            token: a.enrollToken,
            body: Data(EnrollRequest(name: name, hostname: name, services: ["api"], replace: false).json.encoded())
        )
        try #require(enrolled.status == 201)
        return try EnrollResponse(json: JSONValue.parse(Array(enrolled.body)))
    }

    /// `bytes` uploaded through `a`, as a release names them.
    static func upload(_ bytes: [UInt8], through a: ControllerFixture, _ aURL: String, _ http: LiveHTTP) async throws -> ArtifactReference {
        try #require(try await http.send("POST", aURL + "/v1/artifacts", token: a.operatorToken, body: Data(bytes)).status == 201)
        let digest = SHA256.hash(bytes)
        return ArtifactReference(url: ArtifactReference.controllerPath(for: digest), sha256: digest, size: Int64(bytes.count))
    }

    /// Serial `serial` of `api` naming `artifact`, published through `a` (201 required).
    static func publish(
        _ serial: Int64,
        artifact: ArtifactReference,
        through a: ControllerFixture,
        _ aURL: String,
        _ http: LiveHTTP
    ) async throws {
        let release = ControllerFixture.release(serial: serial, artifact: artifact)
        let response = try await http.send(
            "POST",
            aURL + "/v1/releases",
            token: a.operatorToken,
            body: Data(Envelope.sign(payload: release.payload(), payloadType: Release.payloadType, with: [a.signingKey]).encoded())
        )
        try #require(response.status == 201, "\(String(decoding: response.body, as: UTF8.self))")
    }

    /// An agent parked on B wakes when a release is published through A, every time, within a second of the publish
    /// (A's `201`: the release is committed and announced), as `FleetBench` counts "wake after publish returned". The
    /// time A takes to answer the publish is the publish latency, a figure of its own; it is printed alongside.
    @Test func anAgentParkedOnBWakesWhenAPublishes() async throws {
        try await Self.withTwoControllers { a, aURL, b, bURL in
            let http = LiveHTTP()
            let agent = try await Self.enroll("web-1", through: a, aURL, http)
            let artifact = try await Self.upload(Array("artifact".utf8), through: a, aURL, http)

            var latencies: [Duration] = []
            var publishTimes: [Duration] = []
            for serial in Int64(1)...10 {
                let current = try await http.send("GET", bURL + "/v1/agents/\(agent.agentID)/desired-state", token: agent.token)
                try #require(current.status == 200)
                let etag = try #require(current.header("ETag"))
                async let parked = http.send(
                    "GET",
                    bURL + "/v1/agents/\(agent.agentID)/desired-state?wait=30",
                    token: agent.token,
                    headers: ["If-None-Match": etag]
                )
                // Parked before the publish: B's hub holds the request.
                let deadline = ContinuousClock.now + .seconds(10)
                while b.controller.core.desiredStates.hub.waiterCount == 0, ContinuousClock.now < deadline {
                    try await Task.sleep(for: .milliseconds(5))
                }
                let published = ContinuousClock.now
                try await Self.publish(serial, artifact: artifact, through: a, aURL, http)
                let committed = ContinuousClock.now
                publishTimes.append(committed - published)
                let answer = try await parked
                // An answer that came before A's did counts as 0 (it is only seen once A has answered).
                latencies.append(ContinuousClock.now - committed)
                #expect(answer.status == 200, "serial \(serial): B answers the parked poll with the new state")
                let state = try JSONValue.parse(Array(answer.body))
                guard case .object(let fields) = state, case .array(let releases)? = fields["releases"] else {
                    Issue.record("not a desired state")
                    return
                }
                #expect(releases.count == 1)
            }
            let worst = latencies.max() ?? .zero
            #expect(worst < .seconds(1), "wake-ups across controllers after each publish: \(latencies); publishes took \(publishTimes)")
        }
    }

    /// Two hosts sharing one agent identity behind a load balancer that keeps each connection on one controller: A
    /// receives only one host's reports and B only the other's, and both notice the conflict from the hostname the other
    /// stored in between (the agents row, `StatusWriteResult.hostnameBefore`). A host renamed while its connection
    /// moves between the controllers is not a conflict on either.
    @Test func twoHostsAsOneAgentAreNoticedByBothControllers() async throws {
        try await Self.withTwoControllers { a, aURL, b, bURL in
            let http = LiveHTTP()
            func enroll(_ name: String, hostname: String) async throws -> EnrollResponse {
                let enrolled = try await http.send(
                    "POST",
                    aURL + "/v1/agents",
                    token: a.enrollToken,
                    body: Data(EnrollRequest(name: name, hostname: hostname, services: ["api"], replace: false).json.encoded())
                )
                try #require(enrolled.status == 201)
                return try EnrollResponse(json: JSONValue.parse(Array(enrolled.body)))
            }
            func report(_ agent: EnrollResponse, to url: String, hostname: String) async throws {
                let body = #"{"agentVersion":"1.0","hostname":"\#(hostname)","processManager":"builtin","services":[]}"#
                let response = try await http.send(
                    "POST",
                    url + "/v1/agents/\(agent.agentID)/status",
                    token: agent.token,
                    headers: ["Content-Type": "application/json"],
                    body: Data(body.utf8)
                )
                #expect(response.status == 204, "\(String(decoding: response.body, as: UTF8.self))")
            }
            let twin = try await enroll("twin", hostname: "ip-10-0-1-2")
            let renamed = try await enroll("renamed", hostname: "old-name")
            for _ in 0..<3 {
                try await report(twin, to: aURL, hostname: "ip-10-0-1-2")
                try await report(twin, to: bURL, hostname: "ip-10-0-1-3")
            }
            for (url, hostname) in [(aURL, "old-name"), (bURL, "new-name"), (aURL, "new-name"), (bURL, "new-name"), (aURL, "new-name")] {
                try await report(renamed, to: url, hostname: hostname)
            }
            for (label, fixture, url) in [("A", a, aURL), ("B", b, bURL)] {
                let twinDocument = try await http.send("GET", url + "/v1/agents/twin", token: fixture.viewerToken)
                try #require(twinDocument.status == 200)
                let conflict = try JSONValue.parse(Array(twinDocument.body)).object?["identityConflict"]?.object
                #expect(conflict?["hostnames"] == .array([.string("ip-10-0-1-2"), .string("ip-10-0-1-3")]), "\(label) shows the conflict")
                let renamedDocument = try await http.send("GET", url + "/v1/agents/renamed", token: fixture.viewerToken)
                try #require(renamedDocument.status == 200)
                #expect(try JSONValue.parse(Array(renamedDocument.body)).object?["identityConflict"] == .null, "\(label): a rename is no conflict")
                #expect(fixture.counter("ferry_agent_identity_conflicts_total") == 1, "\(label) said it once")
            }
            // Enrolled afresh through A (a new token), the agent's conflict is over on both controllers: B's watch,
            // which A's replace does not reach, no longer shows it.
            let replaced = try await http.send(
                "POST",
                aURL + "/v1/agents",
                token: a.operatorToken,
                body: Data(EnrollRequest(name: "twin", hostname: "ip-10-0-1-2", services: ["api"], replace: true).json.encoded())
            )
            try #require(replaced.status == 201)
            for (label, fixture, url) in [("A", a, aURL), ("B", b, bURL)] {
                let twinDocument = try await http.send("GET", url + "/v1/agents/twin", token: fixture.viewerToken)
                #expect(try JSONValue.parse(Array(twinDocument.body)).object?["identityConflict"] == .null, "\(label) after the replace")
                let fleet = try JSONValue.parse(Array(try await http.send("GET", url + "/v1/fleet", token: fixture.viewerToken).body))
                let entry = FleetDocument.agents(fleet).first { FleetDocument.text($0["name"]) == "twin" }
                #expect(entry?["identityConflict"] == .bool(false), "\(label) after the replace")
            }
        }
    }

    /// One instance's signed identity document sent to both controllers at once, under eight names: one enrolment
    /// wins, every other gets `409 instance_enrolled` (enrolments run one at a time across controllers, and the row
    /// is unique), none a server error.
    @Test func racingEnrolmentsOfOneInstanceSeeOneWinner() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-ha-attestation") { directory in
            let signer = try await InstanceIdentitySigner.make(in: directory)
            let document = InstanceIdentitySigner.document(instanceID: InstanceIdentityTests.instanceA)
            let proof = InstanceIdentityProof(document: document, pkcs7: try await signer.sign(document))
            let verifier = try InstanceIdentityVerifier(
                certificates: Array(try Data(contentsOf: URL(fileURLWithPath: signer.certificate))),
                accounts: [InstanceIdentityTests.account]
            )
            try await Self.withTwoControllers(configure: { $0.instanceIdentity = verifier }) { a, aURL, b, bURL in
                let http = LiveHTTP(maximumConnections: 16)
                let outcomes = try await withThrowingTaskGroup(of: (Int, String).self) { group in
                    for index in 0..<8 {
                        let (url, token) = index.isMultiple(of: 2) ? (aURL, a.enrollToken) : (bURL, b.enrollToken)
                        group.addTask {
                            let request = EnrollRequest(name: "racer-\(index)", hostname: "h", services: ["api"], instanceIdentity: proof)
                            let response = try await http.send("POST", url + "/v1/agents", token: token, body: Data(request.json.encoded()))
                            return (response.status, String(decoding: response.body, as: UTF8.self))
                        }
                    }
                    return try await group.reduce(into: []) { $0.append($1) }
                }
                #expect(outcomes.filter { $0.0 == 201 }.count == 1, "\(outcomes)")
                #expect(outcomes.filter { $0.0 == 409 && $0.1.contains("instance_enrolled") }.count == 7, "\(outcomes)")
                let fleet = try JSONValue.parse(Array(try await http.send("GET", bURL + "/v1/fleet", token: b.viewerToken).body))
                #expect(FleetDocument.agents(fleet).count == 1)
            }
        }
    }

    /// An artifact uploaded to A is served by B (fetched once from the database into B's cache), Range included; a
    /// token revoked through A stops working on B at once.
    @Test func bServesAsArtifactsAndHonoursAsRevocations() async throws {
        try await Self.withTwoControllers { a, aURL, b, bURL in
            let http = LiveHTTP()
            // 3.5 chunks of the default 1 MiB.
            let bytes = (0..<(3 << 20) + (1 << 19)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
            let upload = try await http.send("POST", aURL + "/v1/artifacts", token: a.operatorToken, body: Data(bytes))
            try #require(upload.status == 201)
            let digest = SHA256.hash(bytes)
            let cached = b.directory.appendingPathComponent("artifacts/\(digest.hex)").path
            #expect(!FileManager.default.fileExists(atPath: cached))

            let head = try await http.send("HEAD", bURL + "/v1/artifacts/\(digest.hex)", token: b.operatorToken)
            #expect(head.status == 200 && head.header("Content-Length") == "\(bytes.count)")
            let whole = try await http.send("GET", bURL + "/v1/artifacts/\(digest.hex)", token: b.operatorToken)
            #expect(whole.status == 200 && Array(whole.body) == bytes)
            #expect(FileManager.default.fileExists(atPath: cached), "B keeps a copy")
            let start = (1 << 20) - 10
            let part = try await http.send(
                "GET",
                bURL + "/v1/artifacts/\(digest.hex)",
                token: b.operatorToken,
                headers: ["Range": "bytes=\(start)-\(start + 99)"]
            )
            #expect(part.status == 206 && Array(part.body) == Array(bytes[start..<(start + 100)]))
            let chunks = try await b.store.readDB.raw("SELECT COUNT(*) AS n FROM artifact_chunks WHERE sha256 = \(bind: digest.hex)").first()?
                .decode(column: "n", as: Int.self)
            #expect(chunks == 4)

            // The viewer token works on B (and is cached there), then A revokes it.
            #expect(try await http.send("GET", bURL + "/v1/fleet", token: b.viewerToken).status == 200)
            // Both fixtures made a viewer token named "dashboard": B's is the newer.
            let viewerID = try #require(try await b.store.tokens().filter { $0.role == .viewer }.last?.id)
            let revoked = try await http.send("DELETE", aURL + "/v1/tokens/\(viewerID)", token: a.operatorToken)
            #expect(revoked.status == 200, "\(String(decoding: revoked.body, as: UTF8.self))")
            var refused = false
            let deadline = ContinuousClock.now + .seconds(5)
            while !refused, ContinuousClock.now < deadline {
                refused = try await http.send("GET", bURL + "/v1/fleet", token: b.viewerToken).status == 401
                if !refused { try await Task.sleep(for: .milliseconds(20)) }
            }
            #expect(refused, "B stops accepting a token revoked through A")
        }
    }

    /// An artifact only A holds (its upload's share into the database failed after the file was stored: a dropped
    /// connection, a kill between the two). A's "is it here?" used to answer yes from its own file, so the CLI skipped
    /// the upload and a release named bytes B answered 404 for, for good. Now A shares it before answering: B serves it.
    @Test func anArtifactOnlyAHoldsIsSharedBeforeAAnswersForIt() async throws {
        try await Self.withTwoControllers { a, aURL, b, bURL in
            let http = LiveHTTP()
            let bytes = (0..<((1 << 20) + 123)).map { UInt8(truncatingIfNeeded: $0 &* 17 &+ 3) }
            let digest = SHA256.hash(bytes)
            try Data(bytes).write(to: a.directory.appendingPathComponent("artifacts/\(digest.hex)"))
            #expect(try await http.send("HEAD", bURL + "/v1/artifacts/\(digest.hex)", token: b.operatorToken).status == 404)

            let head = try await http.send("HEAD", aURL + "/v1/artifacts/\(digest.hex)", token: a.operatorToken)
            #expect(head.status == 200 && head.header("Content-Length") == "\(bytes.count)")
            let whole = try await http.send("GET", bURL + "/v1/artifacts/\(digest.hex)", token: b.operatorToken)
            #expect(whole.status == 200 && Array(whole.body) == bytes, "B serves what A held alone")
        }
    }

    /// A damaged copy on A (a disk error, a partial restore of its directory: bytes that are not what their name says).
    /// Before, an upload of the right bytes was answered "already stored" and thrown away, and the damaged copy was
    /// shared into the database unchecked: B then fetched it at every download, found it damaged and answered 500, for
    /// good. Now an upload's verified bytes replace the copy, and a copy is hashed before it is shared.
    @Test func aDamagedCopyIsNeitherSharedNorKeptOverAnUpload() async throws {
        try await Self.withTwoControllers { a, aURL, b, bURL in
            let http = LiveHTTP()
            func damaged(_ seed: UInt8) throws -> (bytes: [UInt8], digest: SHA256Digest) {
                let bytes = (0..<((1 << 20) + 77)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(seed)) }
                let digest = SHA256.hash(bytes)
                var wrong = bytes
                wrong[wrong.count / 2] ^= 0xff
                try Data(wrong).write(to: a.directory.appendingPathComponent("artifacts/\(digest.hex)"))
                return (bytes, digest)
            }
            // An upload of the right bytes repairs the copy, and B serves them.
            let first = try damaged(1)
            let upload = try await http.send(
                "POST",
                aURL + "/v1/artifacts",
                token: a.operatorToken,
                headers: [ArtifactRoutes.digestHeader.rawName: first.digest.hex],
                body: Data(first.bytes)
            )
            #expect(upload.status == 201, "\(String(decoding: upload.body, as: UTF8.self))")
            #expect(try Data(contentsOf: a.directory.appendingPathComponent("artifacts/\(first.digest.hex)")) == Data(first.bytes))
            let fromB = try await http.send("GET", bURL + "/v1/artifacts/\(first.digest.hex)", token: b.operatorToken)
            #expect(fromB.status == 200 && Array(fromB.body) == first.bytes, "B serves the uploaded bytes")

            // A damaged copy found by A's "is it here?" is not shared: A checks it against its digest before it answers
            // for it, removes it (its reason in A's log) and answers 404; it is then absent everywhere, so that the CLI
            // uploads it again. (Before the check, this was the share's 500.)
            let second = try damaged(2)
            let head = try await http.send("GET", aURL + "/v1/artifacts/\(second.digest.hex)", token: a.operatorToken)
            #expect(head.status == 404, "\(head.status)")
            #expect(!FileManager.default.fileExists(atPath: a.directory.appendingPathComponent("artifacts/\(second.digest.hex)").path))
            #expect(try await a.store.artifactBlobSize(second.digest.hex) == nil)
            #expect(try await http.send("HEAD", aURL + "/v1/artifacts/\(second.digest.hex)", token: a.operatorToken).status == 404)
            #expect(try await http.send("HEAD", bURL + "/v1/artifacts/\(second.digest.hex)", token: b.operatorToken).status == 404)
        }
    }

    /// Every change is announced by the transaction that commits it (`ClusterChangeTriggers`), no longer by the
    /// controller after its commit: a controller killed in between, one whose sends failed, or a writer that is no
    /// controller (the CLI on the database, an operator's `psql`) used to leave B serving what it had cached — a revoked
    /// token kept working on B, a removed agent's parked poll stayed parked — and a trust root published through A was
    /// never announced at all. Here rows are written by a store of its own (as the CLI writes them), and a root is
    /// published through A; B acts on each at once.
    @Test func changesCommittedWithoutAControllerReachB() async throws {
        try await TestStore.withLocation(.postgres) { location in
            let selection = try location.selection
            guard case .postgres(let configuration) = selection else { throw FixtureError("not PostgreSQL") }
            try await Self.withTwoControllers(on: selection) { a, aURL, b, bURL in
                let http = LiveHTTP()
                // Each controller's pool names it in the notifications its commits send, so it ignores its own.
                let origin = try await a.store.readDB.raw("SELECT current_setting('ferry.origin', TRUE) AS origin").first()?
                    .decode(column: "origin", as: String?.self)
                #expect(origin ?? nil == a.controller.relay?.feed.origin)
                let writer = try await SQLControllerStore.open(configuration, logger: Logger(label: "writer"))
                do {
                    // A token B has cached, revoked by a bare UPDATE.
                    #expect(try await http.send("GET", bURL + "/v1/fleet", token: b.viewerToken).status == 200)
                    let viewerID = try #require(try await b.store.tokens().filter { $0.role == .viewer }.last?.id)
                    try await writer.readDB.raw(
                        "UPDATE tokens SET revoked_at = \(bind: StoredTime.milliseconds(Date())) WHERE id = \(bind: viewerID)"
                    )
                    .run()
                    _ = try await eventually("B refuses the token revoked in the database", timeout: .seconds(5), interval: .milliseconds(20)) {
                        () -> Bool? in try await http.send("GET", bURL + "/v1/fleet", token: b.viewerToken).status == 401 ? true : nil
                    }

                    // An agent parked on B: a trust root published through A wakes it with the new version.
                    let enrolled = try await http.send(
                        "POST",
                        aURL + "/v1/agents",
                        token: a.enrollToken,
                        body: Data(EnrollRequest(name: "web-1", hostname: "web-1", services: ["api"], replace: false).json.encoded())
                    )
                    try #require(enrolled.status == 201)
                    let agent = try EnrollResponse(json: JSONValue.parse(Array(enrolled.body)))
                    let root = try TestRoots.root(
                        version: 2,
                        rootKeys: [a.secondKey],
                        releaseKeys: [a.secondKey],
                        signers: [a.signingKey, a.secondKey]
                    )
                    let woken = try await Self.parkOnB(b, bURL, agent, http) {
                        let published = try await http.send("POST", aURL + "/v1/roots", token: a.operatorToken, body: Data(root.encoded()))
                        try #require(published.status == 201, "\(String(decoding: published.body, as: UTF8.self))")
                    }
                    #expect(woken.status == 200)
                    #expect(try DesiredState(json: JSONValue.parse(Array(woken.body))).rootVersion == 2)

                    // The agent removed by a bare DELETE: its poll parked on B is answered at once, 401 as any request
                    // of it from then on (its token went with it), as when it is removed through a controller.
                    let removed = try await Self.parkOnB(b, bURL, agent, http) {
                        try await writer.readDB.raw("DELETE FROM agents WHERE id = \(bind: agent.agentID)").run()
                    }
                    #expect(removed.status == 401)
                    #expect(try await http.send("GET", bURL + "/v1/agents/\(agent.agentID)/desired-state", token: agent.token).status == 401)
                } catch {
                    try? await writer.close()
                    throw error
                }
                try await writer.close()
            }
        }
    }

    /// A revocation that carries A's own origin (its COMMIT landed after A answered the operator with an error, and after
    /// A's resynchronizations: nothing dropped A's cache) still takes effect on A. A ignored its own notifications, and
    /// served the revoked token from its cache until something else dropped it.
    @Test func aRevocationCommittedUnderAsOwnNameReachesA() async throws {
        try await TestStore.withLocation(.postgres) { location in
            let selection = try location.selection
            guard case .postgres(let configuration) = selection else { throw FixtureError("not PostgreSQL") }
            try await Self.withTwoControllers(on: selection) { a, aURL, _, _ in
                let http = LiveHTTP()
                let origin = try #require(a.controller.relay?.feed.origin)
                let writer = try await SQLControllerStore.open(configuration, logger: Logger(label: "writer"))
                do {
                    #expect(try await http.send("GET", aURL + "/v1/fleet", token: a.viewerToken).status == 200)
                    // Every viewer token (A's and B's share the database and a name).
                    try await writer.transaction { db in
                        try await db.raw("SELECT set_config('ferry.origin', \(bind: origin), TRUE)").run()
                        try await db.raw(
                            "UPDATE tokens SET revoked_at = \(bind: StoredTime.milliseconds(Date())) WHERE role = 'viewer'"
                        )
                        .run()
                    }
                    _ = try await eventually("A refuses the token revoked under its own name", timeout: .seconds(5), interval: .milliseconds(20)) {
                        () -> Bool? in try await http.send("GET", aURL + "/v1/fleet", token: a.viewerToken).status == 401 ? true : nil
                    }
                } catch {
                    try? await writer.close()
                    throw error
                }
                try await writer.close()
            }
        }
    }

    /// B's change listener cannot reconnect while its pool works (here: its connection ended and a reconnect delay of
    /// an hour): a release published through A reaches B's agents at B's next resynchronization. B served its cached
    /// state for as long as the listener stayed down — the agent's ETag answered 304 for good.
    @Test(.timeLimit(.minutes(2)))
    func aControllerThatCannotListenResynchronizesWhileTheDatabaseAnswers() async throws {
        let configure: @Sendable (inout ControllerConfiguration) -> Void = { configuration in
            configuration.changeListenerReconnectDelay = .seconds(3600)
            configuration.unheardResyncInterval = .milliseconds(500)
        }
        try await Self.withTwoControllers(configure: configure) { a, aURL, b, bURL in
            let http = LiveHTTP()
            let agent = try await Self.enroll("web-1", through: a, aURL, http)
            let artifact = try await Self.upload(Array("artifact".utf8), through: a, aURL, http)
            try await Self.publish(1, artifact: artifact, through: a, aURL, http)
            let first = try await http.send("GET", bURL + "/v1/agents/\(agent.agentID)/desired-state", token: agent.token)
            try #require(first.status == 200)
            let etag = try #require(first.header("ETag"))

            try await a.store.readDB.raw(
                """
                SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                WHERE application_name = 'ferry-controller change listener' AND datname = current_database()
                """
            ).run()
            let relay = try #require(b.controller.relay)
            _ = try await eventually("B's listener stopped", timeout: .seconds(10), interval: .milliseconds(20)) {
                relay.listening.isListening ? nil : true
            }
            try await Self.publish(2, artifact: artifact, through: a, aURL, http)
            _ = try await eventually("B serves the release published through A", timeout: .seconds(20), interval: .milliseconds(100)) {
                () -> Bool? in
                let answer = try await http.send(
                    "GET",
                    bURL + "/v1/agents/\(agent.agentID)/desired-state",
                    token: agent.token,
                    headers: ["If-None-Match": etag]
                )
                return answer.status == 200 ? true : nil
            }
            #expect(!relay.listening.isListening, "still not listening: the resync, not a reconnect, brought the change")
        }
    }

    /// An agent removed through A is forgotten by B as well: B hears only "agent changed" (a re-enrolment, a newer
    /// serial and a removal read alike), and kept the serials it reported, its identity and its last fingerprint for as
    /// long as it ran — every instance an autoscaling group ever terminated. B's sweep of agents gone from the store
    /// drops them, and only them.
    @Test func bForgetsAnAgentRemovedThroughA() async throws {
        try await Self.withTwoControllers { a, aURL, b, bURL in
            let http = LiveHTTP()
            var agents: [EnrollResponse] = []
            for name in ["gone-1", "kept-1"] {
                let agent = try await http.enroll(aURL, token: a.enrollToken, name: name)
                let body =
                    #"{"agentVersion":"1.0","hostname":"\#(name)","processManager":"builtin","services":[{"service":"api","serial":1,"phase":"running","message":"ok","health":"healthy","processes":[]}]}"#
                let reported = try await http.send(
                    "POST",
                    bURL + "/v1/agents/\(agent.agentID)/status",
                    token: agent.token,
                    headers: ["Content-Type": "application/json"],
                    body: Data(body.utf8)
                )
                try #require(reported.status == 204, "\(String(decoding: reported.body, as: UTF8.self))")
                agents.append(agent)
            }
            let (gone, kept) = (agents[0].agentID, agents[1].agentID)
            let core = b.controller.core
            let remembered: @Sendable () -> [(String, Set<String>)] = {
                [
                    ("reported serials", core.desiredStates.cache.rememberedAgentIDs),
                    ("identity", core.identities.followedAgentIDs),
                    ("fingerprint", core.statusReports.fingerprintedAgentIDs),
                ]
            }
            for (what, ids) in remembered() { #expect(ids.isSuperset(of: [gone, kept]), "B remembers both agents' \(what)") }
            #expect(try await core.forgetAgentsGoneFromStore() == 0, "both are enrolled")

            let removed = try await http.send("DELETE", aURL + "/v1/agents/gone-1", token: a.operatorToken)
            try #require(removed.status == 200)
            // B was told "agent changed" and dropped its cached state; what it noted of the agent stays until its sweep.
            #expect(core.desiredStates.cache.rememberedAgentIDs.contains(gone), "before the sweep, B still holds the removed agent")
            #expect(try await core.forgetAgentsGoneFromStore() == 1)
            for (what, ids) in remembered() {
                #expect(!ids.contains(gone), "B forgot the removed agent's \(what)")
                #expect(ids.contains(kept), "B keeps the enrolled agent's \(what)")
            }
            #expect(try await core.forgetAgentsGoneFromStore() == 0)
            // The agent kept still reports through B.
            let again = try await http.send("GET", bURL + "/v1/agents/\(kept)/desired-state", token: agents[1].token)
            #expect(again.status == 200)
        }
    }

    /// A status report of `services` (each running `serial`) as an agent sends it.
    static func report(_ services: [String], serial: Int64, hostname: String) -> Data {
        let elements = services.map {
            #"{"service":"\#($0)","serial":\#(serial),"phase":"running","message":"ok","health":"healthy","processes":[]}"#
        }
        return Data(
            #"{"agentVersion":"1.0","hostname":"\#(hostname)","processManager":"builtin","services":[\#(elements.joined(separator: ","))]}"#.utf8
        )
    }

    /// What B missed while its listener was down is made good by the resync it applies when it listens again: here a
    /// re-enrolment through A for one more service (B kept the agent's row, and refused its reports of the new service
    /// with 422 for ever), and a trust root (B woke only agents of services with a release: this one has none, and
    /// waited out its long-poll). Missed notifications are made by disabling the triggers that send them.
    @Test func aResyncForgetsAgentRowsAndWakesEveryParkedAgent() async throws {
        try await TestStore.withLocation(.postgres) { location in
            try await Self.withTwoControllers(on: try location.selection) { a, aURL, b, bURL in
                let http = LiveHTTP()
                let first = try await http.enroll(aURL, token: a.enrollToken, name: "web-1", services: ["api"])
                #expect(try await http.send("GET", bURL + "/v1/agents/\(first.agentID)/desired-state", token: first.token).status == 200)

                try await location.execute(["ALTER TABLE agents DISABLE TRIGGER ferry_agent_changed"])
                let replaced = try await http.send(
                    "POST",
                    aURL + "/v1/agents",
                    token: a.operatorToken,
                    body: Data(EnrollRequest(name: "web-1", hostname: "web-1", services: ["api", "web"], replace: true).json.encoded())
                )
                try #require(replaced.status == 201, "\(String(decoding: replaced.body, as: UTF8.self))")
                try await location.execute(["ALTER TABLE agents ENABLE TRIGGER ferry_agent_changed"])
                let agent = try EnrollResponse(json: JSONValue.parse(Array(replaced.body)))
                try #require(agent.agentID == first.agentID, "a replace keeps the agent's id")
                let statusURL = bURL + "/v1/agents/\(agent.agentID)/status"
                let headers = ["Content-Type": "application/json"]
                let body = Self.report(["api", "web"], serial: 1, hostname: "web-1")
                // Not asked before the resync (B would answer 422 from the row it kept): under load B's listener may
                // reconnect on its own, and resync, in between (seen in a full run).
                await b.controller.core.apply(remote: .resync)
                let after = try await http.send("POST", statusURL, token: agent.token, headers: headers, body: body)
                #expect(after.status == 204, "\(String(decoding: after.body, as: UTF8.self))")

                let root = try TestRoots.root(version: 2, rootKeys: [a.secondKey], releaseKeys: [a.secondKey], signers: [a.signingKey, a.secondKey])
                let woken = try await Self.parkOnB(b, bURL, agent, http) {
                    try await location.execute(["ALTER TABLE trust_roots DISABLE TRIGGER ferry_root_published"])
                    let published = try await http.send("POST", aURL + "/v1/roots", token: a.operatorToken, body: Data(root.encoded()))
                    try #require(published.status == 201, "\(String(decoding: published.body, as: UTF8.self))")
                    try await location.execute(["ALTER TABLE trust_roots ENABLE TRIGGER ferry_root_published"])
                    await b.controller.core.apply(remote: .resync)
                }
                #expect(woken.status == 200)
                #expect(try DesiredState(json: JSONValue.parse(Array(woken.body))).rootVersion == 2)
            }
        }
    }

    /// A report through A of a serial A's cached state did not give (an install that finished after an abort) is
    /// announced as "agent changed"; B, whose snapshot holds the agent's serials from its load, takes the stored ones,
    /// or it would compute the same out-of-date state again.
    @Test func anAgentChangedNoticeBringsTheStoredSerialsToB() async throws {
        try await Self.withTwoControllers { a, aURL, b, bURL in
            let http = LiveHTTP()
            let agent = try await http.enroll(aURL, token: a.enrollToken, name: "web-1", services: ["api"])
            #expect(try await http.send("GET", bURL + "/v1/agents/\(agent.agentID)/desired-state", token: agent.token).status == 200)
            let reported = try await http.send(
                "POST",
                aURL + "/v1/agents/\(agent.agentID)/status",
                token: agent.token,
                headers: ["Content-Type": "application/json"],
                body: Self.report(["api"], serial: 7, hostname: "web-1")
            )
            try #require(reported.status == 204, "\(String(decoding: reported.body, as: UTF8.self))")
            let cache = b.controller.core.desiredStates.cache
            let serial = try await eventually("B knows the serial reported through A", timeout: .seconds(5), interval: .milliseconds(20)) {
                cache.reported(by: agent.agentID)["api"]
            }
            #expect(serial == 7)
        }
    }

    /// A controller campaigns for leadership only once it has read the database's clock: leading on its host's clock,
    /// it stamped wave timers off by the host's skew, and they jumped when the offset arrived (a wave advancing at once,
    /// or held back for as long as the skew).
    @Test func aControllerCampaignsOnlyOnceItHasReadTheDatabasesClock() async throws {
        try await TestStore.withLocation(.postgres) { location in
            let selection = try location.selection
            try await ControllerFixture.with(adjust: { $0.database = selection }) { fixture in
                // The controller's own election, not running (no server): ready only once its clock has an offset.
                let own = try #require(fixture.controller.election)
                let clock = try #require(fixture.controller.clockSync?.clock)
                #expect(clock.offset == nil)
                #expect(!own.isReady())
                clock.adjust(to: .init(sent: Date(), received: Date(), database: Date()))
                #expect(own.isReady())

                // An election that is not ready holds back while the lock is free, and takes it once ready.
                let ready = Mutex(false)
                let asked = Mutex(0)
                var election = PostgresLeaderElection(backend: own.backend, leadership: .elected(), logger: own.logger)
                election.retryInterval = .milliseconds(20)
                election.isReady = {
                    asked.withLock { $0 += 1 }
                    return ready.withLock { $0 }
                }
                let running = Task { [election] in try await election.run() }
                // Twenty tries at the lock it would have taken, had it campaigned.
                _ = try await eventually("the election asks whether it is ready", timeout: .seconds(15), interval: .milliseconds(20)) {
                    asked.withLock { $0 } >= 20 ? true : nil
                }
                #expect(!election.leadership.isLeader, "it campaigned before it was ready")
                ready.withLock { $0 = true }
                _ = try await eventually("the election leads once ready", timeout: .seconds(15)) { election.leadership.isLeader ? true : nil }
                running.cancel()
                _ = await running.result

                // Never ready (every clock sample too slow): it campaigns anyway after `readyWait`, not never.
                var patient = PostgresLeaderElection(backend: own.backend, leadership: .elected(), logger: own.logger)
                patient.isReady = { false }
                patient.readyWait = .seconds(3)
                let started = ContinuousClock.now
                let waiting = Task { [patient] in try await patient.run() }
                _ = try await eventually("the election leads after readyWait", timeout: .seconds(20)) { patient.leadership.isLeader ? true : nil }
                #expect(ContinuousClock.now - started >= .seconds(3), "it waited for the clock first")
                waiting.cancel()
                _ = await waiting.result
            }
        }
    }

    /// B's host clock runs 2 minutes behind A's. A report B receives is stamped, and the leader judges it, on the
    /// database server's clock: before, B stamped its reports 2 minutes in the past, the leader A saw the agent as
    /// silent (stale after 3 poll intervals), and a rollout waiting for its wave stalled.
    @Test func aReplicaWithASkewedClockStampsReportsOnTheDatabasesClock() async throws {
        try await TestStore.withLocation(.postgres) { location in
            let selection = try location.selection
            let adjust: (inout ControllerConfiguration) -> Void = { $0.database = selection }
            try await ControllerFixture.with(adjust: adjust) { a in
                try await ControllerFixture.with(adjust: adjust, now: { Date().addingTimeInterval(-120) }) { b in
                    try await a.withLiveServer { aURL in
                        try await b.withLiveServer { bURL in
                            for fixture in [a, b] {
                                let clock = try #require(fixture.controller.clockSync?.clock)
                                _ = try await eventually("the controller read the database clock", timeout: .seconds(10)) { clock.offset }
                            }
                            let skew = b.controller.core.now().timeIntervalSince(a.controller.core.now())
                            #expect(abs(skew) < 1, "A and B agree on the time (B's host clock is 120 s behind): \(skew) s")
                            let http = LiveHTTP()
                            let agent = try await http.enroll(aURL, token: a.enrollToken, name: "web-1", services: ["api"])
                            let reported = try await http.send(
                                "POST",
                                bURL + "/v1/agents/\(agent.agentID)/status",
                                token: agent.token,
                                headers: ["Content-Type": "application/json"],
                                body: Self.report(["api"], serial: 7, hostname: "web-1")
                            )
                            try #require(reported.status == 204, "\(String(decoding: reported.body, as: UTF8.self))")
                            let status = try #require(try await a.store.serviceStatuses(agentID: agent.agentID).first)
                            let age = Date().timeIntervalSince(status.updatedAt)
                            #expect(abs(age) < 5, "B stamped the report \(age) s in the past")
                            let core = a.controller.core
                            #expect(
                                RolloutEvaluator.isFresh(status, now: core.now(), staleAfter: core.configuration.staleAfter),
                                "the leader's view of the report B received: fresh"
                            )
                        }
                    }
                }
            }
        }
    }

    /// B's change listener applies notices in order; an agent's notice reads that agent's stored statuses. With that read
    /// held (the status table locked, a busy pool), a token revoked through A right after used to keep working on B
    /// until the read ended: the read is now made off the listener.
    @Test(.timeLimit(.minutes(3)))
    func aRevocationIsNotHeldBehindAnAgentsNotice() async throws {
        let server = try await PostgresTestServer.start()
        do {
            let database = try await server.createDatabase()
            let selection = DatabaseSelection.postgres(try PostgresStoreConfiguration.parse(server.url(database: database)))
            try await Self.withTwoControllers(on: selection) { a, aURL, b, bURL in
                let http = LiveHTTP()
                let agent = try await http.enroll(aURL, token: a.enrollToken, name: "web-1", services: ["api"])
                // The viewer token works on B (and is cached there); `/v1/roots` does not read the status table.
                #expect(try await http.send("GET", bURL + "/v1/roots", token: b.viewerToken).status == 200)
                let viewerID = try #require(try await b.store.tokens().filter { $0.role == .viewer }.last?.id)
                // The status table locked for 8 s, then a notice about the agent, which B reads the table for.
                let locker = Task {
                    try await server.psql(
                        "BEGIN; LOCK TABLE service_status IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(8); COMMIT;",
                        database: database
                    )
                }
                _ = try await eventually("the status table is locked", timeout: .seconds(10), interval: .milliseconds(20)) { () -> Bool? in
                    let locks = try await server.psql(
                        "SELECT count(*) FROM pg_locks WHERE relation = 'service_status'::regclass AND mode = 'AccessExclusiveLock' AND granted",
                        database: database
                    )
                    return locks.trimmingCharacters(in: .whitespacesAndNewlines) == "1" ? true : nil
                }
                _ = try await server.psql("SELECT pg_notify('ferry_changes', 'v1 someone-else agent \(agent.agentID)')", database: database)
                // B's read of the agent's statuses is under way, waiting for the lock, before the revocation is sent.
                _ = try await eventually("B's read waits for the lock", timeout: .seconds(10), interval: .milliseconds(20)) { () -> Bool? in
                    let waiting = try await server.psql(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = '\(database)' AND wait_event_type = 'Lock'",
                        database: database
                    )
                    return (Int(waiting.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0) > 0 ? true : nil
                }
                let revoked = try await http.send("DELETE", aURL + "/v1/tokens/\(viewerID)", token: a.operatorToken)
                #expect(revoked.status == 200, "\(String(decoding: revoked.body, as: UTF8.self))")
                let started = ContinuousClock.now
                var refused = false
                while !refused, ContinuousClock.now - started < .seconds(6) {
                    refused = try await http.send("GET", bURL + "/v1/roots", token: b.viewerToken).status == 401
                    if !refused { try await Task.sleep(for: .milliseconds(20)) }
                }
                #expect(refused, "B stops accepting the revoked token while the status table is locked")
                #expect(ContinuousClock.now - started < .seconds(3), "within 3 s, not when the lock ends")
                _ = try await locker.value
            }
        } catch {
            Issue.record("\(error)")
        }
        try? await server.stop()
    }

    /// Parks `agent`'s long-poll on B (20 s), runs `change`, and returns B's answer, which must come within 5 s: woken
    /// by the change, not by the wait's end.
    static func parkOnB(
        _ b: ControllerFixture,
        _ bURL: String,
        _ agent: EnrollResponse,
        _ http: LiveHTTP,
        change: () async throws -> Void
    ) async throws -> LiveHTTP.Response {
        let url = bURL + "/v1/agents/\(agent.agentID)/desired-state"
        let current = try await http.send("GET", url, token: agent.token)
        try #require(current.status == 200)
        let etag = try #require(current.header("ETag"))
        async let parked = http.send("GET", url + "?wait=20", token: agent.token, headers: ["If-None-Match": etag])
        let hub = b.controller.core.desiredStates.hub
        let deadline = ContinuousClock.now + .seconds(10)
        while hub.waiterCount == 0, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
        try #require(hub.waiterCount == 1, "the poll parked on B")
        let changed = ContinuousClock.now
        try await change()
        let answer = try await parked
        #expect(ContinuousClock.now - changed < .seconds(5), "woken by the change, not by the end of the wait")
        return answer
    }

    /// Exactly one of the two drives rollouts; when it stops, the other takes over within seconds.
    @Test func oneControllerDrivesRolloutsAndAnotherTakesOver() async throws {
        try await TestStore.withLocation(.postgres) { location in
            let selection = try location.selection
            let adjust: (inout ControllerConfiguration) -> Void = { $0.database = selection }
            try await ControllerFixture.with(adjust: adjust) { a in
                try await ControllerFixture.with(adjust: adjust) { b in
                    try await b.withLiveServer { _ in
                        try await a.withLiveServer { _ in
                            let deadline = ContinuousClock.now + .seconds(10)
                            while ContinuousClock.now < deadline, !(a.leads || b.leads) { try await Task.sleep(for: .milliseconds(50)) }
                            #expect(a.leads != b.leads, "exactly one leads")
                        }
                        // A stopped (if it led, its lock went with its connection).
                        let deadline = ContinuousClock.now + .seconds(10)
                        while ContinuousClock.now < deadline, !b.leads { try await Task.sleep(for: .milliseconds(50)) }
                        #expect(b.leads, "B drives rollouts once A is gone")
                    }
                }
            }
        }
    }
}

extension HighAvailabilityTests {
    /// The database restarts under two running controllers (an RDS failover, a crash and recovery): the leader stops
    /// driving while it is gone, one controller leads again within seconds of its return, a publish through either
    /// succeeds again, and both shut down (before, the election waited for ever on a query of the dead connection and
    /// the graceful shutdown hung with it). A private server: restarting the shared one would break the other tests.
    @Test(.timeLimit(.minutes(5)))
    func theDatabaseRestartsUnderTwoControllers() async throws {
        // Each step's time is printed: a run that meets the time limit says where it went.
        let started = ContinuousClock.now
        let step: @Sendable (String) -> Void = { what in
            FileHandle.standardError.write(Data("database restart under two controllers: \(what) at \(ContinuousClock.now - started)\n".utf8))
        }
        // Durable commits: the stop below is a crash, and a server started `fast` (synchronous_commit=off) loses what was
        // committed in its last fraction of a second, here the fixtures' tokens (the publish then saw 401 for ever).
        let server = try await PostgresTestServer.start(fast: false)
        step("private server started")
        do {
            let database = try await server.createDatabase()
            let selection = DatabaseSelection.postgres(try PostgresStoreConfiguration.parse(server.url(database: database)))
            try await Self.withTwoControllers(on: selection) { a, aURL, b, bURL in
                step("both controllers listening")
                try await eventually("one controller leads", timeout: .seconds(20)) { () -> Bool? in a.leads != b.leads ? true : nil }
                try await server.stop()
                step("database stopped")
                try await eventually("the leader stops driving while the database is gone", timeout: .seconds(30)) { () -> Bool? in
                    !a.leads && !b.leads ? true : nil
                }
                try await server.restart(fast: false)
                step("database restarted")
                try await eventually("one controller leads again", timeout: .seconds(60)) { () -> Bool? in a.leads != b.leads ? true : nil }
                step("one controller leads again")
                let http = LiveHTTP()
                // A's operator token on both (tokens live in the shared database; A made them), each controller's own
                // trusted key (the fixtures pin one each).
                for (signer, url, serial) in [(a, aURL, Int64(1)), (b, bURL, Int64(2))] {
                    let fixture = a
                    let bytes = Array("artifact \(serial)".utf8)
                    let digest = SHA256.hash(bytes)
                    let artifact = ArtifactReference(url: ArtifactReference.controllerPath(for: digest), sha256: digest, size: Int64(bytes.count))
                    let envelope = try Envelope.sign(
                        payload: ControllerFixture.release(serial: serial, artifact: artifact).payload(),
                        payloadType: Release.payloadType,
                        with: [signer.signingKey]
                    )
                    // The pool may still hand out a connection of the old server once: the request is answered 503 and
                    // sent again, as the CLI does.
                    var last = "nothing sent"
                    do {
                        try await eventually("publish of serial \(serial) after the restart", timeout: .seconds(60), interval: .milliseconds(500)) {
                            () -> Bool? in
                            let upload = try await http.send("POST", url + "/v1/artifacts", token: fixture.operatorToken, body: Data(bytes))
                            last = "upload \(upload.status) \(String(decoding: upload.body, as: UTF8.self))"
                            guard upload.status == 201 || upload.status == 200 else { return nil }
                            let published = try await http.send(
                                "POST",
                                url + "/v1/releases",
                                token: fixture.operatorToken,
                                body: Data(envelope.encoded())
                            )
                            last = "publish \(published.status) \(String(decoding: published.body, as: UTF8.self))"
                            return published.status == 201 ? true : nil
                        }
                    } catch {
                        Issue.record("\(error): the last answer was \(last)")
                        throw error
                    }
                    step("serial \(serial) published")
                }
            }
            step("both controllers stopped")
        } catch {
            await server.remove()
            throw error
        }
        await server.remove()
    }
}

extension HighAvailabilityTests {
    /// The listeners' connections go silent (their server processes stopped: no answer and no FIN, as when a failover
    /// leaves the old address dead): each controller's check notices, listens again on a new connection, and a change
    /// made through A reaches B again. Without the check, B would wait on the dead connection for ever and keep a token
    /// A revoked. A private server: the stopped processes must not reach other tests.
    @Test(.timeLimit(.minutes(3)))
    func aSilentListenerConnectionIsMadeAgain() async throws {
        let server = try await PostgresTestServer.start()
        let stopped = Mutex<[pid_t]>([])
        do {
            let database = try await server.createDatabase()
            let selection = DatabaseSelection.postgres(try PostgresStoreConfiguration.parse(server.url(database: database)))
            let listeners = { @Sendable () async throws -> Set<pid_t> in
                let output = try await server.psql(
                    "SELECT pid FROM pg_stat_activity WHERE datname = '\(database)' AND application_name = 'ferry-controller change listener'"
                )
                return Set(output.split(separator: "\n").compactMap { pid_t($0.trimmingCharacters(in: .whitespaces)) })
            }
            try await Self.withTwoControllers(on: selection) { a, aURL, b, bURL in
                let http = LiveHTTP()
                #expect(try await http.send("GET", bURL + "/v1/fleet", token: b.viewerToken).status == 200)
                let silent = try await eventually("both listeners' server processes", timeout: .seconds(10)) { () -> Set<pid_t>? in
                    let pids = try await listeners()
                    return pids.count == 2 ? pids : nil
                }
                for pid in silent {
                    guard kill(pid, SIGSTOP) == 0 else {
                        Issue.record("SIGSTOP \(pid): \(String(cString: strerror(errno)))")
                        return
                    }
                    stopped.withLock { $0.append(pid) }
                }
                _ = try await eventually("both controllers listen again on new connections", timeout: .seconds(40)) { () -> Bool? in
                    try await listeners().subtracting(silent).count == 2 ? true : nil
                }
                try await Self.waitUntilListening(a, b)
                let viewerID = try #require(try await b.store.tokens().filter { $0.role == .viewer }.last?.id)
                let revoked = try await http.send("DELETE", aURL + "/v1/tokens/\(viewerID)", token: a.operatorToken)
                #expect(revoked.status == 200, "\(String(decoding: revoked.body, as: UTF8.self))")
                _ = try await eventually("B refuses the token A revoked", timeout: .seconds(5), interval: .milliseconds(20)) { () -> Bool? in
                    try await http.send("GET", bURL + "/v1/fleet", token: b.viewerToken).status == 401 ? true : nil
                }
            }
        } catch {
            for pid in stopped.withLock({ $0 }) { kill(pid, SIGCONT) }
            await server.remove()
            throw error
        }
        for pid in stopped.withLock({ $0 }) { kill(pid, SIGCONT) }
        await server.remove()
    }
}

extension ControllerFixture {
    /// Whether this controller currently drives rollouts.
    var leads: Bool { controller.election?.leadership.isLeader ?? true }
}
