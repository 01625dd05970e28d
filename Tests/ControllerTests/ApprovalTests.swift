import Foundation
import Hummingbird
import HummingbirdTesting
import Shared
import Synchronization
import TestSupport
import Testing

@testable import Controller

/// The two-person rule on the controller: with a release threshold of 2 (root 1 built from two trusted keys, threshold
/// 2), a release signed once is stored but reaches no agent until a second release key approves it.
@Suite("Release approvals")
struct ApprovalTests {
    typealias Fixture = ControllerFixture

    /// A stored release signed by `signingKey` alone, awaiting approval, and an enrolled agent of its service.
    struct World: Sendable {
        let fixture: Fixture
        let client: any TestClientProtocol
        let agent: (id: String, token: String)
        let envelope: Envelope
        let artifact: ArtifactReference

        static func make(_ fixture: Fixture, _ client: any TestClientProtocol) async throws -> World {
            let agent = try await fixture.enroll(client, name: "web-1")
            let artifact = try await fixture.upload(client, Array("artifact".utf8))
            let release = Fixture.release(serial: 1, artifact: artifact)
            let envelope = try Envelope.sign(payload: release.payload(), payloadType: Release.payloadType, with: [fixture.signingKey])
            let published = try await client.execute(
                uri: "/v1/releases",
                method: .post,
                headers: Fixture.bearer(fixture.operatorToken),
                body: ByteBuffer(bytes: envelope.encoded())
            )
            #expect(published.status == .created, "\(String(buffer: published.body))")
            return World(fixture: fixture, client: client, agent: agent, envelope: envelope, artifact: artifact)
        }

        /// `POST .../signatures` with signatures of the stored payload by `keys` (or a raw body).
        func approve(_ keys: [SigningKey], serial: Int64 = 1, token: String? = nil, body: [UInt8]? = nil) async throws -> TestResponse {
            let message = Envelope.pae(payloadType: envelope.payloadType, payload: envelope.payload)
            let signatures = try keys.map { Envelope.json(of: Envelope.Signature(keyid: $0.publicKey.keyID, sig: try $0.signature(for: message))) }
            let bytes = body ?? Array(JSONValue.object(["signatures": .array(signatures)]).encoded())
            return try await client.execute(
                uri: "/v1/services/api/releases/\(serial)/signatures",
                method: .post,
                headers: Fixture.bearer(token ?? fixture.operatorToken),
                body: ByteBuffer(bytes: bytes)
            )
        }

        func desiredState() async throws -> DesiredState {
            let response = try await client.execute(uri: "/v1/agents/\(agent.id)/desired-state", method: .get, headers: Fixture.bearer(agent.token))
            return try DesiredState(json: Fixture.json(response))
        }

        func rolloutState() async throws -> RolloutState? {
            try await fixture.store.currentRollouts(for: ["api"]).first?.state
        }
    }

    @Test("signed once: stored, awaiting approval, served to no agent; approved by a second key: served with both signatures")
    func approvalFlow() async throws {
        try await Fixture.with(threshold: 2) { fixture in
            try await fixture.withRouter { client in
                let world = try await World.make(fixture, client)
                #expect(try await world.rolloutState() == .awaitingApproval)
                #expect(try await world.desiredState().releases.isEmpty)
                let stored = try #require(try await fixture.store.releases(service: "api", limit: 1).first)
                #expect(stored.signedBy == [fixture.signingKey.publicKey.keyID])
                #expect(stored.signaturesRequired == 2)

                // The fleet shows it awaiting approval, with who signed.
                let fleet = try Fixture.json(try await client.execute(uri: "/v1/fleet", method: .get, headers: Fixture.bearer(fixture.viewerToken)))
                let approvals = FleetDocument.array(fleet.object?["approvals"]).compactMap(\.object)
                #expect(approvals.count == 1)
                #expect(approvals.first?["serial"] == .integer(1))
                #expect(approvals.first?["signedBy"] == .array([.string(fixture.signingKey.publicKey.keyID)]))
                #expect(approvals.first?["signaturesRequired"] == .integer(2))
                let html = try await client.execute(uri: "/", method: .get, headers: Fixture.bearer(fixture.viewerToken))
                #expect(String(buffer: html.body).contains("data-approval-serial=\"1\""))

                let approved = try await world.approve([fixture.secondKey])
                #expect(approved.status == .ok, "\(String(buffer: approved.body))")
                let answer = try Fixture.json(approved).object ?? [:]
                #expect(answer["awaitingApproval"] == .bool(false))
                #expect(answer["rollout"]?.object?["state"] == .string("completed"))
                #expect(try await world.rolloutState() == .completed)

                let desired = try await world.desiredState()
                let served = try #require(desired.releases.first)
                #expect(served.payload == world.envelope.payload)
                #expect(Set(served.signatures.map(\.keyid)) == [fixture.signingKey.publicKey.keyID, fixture.secondKey.publicKey.keyID])
                // What agents receive meets the threshold under the same root.
                let root = try TrustedRoot.fromTrustedKeys([fixture.signingKey.publicKey, fixture.secondKey.publicKey], threshold: 2)
                #expect(try root.verifyRelease(served).keyIDs.count == 2)
                let events = try await fixture.store.events(service: "api", limit: 10)
                #expect(events.contains { $0.kind == .approved && $0.message.contains("approved by alice") })

                let again = try await world.approve([fixture.secondKey])
                #expect(again.status == .conflict)
                #expect(Fixture.errorCode(again) == "not_awaiting_approval")
            }
        }
    }

    struct Hostile: Sendable, CustomTestStringConvertible {
        let name: String
        let send: @Sendable (World) async throws -> TestResponse
        let status: HTTPResponse.Status
        let code: String
        var testDescription: String { "\(name) → \(status.code) \(code)" }
    }

    static let hostile: [Hostile] = [
        Hostile(
            name: "the publisher's key again",
            send: { try await $0.approve([$0.fixture.signingKey]) },
            status: .conflict,
            code: "already_signed"
        ),
        Hostile(
            name: "the second key twice in one approval",
            send: { try await $0.approve([$0.fixture.secondKey, $0.fixture.secondKey]) },
            status: .conflict,
            code: "already_signed"
        ),
        Hostile(
            name: "a key the root does not list",
            send: { try await $0.approve([$0.fixture.untrustedKey]) },
            status: .unprocessableContent,
            code: "untrusted_key"
        ),
        Hostile(
            name: "a signature over another payload",
            send: { world in
                let other = Fixture.release(serial: 1, version: "6.6.6", artifact: world.artifact)
                let key = world.fixture.secondKey
                let sig = try key.signature(for: Envelope.pae(payloadType: Release.payloadType, payload: other.payload()))
                let body = JSONValue.object(["signatures": .array([Envelope.json(of: .init(keyid: key.publicKey.keyID, sig: sig))])]).encoded()
                return try await world.approve([], body: Array(body))
            },
            status: .unprocessableContent,
            code: "bad_signature"
        ),
        Hostile(name: "no signatures", send: { try await $0.approve([]) }, status: .unprocessableContent, code: "invalid_document"),
        Hostile(
            name: "a signature of 63 bytes",
            send: { world in
                let body = #"{"signatures":[{"keyid":"x","sig":"\#(Data(repeating: 1, count: 63).base64EncodedString())"}]}"#
                return try await world.approve([], body: Array(body.utf8))
            },
            status: .unprocessableContent,
            code: "invalid_document"
        ),
        Hostile(
            name: "an unknown field",
            send: { try await $0.approve([], body: Array(#"{"signatures":[],"approve":true}"#.utf8)) },
            status: .badRequest,
            code: "unknown_field"
        ),
        Hostile(
            name: "an unknown serial",
            send: { try await $0.approve([$0.fixture.secondKey], serial: 9) },
            status: .notFound,
            code: "unknown_release"
        ),
        Hostile(
            name: "a serial that is not a number",
            send: { world in
                try await world.client.execute(
                    uri: "/v1/services/api/releases/one/signatures",
                    method: .post,
                    headers: Fixture.bearer(world.fixture.operatorToken),
                    body: ByteBuffer(string: "{}")
                )
            },
            status: .badRequest,
            code: "invalid_serial"
        ),
        Hostile(
            name: "a viewer approves",
            send: { try await $0.approve([$0.fixture.secondKey], token: $0.fixture.viewerToken) },
            status: .forbidden,
            code: "forbidden"
        ),
        Hostile(
            name: "an agent approves",
            send: { try await $0.approve([$0.fixture.secondKey], token: $0.agent.token) },
            status: .forbidden,
            code: "forbidden"
        ),
        Hostile(
            name: "a release superseded by a newer publish",
            send: { world in
                let newer = Fixture.release(serial: 2, artifact: world.artifact)
                let published = try await world.fixture.publish(world.client, newer, keys: [world.fixture.signingKey])
                #expect(published.status == .created)
                return try await world.approve([world.fixture.secondKey])
            },
            status: .conflict,
            code: "not_awaiting_approval"
        ),
        Hostile(
            name: "a release whose rollout was aborted (rejected)",
            send: { world in
                let aborted = try await world.client.execute(
                    uri: "/v1/services/api/rollout/abort",
                    method: .post,
                    headers: Fixture.bearer(world.fixture.operatorToken)
                )
                #expect(aborted.status == .ok, "\(String(buffer: aborted.body))")
                return try await world.approve([world.fixture.secondKey])
            },
            status: .conflict,
            code: "not_awaiting_approval"
        ),
    ]

    @Test("hostile approvals get their specific error; the release still reaches no agent", arguments: hostile)
    func hostileApproval(_ testCase: Hostile) async throws {
        try await Fixture.with(threshold: 2) { fixture in
            try await fixture.withRouter { client in
                let world = try await World.make(fixture, client)
                let response = try await testCase.send(world)
                #expect(response.status == testCase.status, "\(testCase.name): \(String(buffer: response.body))")
                #expect(Fixture.errorCode(response) == testCase.code, "\(testCase.name): \(String(buffer: response.body))")
                #expect(try await world.desiredState().releases.isEmpty, "an unapproved release reached an agent")
                let stored = try #require(try await fixture.store.releases([ReleaseKey(service: "api", serial: 1)]).first)
                #expect(stored.envelope == world.envelope)
            }
        }
    }

    /// Approved the day after it expired, a release would start a rollout that every agent refuses (a staged one halts,
    /// an `all` one marks the whole service failing), and the approver was told "approved".
    @Test func aReleaseThatExpiredWhileAwaitingApprovalCannotBeApproved() async throws {
        let skew = Mutex<TimeInterval>(0)
        let clock: @Sendable () -> Date = { Date().addingTimeInterval(skew.withLock { $0 }) }
        try await Fixture.with(threshold: 2, now: clock) { fixture in
            try await fixture.withRouter { client in
                let world = try await World.make(fixture, client)
                skew.withLock { $0 = 86_400 + 3_600 }
                let response = try await world.approve([fixture.secondKey])
                #expect(response.status == .unprocessableContent, "\(String(buffer: response.body))")
                #expect(Fixture.errorCode(response) == "release_expired", "\(String(buffer: response.body))")
                #expect(try await world.rolloutState() == .awaitingApproval)
                #expect(try await world.desiredState().releases.isEmpty)
            }
        }
    }

    /// Serial 1 of `api` published with both keys, then serial 2 with strategy `one-at-a-time` signed by one key
    /// (awaiting approval); `approve()` adds the second key's signature.
    struct Staged {
        let fixture: Fixture
        let client: any TestClientProtocol
        let envelope: Envelope

        static func publish(_ fixture: Fixture, _ client: any TestClientProtocol) async throws -> Staged {
            let artifact = try await fixture.upload(client, [7, 7, 7])
            let first = try await fixture.publish(
                client,
                Fixture.release(serial: 1, artifact: artifact),
                keys: [fixture.signingKey, fixture.secondKey]
            )
            #expect(first.status == .created)
            let release = Fixture.release(serial: 2, version: "2.0.0", artifact: artifact)
            let envelope = try Envelope.sign(payload: release.payload(), payloadType: Release.payloadType, with: [fixture.signingKey])
            let published = try await client.execute(
                uri: "/v1/releases?strategy=one-at-a-time",
                method: .post,
                headers: Fixture.bearer(fixture.operatorToken),
                body: ByteBuffer(bytes: envelope.encoded())
            )
            #expect(published.status == .created)
            return Staged(fixture: fixture, client: client, envelope: envelope)
        }

        func approve() async throws -> TestResponse {
            let message = Envelope.pae(payloadType: Release.payloadType, payload: envelope.payload)
            let signature = Envelope.json(of: .init(keyid: "", sig: try fixture.secondKey.signature(for: message)))
            return try await client.execute(
                uri: "/v1/services/api/releases/2/signatures",
                method: .post,
                headers: Fixture.bearer(fixture.operatorToken),
                body: ByteBuffer(bytes: JSONValue.object(["signatures": .array([signature])]).encoded())
            )
        }
    }

    @Test("a staged rollout starts its waves only once approved, and the stable serial keeps serving meanwhile")
    func stagedRolloutWaitsForApproval() async throws {
        try await Fixture.with(threshold: 2) { fixture in
            try await fixture.withRouter { client in
                let agent = try await fixture.enroll(client, name: "web-1")
                let staged = try await Staged.publish(fixture, client)
                let rollout = try #require(try await fixture.store.currentRollouts(for: ["api"]).first)
                #expect(rollout.state == .awaitingApproval)
                #expect(rollout.stableSerial == 1)
                #expect(rollout.reachedCount == 0)
                let desired = try DesiredState(
                    json: Fixture.json(
                        try await client.execute(uri: "/v1/agents/\(agent.id)/desired-state", method: .get, headers: Fixture.bearer(agent.token))
                    )
                )
                #expect(try desired.releases.map { try Release.decode($0.payload).serial } == [1])
                // The rollout's page says so: wave 0 of 1, no agent reached (it said wave 1, as if the first wave had it).
                let page = try await client.execute(uri: "/rollouts/api/2", method: .get, headers: Fixture.bearer(fixture.operatorToken))
                let html = String(buffer: page.body)
                #expect(page.status == .ok)
                #expect(html.contains("· awaiting-approval · wave 0/1 ·"), "\(html.prefix(2000))")

                let approved = try await staged.approve()
                #expect(approved.status == .ok, "\(String(buffer: approved.body))")
                let started = try #require(try await fixture.store.currentRollouts(for: ["api"]).first)
                #expect(started.state == .rolling)
                #expect(started.currentWave == 0)
                #expect(started.intendedSerial(for: agent.id) == 2)
            }
        }
    }

    /// Every agent the release was published to is removed while it awaits approval (an instance refresh) and two new
    /// ones enroll: approved, the rollout starts over the service's agents as they are, one at a time. It used to
    /// start from the members stored at the publish, none left, and complete "to all 0 agents": serial 2 became the
    /// stable serial of both new agents at once, with no wave and no health gate.
    @Test func anApprovalRollsOutToTheAgentsEnrolledWhenItIsGiven() async throws {
        try await Fixture.with(threshold: 2) { fixture in
            try await fixture.withRouter { client in
                _ = try await fixture.enroll(client, name: "web-1")
                let staged = try await Staged.publish(fixture, client)
                let removed = try await client.execute(uri: "/v1/agents/web-1", method: .delete, headers: Fixture.bearer(fixture.operatorToken))
                #expect(removed.status == .ok, "\(String(buffer: removed.body))")
                let fresh = [try await fixture.enroll(client, name: "web-2"), try await fixture.enroll(client, name: "web-3")]
                let approved = try await staged.approve()
                #expect(approved.status == .ok, "\(String(buffer: approved.body))")
                let answered = try Fixture.json(approved).object?["rollout"]?.object ?? [:]
                #expect(answered["state"] == .string("rolling"), "\(answered)")
                let started = try #require(try await fixture.store.currentRollouts(for: ["api"]).first)
                #expect(started.state == .rolling)
                #expect(started.agentOrder == fresh.map(\.id))
                #expect(fresh.map { started.intendedSerial(for: $0.id) } == [2, 1], "the first wave is one agent; the other waits for it")
            }
        }
    }
}
