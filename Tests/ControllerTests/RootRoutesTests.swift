import Foundation
import Hummingbird
import HummingbirdTesting
import Shared
import TestSupport
import Testing

@testable import Controller

/// The trust root chain on the controller: `POST /v1/roots` follows TUF's rules from the controller's pin (here root 1
/// built from its `--trusted-key` flags: `signingKey` and `secondKey`, threshold 1), `GET /v1/roots[/{version}]` serves
/// it, desired states name the newest version, and releases are checked against the newest root's release role.
@Suite("Trust roots on the controller")
struct RootRoutesTests {
    typealias Fixture = ControllerFixture

    /// Keys of roots 2 and 3: new root keys, and a new release key that replaces the flags' keys.
    struct Keys: Sendable {
        let root2, root3, release2: SigningKey
        init() throws {
            root2 = try .generate()
            root3 = try .generate()
            release2 = try .generate()
        }
    }

    /// Root 1 as the flags define it (both fixture keys in both roles, threshold 1), signed by `signers`.
    static func root1(_ fixture: Fixture, signers: [SigningKey]? = nil, rootThreshold: Int = 1) throws -> Envelope {
        try TestRoots.root(
            version: 1,
            rootKeys: [fixture.signingKey, fixture.secondKey],
            rootThreshold: rootThreshold,
            releaseKeys: [fixture.signingKey, fixture.secondKey],
            signers: signers ?? [fixture.signingKey]
        )
    }

    /// Root 2: root key `root2`, release key `release2` (the flags' keys are revoked), signed by `signers` (by default
    /// both flag keys, as the controller requires after flags, and its own root key).
    static func root2(
        _ fixture: Fixture,
        _ keys: Keys,
        signers: [SigningKey]? = nil,
        expiresAt: Date = Date().addingTimeInterval(365 * 86_400)
    ) throws -> Envelope {
        try TestRoots.root(
            version: 2,
            expiresAt: expiresAt,
            rootKeys: [keys.root2],
            releaseKeys: [keys.release2],
            signers: signers ?? [fixture.signingKey, fixture.secondKey, keys.root2]
        )
    }

    static func root3(_ keys: Keys, signers: [SigningKey]? = nil) throws -> Envelope {
        try TestRoots.root(version: 3, rootKeys: [keys.root3], releaseKeys: [keys.release2], signers: signers ?? [keys.root2, keys.root3])
    }

    static func post(_ client: any TestClientProtocol, _ envelope: Envelope, token: String) async throws -> TestResponse {
        try await client.execute(uri: "/v1/roots", method: .post, headers: Fixture.bearer(token), body: ByteBuffer(bytes: envelope.encoded()))
    }

    struct Hostile: Sendable, CustomTestStringConvertible {
        let name: String
        /// Roots stored before the hostile one is sent (built from the fixture and keys).
        let before: @Sendable (Fixture, Keys) throws -> [Envelope]
        let send: @Sendable (Fixture, Keys, any TestClientProtocol) async throws -> TestResponse
        let status: HTTPResponse.Status
        let code: String
        var testDescription: String { "\(name) → \(status.code) \(code)" }
    }

    static let hostile: [Hostile] = [
        Hostile(
            name: "root 3 before root 2",
            before: { _, _ in [] },
            send: { fixture, keys, client in try await post(client, try root3(keys), token: fixture.operatorToken) },
            status: .unprocessableContent,
            code: "root_skips_versions"
        ),
        Hostile(
            name: "root 2 signed only by its own root key",
            before: { _, _ in [] },
            send: { fixture, keys, client in try await post(client, try root2(fixture, keys, signers: [keys.root2]), token: fixture.operatorToken) },
            status: .unprocessableContent,
            code: "root_not_signed_by_previous"
        ),
        Hostile(
            name: "root 2 signed by one of the two flag keys (threshold 1): a release key taking over the root",
            before: { _, _ in [] },
            send: { fixture, keys, client in
                let takeover = try TestRoots.root(
                    version: 2,
                    rootKeys: [fixture.signingKey],
                    releaseKeys: [fixture.signingKey],
                    signers: [fixture.signingKey]
                )
                return try await post(client, takeover, token: fixture.operatorToken)
            },
            status: .unprocessableContent,
            code: "root_needs_every_flag_key"
        ),
        Hostile(
            name: "root 2 signed by one flag key and its own root key",
            before: { _, _ in [] },
            send: { fixture, keys, client in
                try await post(client, try root2(fixture, keys, signers: [fixture.signingKey, keys.root2]), token: fixture.operatorToken)
            },
            status: .unprocessableContent,
            code: "root_needs_every_flag_key"
        ),
        Hostile(
            name: "root 2 signed only by root 1's keys",
            before: { _, _ in [] },
            send: { fixture, keys, client in
                try await post(client, try root2(fixture, keys, signers: [fixture.signingKey, fixture.secondKey]), token: fixture.operatorToken)
            },
            status: .unprocessableContent,
            code: "root_not_signed_by_itself"
        ),
        Hostile(
            name: "root 2 signed by a release key instead of a root key",
            before: { _, _ in [] },
            send: { fixture, keys, client in
                try await post(client, try root2(fixture, keys, signers: [keys.release2, keys.root2]), token: fixture.operatorToken)
            },
            status: .unprocessableContent,
            code: "root_not_signed_by_previous"
        ),
        Hostile(
            name: "rollback: root 1 after root 2",
            before: { fixture, keys in [try root2(fixture, keys)] },
            send: { fixture, _, client in try await post(client, try root1(fixture), token: fixture.operatorToken) },
            status: .conflict,
            code: "root_not_newer"
        ),
        Hostile(
            name: "a different root 2 after root 2",
            before: { fixture, keys in [try root2(fixture, keys)] },
            send: { fixture, keys, client in
                try await post(client, try root2(fixture, keys, expiresAt: Date().addingTimeInterval(86_400)), token: fixture.operatorToken)
            },
            status: .conflict,
            code: "root_not_newer"
        ),
        Hostile(
            name: "an expired root 2",
            before: { _, _ in [] },
            send: { fixture, keys, client in
                try await post(client, try root2(fixture, keys, expiresAt: Date().addingTimeInterval(-3600)), token: fixture.operatorToken)
            },
            status: .unprocessableContent,
            code: "root_expired"
        ),
        Hostile(
            name: "root 1 whose keys are not the controller's trusted keys",
            before: { _, _ in [] },
            send: { fixture, keys, client in
                let other = try TestRoots.root(version: 1, rootKeys: [keys.root2], releaseKeys: [keys.release2], signers: [keys.root2])
                return try await post(client, other, token: fixture.operatorToken)
            },
            status: .unprocessableContent,
            code: "root_does_not_match_pin"
        ),
        Hostile(
            name: "root 1 with the trusted keys but another threshold",
            before: { _, _ in [] },
            send: { fixture, _, client in
                try await post(
                    client,
                    try root1(fixture, signers: [fixture.signingKey, fixture.secondKey], rootThreshold: 2),
                    token: fixture.operatorToken
                )
            },
            status: .unprocessableContent,
            code: "root_does_not_match_pin"
        ),
        Hostile(
            name: "a release envelope posted as a root",
            before: { _, _ in [] },
            send: { fixture, _, client in try await post(client, try TestRoots.release(signers: [fixture.signingKey]), token: fixture.operatorToken)
            },
            status: .unprocessableContent,
            code: "wrong_payload_type"
        ),
        Hostile(
            name: "a root document with an unknown field",
            before: { _, _ in [] },
            send: { fixture, keys, client in
                let root = try Root.decode(try root2(fixture, keys).payload)
                guard case .object(var fields) = root.json else { throw FixtureError("root JSON is not an object") }
                fields["mirrors"] = .array([])
                let envelope = try Envelope.sign(
                    payload: Array(JSONValue.object(fields).encoded()),
                    payloadType: Root.payloadType,
                    with: [fixture.signingKey, keys.root2]
                )
                return try await post(client, envelope, token: fixture.operatorToken)
            },
            status: .unprocessableContent,
            code: "invalid_root"
        ),
        Hostile(
            name: "an unsigned root",
            before: { _, _ in [] },
            send: { fixture, keys, client in
                var envelope = try root2(fixture, keys)
                envelope.signatures = []
                return try await post(client, envelope, token: fixture.operatorToken)
            },
            status: .unprocessableContent,
            code: "invalid_document"
        ),
        Hostile(
            name: "malformed JSON",
            before: { _, _ in [] },
            send: { fixture, _, client in
                try await client.execute(
                    uri: "/v1/roots",
                    method: .post,
                    headers: Fixture.bearer(fixture.operatorToken),
                    body: ByteBuffer(string: "{\"payload")
                )
            },
            status: .badRequest,
            code: "malformed_json"
        ),
        Hostile(
            name: "a viewer publishes a root",
            before: { _, _ in [] },
            send: { fixture, keys, client in try await post(client, try root2(fixture, keys), token: fixture.viewerToken) },
            status: .forbidden,
            code: "forbidden"
        ),
        Hostile(
            name: "no token",
            before: { _, _ in [] },
            send: { fixture, keys, client in
                try await client.execute(uri: "/v1/roots", method: .post, body: ByteBuffer(bytes: try root2(fixture, keys).encoded()))
            },
            status: .unauthorized,
            code: "unauthorized"
        ),
        Hostile(
            name: "a root version that is not a number",
            before: { _, _ in [] },
            send: { fixture, _, client in try await client.execute(uri: "/v1/roots/two", method: .get, headers: Fixture.bearer(fixture.viewerToken))
            },
            status: .badRequest,
            code: "invalid_version"
        ),
        Hostile(
            name: "a root version not stored",
            before: { fixture, keys in [try root2(fixture, keys)] },
            send: { fixture, _, client in try await client.execute(uri: "/v1/roots/3", method: .get, headers: Fixture.bearer(fixture.viewerToken)) },
            status: .notFound,
            code: "unknown_root"
        ),
    ]

    @Test("hostile root publishes get their specific error and change nothing", arguments: hostile)
    func hostileRoot(_ testCase: Hostile) async throws {
        try await Fixture.with { fixture in
            try await fixture.withRouter { client in
                let keys = try Keys()
                for envelope in try testCase.before(fixture, keys) {
                    let stored = try await Self.post(client, envelope, token: fixture.operatorToken)
                    #expect(stored.status == .created, "setting up: \(String(buffer: stored.body))")
                }
                let before = try await fixture.store.trustRoots()
                let response = try await testCase.send(fixture, keys, client)
                #expect(response.status == testCase.status, "\(testCase.name): \(String(buffer: response.body))")
                #expect(Fixture.errorCode(response) == testCase.code, "\(testCase.name): \(String(buffer: response.body))")
                #expect(try await fixture.store.trustRoots() == before, "a refused root changed the chain")
            }
        }
    }

    @Test(
        "1 → 2 → 3 published; agents read the chain; desired states name the newest version; a retry is idempotent",
        arguments: StoreBackendKind.available
    )
    func publishesAndServesTheChain(_ kind: StoreBackendKind) async throws {
        try await Fixture.with(kind) { fixture in
            try await fixture.withRouter { client in
                let keys = try Keys()
                let (agentID, agentToken) = try await fixture.enroll(client, name: "web-1")
                let desiredURL = "/v1/agents/\(agentID)/desired-state"
                let before = try DesiredState(
                    json: Fixture.json(try await client.execute(uri: desiredURL, method: .get, headers: Fixture.bearer(agentToken)))
                )
                #expect(before.rootVersion == nil)

                let root2 = try Self.root2(fixture, keys)
                let first = try await Self.post(client, try Self.root1(fixture), token: fixture.operatorToken)
                #expect(first.status == .created, "\(String(buffer: first.body))")
                let second = try await Self.post(client, root2, token: fixture.operatorToken)
                #expect(second.status == .created, "\(String(buffer: second.body))")
                let retry = try await Self.post(client, root2, token: fixture.operatorToken)
                #expect(retry.status == .ok)
                let third = try await Self.post(client, try Self.root3(keys), token: fixture.operatorToken)
                #expect(third.status == .created, "\(String(buffer: third.body))")
                #expect(try await fixture.store.trustRoots().map(\.version) == [1, 2, 3])

                let after = try DesiredState(
                    json: Fixture.json(try await client.execute(uri: desiredURL, method: .get, headers: Fixture.bearer(agentToken)))
                )
                #expect(after.rootVersion == 3)
                // The agent fetches each step and verifies it itself: the controller serves the envelopes as stored.
                let served = try await client.execute(uri: "/v1/roots/2", method: .get, headers: Fixture.bearer(agentToken))
                #expect(served.status == .ok)
                let envelope = try Envelope(json: Fixture.json(served), path: "")
                #expect(envelope == root2)
                let pin = try TrustedRoot.fromTrustedKeys([fixture.signingKey.publicKey, fixture.secondKey.publicKey], threshold: 1)
                #expect(try pin.accepting(envelope).version == 2)

                let listing = try Fixture.json(try await client.execute(uri: "/v1/roots", method: .get, headers: Fixture.bearer(fixture.viewerToken)))
                #expect(listing.object?["current"]?.object?["version"] == .integer(3))
                #expect(listing.object?["pinned"]?.object?["fromTrustedKeys"] == .bool(true))
                let roots = FleetDocument.array(listing.object?["roots"]).compactMap(\.object)
                #expect(roots.map { $0["version"] } == [.integer(1), .integer(2), .integer(3)])
                #expect(roots.first?["publishedBy"] == .string("alice"))
            }
        }
    }

    @Test("releases are checked against the newest root: the revoked flag key is refused, the new release key accepted")
    func releasesFollowTheNewestRoot() async throws {
        try await Fixture.with { fixture in
            try await fixture.withRouter { client in
                let keys = try Keys()
                let artifact = try await fixture.upload(client, [1, 2, 3])
                #expect(try await fixture.publish(client, Fixture.release(serial: 1, artifact: artifact)).status == .created)
                #expect(try await Self.post(client, try Self.root2(fixture, keys), token: fixture.operatorToken).status == .created)

                let revoked = try await fixture.publish(client, Fixture.release(serial: 2, artifact: artifact), keys: [fixture.signingKey])
                #expect(revoked.status == .unprocessableContent)
                #expect(Fixture.errorCode(revoked) == "untrusted_key")
                let accepted = try await fixture.publish(client, Fixture.release(serial: 2, artifact: artifact), keys: [keys.release2])
                #expect(accepted.status == .created, "\(String(buffer: accepted.body))")
                #expect(try Fixture.json(accepted).object?["trustRootVersion"] == .integer(2))
                // Root keys are not release keys.
                let rootSigned = try await fixture.publish(client, Fixture.release(serial: 3, artifact: artifact), keys: [keys.root2])
                #expect(Fixture.errorCode(rootSigned) == "untrusted_key")
            }
        }
    }

    @Test("an expired newest root stops publishes with a clear error")
    func expiredRootStopsPublishes() async throws {
        let clock = TestClock()
        try await Fixture.with { fixture in
            // A second app over the same store with a clock that can jump forward.
            let app = try makeApplication(
                configuration: fixture.controller.core.configuration,
                store: fixture.store,
                logger: Fixture.logger,
                now: { clock.now }
            )
            try await app.application.test(.router) { client in
                let keys = try Keys()
                let artifact = try await fixture.upload(client, [1, 2, 3])
                let root = try Self.root2(fixture, keys, expiresAt: clock.now.addingTimeInterval(3600))
                #expect(try await Self.post(client, root, token: fixture.operatorToken).status == .created)
                #expect(
                    try await fixture.publish(client, Fixture.release(serial: 1, artifact: artifact, createdAt: clock.now), keys: [keys.release2])
                        .status == .created
                )
                clock.advance(by: 2 * 3600)
                let release = Fixture.release(serial: 2, artifact: artifact, createdAt: clock.now)
                let response = try await fixture.publish(client, release, keys: [keys.release2])
                #expect(response.status == .unprocessableContent)
                #expect(Fixture.errorCode(response) == "trust_root_expired")
                #expect(String(buffer: response.body).contains("root rotate"))
                #expect(try await fixture.store.latestSerial(service: "api") == 1)
            }
        }
    }

    @Test("a controller pinning a root file accepts only that root as version 1, and follows rotations from it")
    func pinnedRootFile() async throws {
        let keys = try Keys()
        let releaseKey = try SigningKey.generate()
        let rootKey = try SigningKey.generate()
        let pinnedEnvelope = try TestRoots.root(version: 1, rootKeys: [rootKey], releaseKeys: [releaseKey], signers: [rootKey])
        let pinned = try TrustedRoot.pinning(pinnedEnvelope)
        let pinRoot: (inout ControllerConfiguration) -> Void = { $0.trustAnchor = .root(pinned) }
        try await Fixture.with(adjust: pinRoot) { fixture in
            try await fixture.withRouter { client in
                let artifact = try await fixture.upload(client, [4, 5, 6])
                // The fixture's flag keys mean nothing here.
                #expect(Fixture.errorCode(try await fixture.publish(client, Fixture.release(serial: 1, artifact: artifact))) == "untrusted_key")
                #expect(try await fixture.publish(client, Fixture.release(serial: 1, artifact: artifact), keys: [releaseKey]).status == .created)
                let other = try TestRoots.root(version: 1, rootKeys: [rootKey], releaseKeys: [keys.release2], signers: [rootKey])
                #expect(Fixture.errorCode(try await Self.post(client, other, token: fixture.operatorToken)) == "root_does_not_match_pin")
                #expect(try await Self.post(client, pinnedEnvelope, token: fixture.operatorToken).status == .created)
                let next = try TestRoots.root(version: 2, rootKeys: [keys.root2], releaseKeys: [keys.release2], signers: [rootKey, keys.root2])
                #expect(try await Self.post(client, next, token: fixture.operatorToken).status == .created)
                #expect(try await fixture.publish(client, Fixture.release(serial: 2, artifact: artifact), keys: [keys.release2]).status == .created)
            }
        }
    }

    @Test("a pin changed under published roots: publishes fail with trust_chain_broken, the listing names the problem")
    func pinChangedUnderTheChain() async throws {
        try await Fixture.with { fixture in
            let keys = try Keys()
            try await fixture.withRouter { client in
                let published = try await Self.post(client, try Self.root2(fixture, keys), token: fixture.operatorToken)
                #expect(published.status == .created)
            }
            // The same database, served by a controller now started with another --trusted-key.
            var configuration = fixture.controller.core.configuration
            configuration.trustAnchor = .trustedKeys(try TrustPolicy(trustedKeys: [try SigningKey.generate().publicKey], threshold: 1))
            let app = try makeApplication(configuration: configuration, store: fixture.store, logger: Fixture.logger)
            try await app.application.test(.router) { client in
                let artifact = try await fixture.upload(client, [1, 2, 3])
                let release = try await fixture.publish(client, Fixture.release(serial: 1, artifact: artifact), keys: [keys.release2])
                #expect(release.status == .internalServerError)
                #expect(Fixture.errorCode(release) == "trust_chain_broken")
                #expect(String(buffer: release.body).contains("do not follow from the root it pins"), "\(String(buffer: release.body))")
                let root3 = try await Self.post(client, try Self.root3(keys), token: fixture.operatorToken)
                #expect(Fixture.errorCode(root3) == "trust_chain_broken")
                let listing = try Fixture.json(try await client.execute(uri: "/v1/roots", method: .get, headers: Fixture.bearer(fixture.viewerToken)))
                #expect(listing.object?["current"] == .null)
                let problem = FleetDocument.text(listing.object?["problem"])
                #expect(problem.contains("root version 2 is not signed by enough root keys of version 1"), "\(problem)")
                #expect(try await fixture.store.latestSerial(service: "api") == nil)
                #expect(try await fixture.store.trustRoots().map(\.version) == [2])
            }
        }
    }

    @Test("a publish wakes every parked long-poll with the new root version")
    func publishWakesLongPolls() async throws {
        try await Fixture.with { fixture in
            try await fixture.withRouter { client in
                let keys = try Keys()
                let (agentID, agentToken) = try await fixture.enroll(client, name: "web-1", services: ["worker"])
                let url = "/v1/agents/\(agentID)/desired-state"
                let first = try await client.execute(uri: url, method: .get, headers: Fixture.bearer(agentToken))
                let etag = try #require(first.headers[.eTag])
                async let parked = client.execute(uri: url + "?wait=30", method: .get, headers: Fixture.bearer(agentToken, [.ifNoneMatch: etag]))
                // Publish only once the poll is parked: it must be woken, not merely answered late.
                let hub = fixture.controller.core.desiredStates.hub
                let deadline = ContinuousClock.now + .seconds(10)
                while hub.waiterCount < 1 {
                    guard ContinuousClock.now < deadline else { throw FixtureError("the poll never parked") }
                    try await Task.sleep(for: .milliseconds(5))
                }
                let started = ContinuousClock.now
                #expect(try await Self.post(client, try Self.root2(fixture, keys), token: fixture.operatorToken).status == .created)
                let woken = try await parked
                #expect(woken.status == .ok)
                #expect(ContinuousClock.now - started < .seconds(20), "answered by the publish, not by the 30 s timeout")
                #expect(try DesiredState(json: Fixture.json(woken)).rootVersion == 2)
            }
        }
    }
}
