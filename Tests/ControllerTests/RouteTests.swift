import Foundation
import Hummingbird
import HummingbirdTesting
import Shared
import Synchronization
import TestSupport
import Testing

@testable import Controller

/// The API routes, in-process through the router.
@Suite struct RouteTests {
    typealias Fixture = ControllerFixture

    @Test func healthzAndMetricsAnswerWithoutToken() async throws {
        try await Fixture.with { fixture in
            try await fixture.withRouter { client in
                let health = try await client.execute(uri: "/healthz", method: .get)
                #expect(health.status == .ok)
                #expect(try Fixture.json(health) == .object(["status": .string("ok")]))
                let metrics = try await client.execute(uri: "/metrics", method: .get)
                #expect(metrics.status == .ok)
                let text = String(buffer: metrics.body)
                #expect(text.contains("ferry_releases_published_total 0"))
                #expect(text.contains("ferry_agents_count 0"))
                // Per-route request metrics, recorded with the status the client got.
                #expect(text.contains(#"ferry_http_requests_total{route="/healthz",method="GET",status="200"} 1"#))
                #expect(text.contains(#"ferry_http_request_duration_seconds_count{route="/healthz"} 1"#))
            }
        }
    }

    /// The fleet gauges count what the store holds at each scrape: an agent enrolled an hour ago that never reported is
    /// stale (three poll intervals are 90 s by default), one enrolled now is not.
    @Test func metricsCountEnrolledAndStaleAgents() async throws {
        try await Fixture.with { fixture in
            try await fixture.withRouter { client in
                _ = try await fixture.controller.core.store.enrollAgent(
                    proposedID: "agt_quiet",
                    name: "quiet",
                    hostname: "h",
                    services: ["api"],
                    tokenHash: Token.digest("fyt_quiet"),
                    at: Date().addingTimeInterval(-3600)
                )
                _ = try await fixture.enroll(client, name: "web-1")
                let metrics = try await client.execute(uri: "/metrics", method: .get)
                let text = String(buffer: metrics.body)
                #expect(text.contains("ferry_agents_count 2"), "\(text)")
                #expect(text.contains("ferry_agents_stale_count 1"), "\(text)")
            }
        }
    }

    /// A scrape answers while the database cannot (a PostgreSQL failover; here the store is closed under it): with
    /// the last fleet gauges and every other metric, not a 503. And however often the unauthenticated route is hit,
    /// the agents are counted at most once a second.
    @Test func metricsAnswerWhenTheDatabaseCannot() async throws {
        try await Fixture.with { fixture in
            try await fixture.withRouter { client in
                _ = try await fixture.enroll(client, name: "web-1")
                let first = String(buffer: try await client.execute(uri: "/metrics", method: .get).body)
                #expect(first.contains("ferry_agents_count 1"), "\(first)")
                _ = try await fixture.enroll(client, name: "web-2")
                try await Task.sleep(for: .milliseconds(1100))
                let counted = String(buffer: try await client.execute(uri: "/metrics", method: .get).body)
                #expect(counted.contains("ferry_agents_count 2"), "\(counted)")
                // Within the interval, the count stands (an interval of an hour here, so no machine is too slow for it).
                let core = fixture.controller.core
                let hourly = FleetGauges(interval: .seconds(3600))
                await hourly.refresh(core)
                _ = try await fixture.enroll(client, name: "web-3")
                await hourly.refresh(core)
                let registry = String(buffer: ByteBuffer(bytes: core.metrics.registry.emitToBuffer()))
                #expect(registry.contains("ferry_agents_count 2"), "\(registry)")

                try await fixture.controller.core.store.close()
                try await Task.sleep(for: .milliseconds(1100))
                let away = try await client.execute(uri: "/metrics", method: .get)
                #expect(away.status == .ok)
                let text = String(buffer: away.body)
                #expect(text.contains("ferry_agents_count 2") && text.contains("ferry_releases_published_total"), "\(text)")
            }
        }
    }

    @Test func artifactUploadIsIdempotentAndServedWithRangesAndETag() async throws {
        try await Fixture.with { fixture in
            try await fixture.withRouter { client in
                let bytes = Array("0123456789abcdef".utf8)
                let digest = SHA256.hash(bytes)
                let first = try await client.execute(
                    uri: "/v1/artifacts",
                    method: .post,
                    headers: Fixture.bearer(fixture.operatorToken, [ArtifactRoutes.digestHeader: digest.hex]),
                    body: ByteBuffer(bytes: bytes)
                )
                #expect(first.status == .created)
                #expect(
                    try Fixture.json(first)
                        == .object(["sha256": .string(digest.hex), "size": .integer(16), "url": .string("/v1/artifacts/\(digest.hex)")])
                )
                let again = try await client.execute(
                    uri: "/v1/artifacts",
                    method: .post,
                    headers: Fixture.bearer(fixture.operatorToken),
                    body: ByteBuffer(bytes: bytes)
                )
                #expect(again.status == .ok)
                // The file on disk is the content, under its digest, and no temporary file is left over.
                #expect(FileManager.default.contents(atPath: fixture.controller.core.artifacts.path(for: digest)) == Data(bytes))
                let leftovers = try FileManager.default.contentsOfDirectory(atPath: fixture.directory.path + "/artifacts/tmp")
                #expect(leftovers.isEmpty)

                let (agentID, agentToken) = try await fixture.enroll(client, name: "web-1")
                _ = agentID
                // An agent token fetches only artifacts of its services' releases.
                let reference = ArtifactReference(url: "/v1/artifacts/\(digest.hex)", sha256: digest, size: Int64(bytes.count))
                #expect(try await fixture.publish(client, Fixture.release(serial: 1, artifact: reference)).status == .created)
                let url = "/v1/artifacts/\(digest.hex)"
                let whole = try await client.execute(uri: url, method: .get, headers: Fixture.bearer(agentToken))
                #expect(whole.status == .ok)
                #expect(Array(whole.body.readableBytesView) == bytes)
                #expect(whole.headers[.eTag] == "\"\(digest.hex)\"")
                #expect(whole.headers[.cacheControl]?.contains("immutable") == true)
                #expect(whole.headers[.acceptRanges] == "bytes")

                let part = try await client.execute(uri: url, method: .get, headers: Fixture.bearer(agentToken, [.range: "bytes=4-7"]))
                #expect(part.status == .partialContent)
                #expect(String(buffer: part.body) == "4567")
                #expect(part.headers[.contentRange] == "bytes 4-7/16")

                let tail = try await client.execute(uri: url, method: .get, headers: Fixture.bearer(agentToken, [.range: "bytes=10-"]))
                #expect(String(buffer: tail.body) == "abcdef")
                let suffix = try await client.execute(uri: url, method: .get, headers: Fixture.bearer(agentToken, [.range: "bytes=-3"]))
                #expect(String(buffer: suffix.body) == "def")

                let cached = try await client.execute(
                    uri: url,
                    method: .get,
                    headers: Fixture.bearer(agentToken, [.ifNoneMatch: "\"\(digest.hex)\""])
                )
                #expect(cached.status == .notModified)
                #expect(cached.body.readableBytes == 0)

                let head = try await client.execute(uri: url, method: .head, headers: Fixture.bearer(fixture.operatorToken))
                #expect(head.status == .ok)
                #expect(head.headers[.contentLength] == "16")
                #expect(head.body.readableBytes == 0)
                let missing = try await client.execute(
                    uri: "/v1/artifacts/\(SHA256.hash([1, 2, 3]).hex)",
                    method: .head,
                    headers: Fixture.bearer(fixture.operatorToken)
                )
                #expect(missing.status == .notFound)
            }
        }
    }

    @Test func publishListAndServices() async throws {
        try await Fixture.with { fixture in
            try await fixture.withRouter { client in
                let artifact = try await fixture.upload(client, Array(repeating: 7, count: 100))
                let published = try await fixture.publish(client, Fixture.release(serial: 1, artifact: artifact))
                #expect(published.status == .created)
                let summary = try Fixture.json(published)
                #expect(summary.object?["serial"] == .integer(1))
                #expect(summary.object?["publishedBy"] == .string("alice"))
                #expect(summary.object?["verifiedBy"] == .array([.string(fixture.signingKey.publicKey.keyID)]))
                let second = try await fixture.publish(client, Fixture.release(serial: 5, version: "1.1.0", artifact: artifact))
                #expect(second.status == .created)

                let listing = try await client.execute(
                    uri: "/v1/services/api/releases",
                    method: .get,
                    headers: Fixture.bearer(fixture.operatorToken)
                )
                #expect(listing.status == .ok)
                let releases = FleetDocument.array(try Fixture.json(listing).object?["releases"])
                #expect(releases.map { $0.object?["serial"] } == [.integer(5), .integer(1)])
                // The envelope comes back as published, so rollback can read and re-sign its content.
                let envelope = try Envelope(json: releases[0].object?["envelope"] ?? .null, path: "envelope")
                #expect(try Release.decode(envelope.payload).version == "1.1.0")

                let limited = try await client.execute(
                    uri: "/v1/services/api/releases?limit=1",
                    method: .get,
                    headers: Fixture.bearer(fixture.operatorToken)
                )
                #expect(FleetDocument.array(try Fixture.json(limited).object?["releases"]).count == 1)
                let empty = try await client.execute(
                    uri: "/v1/services/other/releases",
                    method: .get,
                    headers: Fixture.bearer(fixture.operatorToken)
                )
                #expect(FleetDocument.array(try Fixture.json(empty).object?["releases"]).isEmpty)

                _ = try await fixture.enroll(client, name: "web-1", services: ["api", "worker"])
                let services = try await client.execute(uri: "/v1/services", method: .get, headers: Fixture.bearer(fixture.viewerToken))
                #expect(
                    try Fixture.json(services)
                        == .object([
                            "services": .array([
                                .object([
                                    "name": .string("api"), "latestSerial": .integer(5), "latestVersion": .string("1.1.0"),
                                    "releases": .integer(2), "agents": .integer(1),
                                ]),
                                .object([
                                    "name": .string("worker"), "latestSerial": .null, "latestVersion": .null, "releases": .integer(0),
                                    "agents": .integer(1),
                                ]),
                            ])
                        ])
                )
                let metrics = String(buffer: try await client.execute(uri: "/metrics", method: .get).body)
                #expect(metrics.contains("ferry_releases_published_total 2"))
            }
        }
    }

    /// A publish whose release is committed is answered 201 even when reading the new rollout's agent statuses then
    /// fails (here their table is gone; on PostgreSQL a statement timeout or a dropped connection): it used to be a 500,
    /// which told a CI pipeline the publish failed, and its retry was refused as a stale serial.
    @Test func aPublishCommittedIsAnsweredCreatedWhenItsRolloutViewCannotBeRead() async throws {
        try await Fixture.with { fixture in
            try await fixture.withRouter { client in
                let (agentID, _) = try await fixture.enroll(client, name: "web-1", services: ["api"])
                let artifact = try await fixture.upload(client, Array("artifact".utf8))
                try await fixture.store.readDB.raw("ALTER TABLE service_status RENAME TO service_status_gone").run()
                let published = try await fixture.publish(client, Fixture.release(serial: 1, artifact: artifact))
                #expect(published.status == .created, "\(String(buffer: published.body))")
                let rollout = try #require(try Fixture.json(published)["rollout"])
                let listed = rollout["waves"]?.arrayValue.flatMap { $0["agents"]?.arrayValue ?? [] } ?? []
                #expect(listed.compactMap { $0["id"]?.stringValue } == [agentID])
                #expect(rollout["counts"]?["pending"]?.intValue == 1)
                #expect(try await fixture.store.releases(service: "api", limit: 10).map(\.serial) == [1])
                try await fixture.store.readDB.raw("ALTER TABLE service_status_gone RENAME TO service_status").run()
            }
        }
    }

    /// The same signed release posted again (a retry whose first answer was lost after the commit) is answered 200
    /// with the stored release, nothing changed; another document under a stored serial is still `stale_serial`.
    @Test func aRepeatedPublishIsAnsweredAsStored() async throws {
        try await Fixture.with { fixture in
            try await fixture.withRouter { client in
                let artifact = try await fixture.upload(client, Array("artifact".utf8))
                let release = Fixture.release(serial: 1, artifact: artifact)
                let envelope = try Envelope.sign(payload: release.payload(), payloadType: Release.payloadType, with: [fixture.signingKey])
                func post(_ envelope: Envelope) async throws -> TestResponse {
                    try await client.execute(
                        uri: "/v1/releases",
                        method: .post,
                        headers: Fixture.bearer(fixture.operatorToken),
                        body: ByteBuffer(bytes: envelope.encoded())
                    )
                }
                let first = try await post(envelope)
                #expect(first.status == .created)
                let events = try await fixture.store.events(service: "api", limit: 100).count
                let again = try await post(envelope)
                #expect(again.status == .ok, "\(String(buffer: again.body))")
                #expect(try Fixture.json(again)["repeated"]?.boolValue == true)
                #expect(try Fixture.json(again)["serial"]?.intValue == 1)
                // Every field of the first answer, as a pipeline reading `.rollout.state` needs whichever it got.
                let firstFields = try #require(try Fixture.json(first).object)
                let againFields = try #require(try Fixture.json(again).object)
                #expect(Set(againFields.keys) == Set(firstFields.keys).union(["repeated"]), "\(againFields.keys.sorted())")
                for key in ["verifiedBy", "trustRootVersion"] { #expect(againFields[key] == firstFields[key], "\(key)") }
                #expect(againFields["rollout"]?.object?["state"] == firstFields["rollout"]?.object?["state"])
                #expect(try await fixture.store.releases(service: "api", limit: 10).map(\.serial) == [1])
                #expect(try await fixture.store.events(service: "api", limit: 100).count == events, "nothing happened")
                var other = release
                other.version = "1.0.1"
                let otherEnvelope = try Envelope.sign(payload: other.payload(), payloadType: Release.payloadType, with: [fixture.signingKey])
                let conflict = try await post(otherEnvelope)
                #expect(conflict.status == .conflict && Fixture.errorCode(conflict) == "stale_serial")
            }
        }
    }

    @Test func absoluteArtifactURLsNeedNoUpload() async throws {
        try await Fixture.with { fixture in
            try await fixture.withRouter { client in
                let digest = SHA256.hash(Array("elsewhere".utf8))
                let artifact = ArtifactReference(url: "https://artifacts.example.com/api-1.0.0.tgz", sha256: digest, size: 9)
                let response = try await fixture.publish(client, Fixture.release(serial: 1, artifact: artifact))
                #expect(response.status == .created)
            }
        }
    }

    @Test func thresholdTwoAcceptsTwoDistinctTrustedSignatures() async throws {
        try await Fixture.with(threshold: 2) { fixture in
            try await fixture.withRouter { client in
                let artifact = try await fixture.upload(client, [1, 2, 3])
                // The same key twice counts once: below the threshold the release is stored awaiting approval (the
                // two-person rule of issue 16; before it, the publish was refused) and reaches no agent.
                let same = try await fixture.publish(
                    client,
                    Fixture.release(serial: 1, artifact: artifact),
                    keys: [fixture.signingKey, fixture.signingKey]
                )
                #expect(same.status == .created)
                let sameBody = try Fixture.json(same).object ?? [:]
                #expect(sameBody["awaitingApproval"] == .bool(true))
                #expect(sameBody["signedBy"] == .array([.string(fixture.signingKey.publicKey.keyID)]))
                #expect(try await fixture.store.currentRollouts(for: ["api"]).first?.state == .awaitingApproval)
                let both = try await fixture.publish(
                    client,
                    Fixture.release(serial: 2, artifact: artifact),
                    keys: [fixture.signingKey, fixture.secondKey]
                )
                #expect(both.status == .created)
                #expect(try Fixture.json(both).object?["awaitingApproval"] == .bool(false))
                #expect(try await fixture.store.currentRollouts(for: ["api"]).first?.state == .completed)
            }
        }
    }

    @Test func enrollDesiredStateAndConditionalRequests() async throws {
        try await Fixture.with { fixture in
            try await fixture.withRouter { client in
                let (id, token) = try await fixture.enroll(client, name: "web-1", services: ["api", "worker"])
                #expect(id.hasPrefix("agt_"))
                #expect(token.hasPrefix("fyt_"))
                let url = "/v1/agents/\(id)/desired-state"
                let empty = try await client.execute(uri: url, method: .get, headers: Fixture.bearer(token))
                #expect(empty.status == .ok)
                let emptyState = try DesiredState(json: Fixture.json(empty))
                #expect(emptyState == DesiredState(agentID: id, pollSeconds: 15, releases: []))
                let emptyTag = try #require(empty.headers[.eTag])
                #expect(emptyTag == "\"\(SHA256.hash(Array(empty.body.readableBytesView)).hex)\"")

                let unchanged = try await client.execute(uri: url, method: .get, headers: Fixture.bearer(token, [.ifNoneMatch: emptyTag]))
                #expect(unchanged.status == .notModified)
                #expect(unchanged.headers[.eTag] == emptyTag)

                let artifact = try await fixture.upload(client, [9, 9, 9])
                _ = try await fixture.publish(client, Fixture.release(serial: 1, artifact: artifact))
                _ = try await fixture.publish(client, Fixture.release(service: "other", serial: 1, artifact: artifact))
                let changed = try await client.execute(uri: url, method: .get, headers: Fixture.bearer(token, [.ifNoneMatch: emptyTag]))
                #expect(changed.status == .ok)
                let state = try DesiredState(json: Fixture.json(changed))
                // Only services this agent runs, each as the signed envelope.
                #expect(state.releases.count == 1)
                let verified = try TrustPolicy(trustedKeys: [fixture.signingKey.publicKey]).verify(state.releases[0], expecting: Release.payloadType)
                #expect(try Release.decode(verified.payload).service == "api")
                #expect(changed.headers[.eTag] != emptyTag)

                // A weak form and a list of tags match too.
                let weak = try await client.execute(
                    uri: url,
                    method: .get,
                    headers: Fixture.bearer(token, [.ifNoneMatch: "\"nope\", W/\(changed.headers[.eTag] ?? "")"])
                )
                #expect(weak.status == .notModified)
            }
        }
    }

    /// Re-enrolling an existing name is an operator's `--replace` (an enroll token gets 409: SecurityTests).
    @Test func reEnrollingKeepsTheIdAndRotatesTheToken() async throws {
        try await Fixture.with { fixture in
            try await fixture.withRouter { client in
                let first = try await fixture.enroll(client, name: "web-1", services: ["api"])
                let ok = try await client.execute(uri: "/v1/agents/\(first.id)/desired-state", method: .get, headers: Fixture.bearer(first.token))
                #expect(ok.status == .ok)
                let second = try await fixture.enroll(client, name: "web-1", services: ["api", "worker"], replacingWith: fixture.operatorToken)
                #expect(second.id == first.id)
                let old = try await client.execute(uri: "/v1/agents/\(first.id)/desired-state", method: .get, headers: Fixture.bearer(first.token))
                #expect(old.status == .unauthorized)
                let agent = try #require(try await fixture.store.agent(id: first.id))
                #expect(agent.services == ["api", "worker"])
            }
        }
    }

    @Test func statusReportsUpdateTheFleetAndKeepABoundedHistory() async throws {
        let shortHistory: (inout ControllerConfiguration) -> Void = { $0.statusHistoryLimit = 3 }
        try await Fixture.with(adjust: shortHistory) { fixture in
            try await fixture.withRouter { client in
                let (id, token) = try await fixture.enroll(client, name: "web-1", services: ["api"])
                for serial in 1...5 {
                    let report = StatusReport(
                        agentVersion: "0.1.0",
                        hostname: "web-1.internal",
                        processManager: "builtin",
                        services: [
                            ServiceStatus(
                                service: "api",
                                serial: Int64(serial),
                                version: "1.0.\(serial)",
                                targetSerial: Int64(serial),
                                phase: .running,
                                message: "running serial \(serial)",
                                health: .healthy,
                                processes: [
                                    ProcessReport(
                                        name: "api",
                                        pmId: 0,
                                        status: "online",
                                        restarts: 0,
                                        uptimeSeconds: 5,
                                        memoryBytes: 1000,
                                        cpuPercent: 0.5
                                    )
                                ]
                            )
                        ]
                    )
                    let response = try await client.execute(
                        uri: "/v1/agents/\(id)/status",
                        method: .post,
                        headers: Fixture.bearer(token),
                        body: ByteBuffer(bytes: report.json.encoded())
                    )
                    #expect(response.status == .noContent)
                }
                let history = try await fixture.store.statusHistory(agentID: id, limit: 100)
                #expect(history.map { $0.report.services[0].serial } == [5, 4, 3])

                let fleet = try await client.execute(uri: "/v1/fleet", method: .get, headers: Fixture.bearer(fixture.viewerToken))
                #expect(fleet.status == .ok)
                let agents = FleetDocument.agents(try Fixture.json(fleet))
                #expect(agents.count == 1)
                #expect(agents[0]["hostname"] == .string("web-1.internal"))
                #expect(agents[0]["agentVersion"] == .string("0.1.0"))
                #expect(agents[0]["stale"] == .bool(false))
                let status = try #require(FleetDocument.array(agents[0]["services"]).first?.object)
                #expect(status["version"] == .string("1.0.5"))
                #expect(status["phase"] == .string("running"))
                #expect(status["health"] == .string("healthy"))
            }
        }
    }

    @Test func dashboardLogsInWithBasicAuthAndMarksStaleAgents() async throws {
        let clock = TestClock()
        let tenSeconds: (inout ControllerConfiguration) -> Void = { $0.pollInterval = .seconds(10) }
        try await Fixture.with(adjust: tenSeconds) { fixture in
            // A second app over the same store with a clock that can jump forward.
            let app = try makeApplication(
                configuration: fixture.controller.core.configuration,
                store: fixture.store,
                logger: Fixture.logger,
                now: { clock.now }
            )
            try await app.application.test(.router) { client in
                let (fresh, freshToken) = try await fixture.enroll(client, name: "fresh-<b>", services: ["api"])
                let (_, _) = try await fixture.enroll(client, name: "silent", services: ["api"])
                clock.advance(by: 60)
                let report = StatusReport(agentVersion: "0.1.0", hostname: "h", processManager: "pm2", services: [])
                _ = try await client.execute(
                    uri: "/v1/agents/\(fresh)/status",
                    method: .post,
                    headers: Fixture.bearer(freshToken),
                    body: ByteBuffer(bytes: report.json.encoded())
                )

                let challenge = try await client.execute(uri: "/", method: .get)
                #expect(challenge.status == .unauthorized)
                #expect(challenge.headers[.wwwAuthenticate]?.hasPrefix("Basic") == true)

                let credentials = Data("anyone:\(fixture.viewerToken)".utf8).base64EncodedString()
                let page = try await client.execute(uri: "/", method: .get, headers: [.authorization: "Basic \(credentials)"])
                #expect(page.status == .ok)
                #expect(page.headers[.contentType]?.hasPrefix("text/html") == true)
                let html = String(buffer: page.body)
                #expect(html.contains("2 agents · 1 stale"))
                // Names are escaped, and nothing is loaded from elsewhere.
                #expect(html.contains("fresh-&lt;b&gt;"))
                #expect(!html.contains("fresh-<b>"))
                #expect(!html.contains("src=") && !html.contains("href="))
                let staleRow = try #require(html.range(of: "<tr class=\"stale\""))
                #expect(html[staleRow.upperBound...].contains("silent"))

                let asAgent = try await client.execute(uri: "/", method: .get, headers: Fixture.bearer(freshToken))
                #expect(asAgent.status == .forbidden)
            }
        }
    }
}

/// A wall clock tests move by hand.
final class TestClock: Sendable {
    private let instant = Mutex(Date(timeIntervalSince1970: 1_790_000_000))
    var now: Date { instant.withLock { $0 } }
    func advance(by seconds: TimeInterval) { instant.withLock { $0 = $0.addingTimeInterval(seconds) } }
}
