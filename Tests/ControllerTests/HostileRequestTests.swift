import Foundation
import Hummingbird
import HummingbirdTesting
import Shared
import Testing

@testable import Controller

/// One hostile or mistaken request and the exact answer it must get.
struct HostileCase: Sendable, CustomTestStringConvertible {
    let name: String
    var threshold = 1
    let status: HTTPResponse.Status
    let code: String
    let send: @Sendable (HostileWorld) async throws -> TestResponse

    var testDescription: String { "\(name) → \(status.code) \(code)" }
}

/// What every hostile case starts from: two enrolled agents, one stored artifact, release serial 1 of `api`.
struct HostileWorld: Sendable {
    let fixture: ControllerFixture
    let client: any TestClientProtocol
    let agentA: (id: String, token: String)
    let agentB: (id: String, token: String)
    let artifact: ArtifactReference

    /// Small limits so the size cases stay small.
    static let artifactLimit: Int64 = 1024
    static let statusLimit = 2048

    static func make(_ fixture: ControllerFixture, _ client: any TestClientProtocol) async throws -> HostileWorld {
        let agentA = try await fixture.enroll(client, name: "agent-a", services: ["api"])
        let agentB = try await fixture.enroll(client, name: "agent-b", services: ["api"])
        let artifact = try await fixture.upload(client, Array("artifact".utf8))
        let first = try await fixture.publish(
            client,
            ControllerFixture.release(serial: 1, artifact: artifact),
            keys: [fixture.signingKey, fixture.secondKey]
        )
        #expect(first.status == .created)
        return HostileWorld(fixture: fixture, client: client, agentA: agentA, agentB: agentB, artifact: artifact)
    }

    func send(
        _ method: HTTPRequest.Method,
        _ uri: String,
        token: String?,
        headers: HTTPFields = [:],
        body: [UInt8]? = nil
    ) async throws -> TestResponse {
        var fields = headers
        if let token { fields[.authorization] = "Bearer \(token)" }
        return try await client.execute(uri: uri, method: method, headers: fields, body: body.map { ByteBuffer(bytes: $0) })
    }

    var operatorToken: String { fixture.operatorToken }

    /// Publishes an envelope given as raw bytes.
    func publishRaw(_ bytes: [UInt8]) async throws -> TestResponse {
        try await send(.post, "/v1/releases", token: operatorToken, body: bytes)
    }

    /// Publishes a release signed by `keys`.
    func publish(_ release: Release, keys: [SigningKey]? = nil) async throws -> TestResponse {
        try await send(.post, "/v1/releases", token: operatorToken, body: Array(fixture.envelope(release, keys: keys).readableBytesView))
    }

    func release(serial: Int64 = 2, service: String = "api", artifact: ArtifactReference? = nil) -> Release {
        ControllerFixture.release(service: service, serial: serial, artifact: artifact ?? self.artifact)
    }

    /// A valid status report body for agent A, as JSON text to tamper with.
    static let statusJSON =
        #"{"agentVersion":"0.1.0","hostname":"a","processManager":"builtin","services":[{"service":"api","phase":"running","message":"ok","health":"healthy","processes":[]}]}"#
}

@Suite struct HostileRequestTests {
    static let cases: [HostileCase] = [
        // Authentication and roles.
        HostileCase(name: "no token", status: .unauthorized, code: "unauthorized") { world in
            try await world.send(.get, "/v1/fleet", token: nil)
        },
        HostileCase(name: "unknown token", status: .unauthorized, code: "unauthorized") { world in
            try await world.send(.get, "/v1/fleet", token: Token.generate())
        },
        HostileCase(name: "not a Ferry token", status: .unauthorized, code: "unauthorized") { world in
            try await world.send(.get, "/v1/fleet", token: "hunter2")
        },
        HostileCase(name: "unknown auth scheme", status: .unauthorized, code: "unauthorized") { world in
            try await world.send(.get, "/v1/fleet", token: nil, headers: [.authorization: "Token \(world.operatorToken)"])
        },
        HostileCase(name: "viewer publishes", status: .forbidden, code: "forbidden") { world in
            try await world.send(.post, "/v1/releases", token: world.fixture.viewerToken, body: Array("{}".utf8))
        },
        HostileCase(name: "enroll token reads the fleet", status: .forbidden, code: "forbidden") { world in
            try await world.send(.get, "/v1/fleet", token: world.fixture.enrollToken)
        },
        HostileCase(name: "agent uploads an artifact", status: .forbidden, code: "forbidden") { world in
            try await world.send(.post, "/v1/artifacts", token: world.agentA.token, body: [1, 2, 3])
        },
        HostileCase(name: "operator reads an agent's desired state", status: .forbidden, code: "forbidden") { world in
            try await world.send(.get, "/v1/agents/\(world.agentA.id)/desired-state", token: world.operatorToken)
        },
        HostileCase(name: "agent reads another agent's desired state", status: .forbidden, code: "forbidden") { world in
            try await world.send(.get, "/v1/agents/\(world.agentB.id)/desired-state", token: world.agentA.token)
        },
        HostileCase(name: "agent reports for another agent", status: .forbidden, code: "forbidden") { world in
            try await world.send(.post, "/v1/agents/\(world.agentB.id)/status", token: world.agentA.token, body: Array(HostileWorld.statusJSON.utf8))
        },
        HostileCase(name: "viewer lists release envelopes", status: .forbidden, code: "forbidden") { world in
            try await world.send(.get, "/v1/services/api/releases", token: world.fixture.viewerToken)
        },
        // Signatures.
        HostileCase(name: "payload changed after signing", status: .unprocessableContent, code: "bad_signature") { world in
            var envelope = try Envelope.sign(
                payload: world.release().payload(),
                payloadType: Release.payloadType,
                with: [world.fixture.signingKey]
            )
            envelope.payload = world.release(serial: 99).payload()
            return try await world.publishRaw(Array(envelope.encoded()))
        },
        HostileCase(name: "signed by an untrusted key", status: .unprocessableContent, code: "untrusted_key") { world in
            try await world.publish(world.release(), keys: [world.fixture.untrustedKey])
        },
        // One trusted signature of two required is stored awaiting approval (two-person rule, ApprovalTests); with no
        // trusted signature at all it is refused.
        HostileCase(name: "threshold 2, no trusted signature", threshold: 2, status: .unprocessableContent, code: "untrusted_key") { world in
            try await world.publish(world.release(), keys: [world.fixture.untrustedKey, world.fixture.untrustedKey])
        },
        HostileCase(name: "wrong payload type", status: .unprocessableContent, code: "wrong_payload_type") { world in
            let envelope = try Envelope.sign(
                payload: world.release().payload(),
                payloadType: "application/vnd.ferry.other+json",
                with: [world.fixture.signingKey]
            )
            return try await world.publishRaw(Array(envelope.encoded()))
        },
        // Release content.
        // Another document under the latest serial (the very same one again is a repeat, answered 200:
        // `RouteTests.aRepeatedPublishIsAnsweredAsStored`).
        HostileCase(name: "stale serial (same as latest)", status: .conflict, code: "stale_serial") { world in
            var release = world.release(serial: 1)
            release.version = "1.0.1-other"
            return try await world.publish(release)
        },
        HostileCase(name: "signed but invalid release", status: .unprocessableContent, code: "invalid_release") { world in
            var json = world.release().json.object ?? [:]
            json["service"] = .string("Bad Name")
            let envelope = try Envelope.sign(
                payload: Array(JSONValue.object(json).encoded()),
                payloadType: Release.payloadType,
                with: [world.fixture.signingKey]
            )
            return try await world.publishRaw(Array(envelope.encoded()))
        },
        HostileCase(name: "signed release with an unknown field", status: .unprocessableContent, code: "invalid_release") { world in
            var json = world.release().json.object ?? [:]
            json["rolloutStrategy"] = .string("yolo")
            let envelope = try Envelope.sign(
                payload: Array(JSONValue.object(json).encoded()),
                payloadType: Release.payloadType,
                with: [world.fixture.signingKey]
            )
            return try await world.publishRaw(Array(envelope.encoded()))
        },
        HostileCase(name: "expired release", status: .unprocessableContent, code: "release_expired") { world in
            let old = ControllerFixture.release(serial: 2, artifact: world.artifact, createdAt: Date(timeIntervalSinceNow: -7200), expiresIn: 3600)
            return try await world.publish(old)
        },
        HostileCase(name: "artifact never uploaded", status: .unprocessableContent, code: "unknown_artifact") { world in
            let digest = SHA256.hash(Array("missing".utf8))
            let missing = ArtifactReference(url: ArtifactReference.controllerPath(for: digest), sha256: digest, size: 7)
            return try await world.publish(world.release(artifact: missing))
        },
        HostileCase(name: "artifact size differs from the stored one", status: .unprocessableContent, code: "artifact_size_mismatch") { world in
            var artifact = world.artifact
            artifact.size += 1
            return try await world.publish(world.release(artifact: artifact))
        },
        // Request bodies.
        HostileCase(name: "malformed JSON envelope", status: .badRequest, code: "malformed_json") { world in
            try await world.publishRaw(Array(#"{"payloadType": "#.utf8))
        },
        HostileCase(name: "unknown field in the envelope", status: .badRequest, code: "unknown_field") { world in
            var json =
                try Envelope.sign(
                    payload: world.release().payload(),
                    payloadType: Release.payloadType,
                    with: [world.fixture.signingKey]
                ).json.object ?? [:]
            json["comment"] = .string("hi")
            return try await world.publishRaw(Array(JSONValue.object(json).encoded()))
        },
        HostileCase(name: "envelope without signatures field", status: .badRequest, code: "missing_field") { world in
            try await world.publishRaw(Array(#"{"payloadType":"x","payload":"e30="}"#.utf8))
        },
        HostileCase(name: "release body over the limit", status: .contentTooLarge, code: "body_too_large") { world in
            try await world.publishRaw(Array(repeating: 0x20, count: 3 << 20))
        },
        HostileCase(name: "unknown field in an enrolment", status: .badRequest, code: "unknown_field") { world in
            try await world.send(
                .post,
                "/v1/agents",
                token: world.fixture.enrollToken,
                body: Array(#"{"name":"x","hostname":"x","services":["api"],"role":"operator"}"#.utf8)
            )
        },
        HostileCase(name: "enrolment without services", status: .unprocessableContent, code: "invalid_document") { world in
            try await world.send(
                .post,
                "/v1/agents",
                token: world.fixture.enrollToken,
                body: Array(#"{"name":"x","hostname":"x","services":[]}"#.utf8)
            )
        },
        // No URL path can name them (clients and browsers resolve dot segments): the agent could not be shown or removed.
        HostileCase(name: "an agent named ..", status: .unprocessableContent, code: "invalid_document") { world in
            try await world.send(
                .post,
                "/v1/agents",
                token: world.fixture.enrollToken,
                body: Array(#"{"name":"..","hostname":"x","services":["api"]}"#.utf8)
            )
        },
        HostileCase(name: "an agent named .", status: .unprocessableContent, code: "invalid_document") { world in
            try await world.send(
                .post,
                "/v1/agents",
                token: world.fixture.enrollToken,
                body: Array(#"{"name":".","hostname":"x","services":["api"]}"#.utf8)
            )
        },
        // Ids are shown to every viewer, and the agent pages take a name or an id: an agent named after another's id was
        // shown in its place.
        HostileCase(name: "an agent named after another agent's id", status: .unprocessableContent, code: "invalid_document") { world in
            try await world.send(
                .post,
                "/v1/agents",
                token: world.fixture.enrollToken,
                body: Array(#"{"name":"\#(world.agentA.id)","hostname":"x","services":["api"]}"#.utf8)
            )
        },
        HostileCase(name: "an agent named with an id's shape in capitals", status: .unprocessableContent, code: "invalid_document") { world in
            try await world.send(
                .post,
                "/v1/agents",
                token: world.fixture.enrollToken,
                body: Array(#"{"name":"AGT_0123456789ABCDEF","hostname":"x","services":["api"]}"#.utf8)
            )
        },
        HostileCase(name: "malformed status report", status: .badRequest, code: "malformed_json") { world in
            try await world.send(.post, "/v1/agents/\(world.agentA.id)/status", token: world.agentA.token, body: Array("not json".utf8))
        },
        HostileCase(name: "status report of the wrong type", status: .badRequest, code: "wrong_type") { world in
            let body = HostileWorld.statusJSON.replacingOccurrences(of: #""services":["#, with: #""services":"api","x":["#)
            return try await world.send(.post, "/v1/agents/\(world.agentA.id)/status", token: world.agentA.token, body: Array(body.utf8))
        },
        HostileCase(name: "status report with an unknown phase", status: .unprocessableContent, code: "invalid_document") { world in
            let body = HostileWorld.statusJSON.replacingOccurrences(of: "\"running\"", with: "\"exploding\"")
            return try await world.send(.post, "/v1/agents/\(world.agentA.id)/status", token: world.agentA.token, body: Array(body.utf8))
        },
        HostileCase(name: "status for a service the agent does not run", status: .unprocessableContent, code: "unknown_service") { world in
            let body = HostileWorld.statusJSON.replacingOccurrences(of: #""service":"api""#, with: #""service":"billing""#)
            return try await world.send(.post, "/v1/agents/\(world.agentA.id)/status", token: world.agentA.token, body: Array(body.utf8))
        },
        // A NUL in free text: PostgreSQL stores none (the whole batch of reports failed), nor reads `\u0000` as jsonb.
        HostileCase(name: "status report with a NUL in its message", status: .unprocessableContent, code: "invalid_document") { world in
            let body = HostileWorld.statusJSON.replacingOccurrences(of: #""ok""#, with: #""o\u0000k""#)
            return try await world.send(.post, "/v1/agents/\(world.agentA.id)/status", token: world.agentA.token, body: Array(body.utf8))
        },
        HostileCase(name: "status report with a NUL in a failure's reason", status: .unprocessableContent, code: "invalid_document") { world in
            let body = HostileWorld.statusJSON.replacingOccurrences(
                of: #""processes":[]"#,
                with: #""processes":[],"failures":[{"serial":1,"reason":"bad\u0000","kind":"rolled-back"}]"#
            )
            return try await world.send(.post, "/v1/agents/\(world.agentA.id)/status", token: world.agentA.token, body: Array(body.utf8))
        },
        HostileCase(name: "status report with a NUL in its trust root problem", status: .unprocessableContent, code: "invalid_document") { world in
            let body = HostileWorld.statusJSON.replacingOccurrences(
                of: #""processManager":"builtin","#,
                with: #""processManager":"builtin","trustRoot":{"version":1,"problem":"\u0000"},"#
            )
            return try await world.send(.post, "/v1/agents/\(world.agentA.id)/status", token: world.agentA.token, body: Array(body.utf8))
        },
        HostileCase(name: "status report over the limit", status: .contentTooLarge, code: "body_too_large") { world in
            let body = HostileWorld.statusJSON.replacingOccurrences(of: #""ok""#, with: "\"\(String(repeating: "x", count: 4096))\"")
            return try await world.send(.post, "/v1/agents/\(world.agentA.id)/status", token: world.agentA.token, body: Array(body.utf8))
        },
        // Artifacts.
        HostileCase(name: "upload digest mismatch", status: .unprocessableContent, code: "digest_mismatch") { world in
            try await world.send(
                .post,
                "/v1/artifacts",
                token: world.operatorToken,
                headers: [ArtifactRoutes.digestHeader: SHA256.hash([0]).hex],
                body: [1, 2, 3]
            )
        },
        HostileCase(name: "upload digest header not hex", status: .badRequest, code: "invalid_digest") { world in
            try await world.send(.post, "/v1/artifacts", token: world.operatorToken, headers: [ArtifactRoutes.digestHeader: "abc"], body: [1])
        },
        HostileCase(name: "artifact over the limit", status: .contentTooLarge, code: "body_too_large") { world in
            try await world.send(
                .post,
                "/v1/artifacts",
                token: world.operatorToken,
                body: Array(repeating: 1, count: Int(HostileWorld.artifactLimit) + 1)
            )
        },
        HostileCase(name: "empty artifact", status: .unprocessableContent, code: "empty_artifact") { world in
            try await world.send(.post, "/v1/artifacts", token: world.operatorToken, body: [])
        },
        HostileCase(name: "Range past the end", status: .rangeNotSatisfiable, code: "range_not_satisfiable") { world in
            try await world.send(.get, world.artifact.url, token: world.agentA.token, headers: [.range: "bytes=100-200"])
        },
        // An empty file under an artifact's digest (a restore, a damaged disk): its default range 0...(size - 1)
        // trapped. Uploads refuse empty bodies, so it is not an artifact.
        HostileCase(name: "an empty file where the artifact was", status: .notFound, code: "unknown_artifact") { world in
            let path = "\(world.fixture.directory.path)/artifacts/\(world.artifact.sha256.hex)"
            guard truncate(path, 0) == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
            return try await world.send(.get, world.artifact.url, token: world.agentA.token)
        },
        HostileCase(name: "a Range request for an empty file where the artifact was", status: .notFound, code: "unknown_artifact") { world in
            let path = "\(world.fixture.directory.path)/artifacts/\(world.artifact.sha256.hex)"
            guard truncate(path, 0) == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
            return try await world.send(.get, world.artifact.url, token: world.operatorToken, headers: [.range: "bytes=0-0"])
        },
        HostileCase(name: "non-hex artifact id", status: .badRequest, code: "invalid_artifact_id") { world in
            try await world.send(.get, "/v1/artifacts/etc%2Fpasswd", token: world.agentA.token)
        },
        HostileCase(name: "path traversal in the artifact id", status: .notFound, code: "not_found") { world in
            try await world.send(.get, "/v1/artifacts/../../etc/passwd", token: world.agentA.token)
        },
        HostileCase(name: "uppercase artifact id", status: .badRequest, code: "invalid_artifact_id") { world in
            try await world.send(.get, "/v1/artifacts/\(world.artifact.sha256.hex.uppercased())", token: world.agentA.token)
        },
        HostileCase(name: "artifact that is not stored", status: .notFound, code: "unknown_artifact") { world in
            try await world.send(.get, "/v1/artifacts/\(SHA256.hash([42]).hex)", token: world.agentA.token)
        },
        // Query parameters and routes.
        HostileCase(name: "wait above 60", status: .badRequest, code: "invalid_wait") { world in
            try await world.send(.get, "/v1/agents/\(world.agentA.id)/desired-state?wait=61", token: world.agentA.token)
        },
        HostileCase(name: "negative wait", status: .badRequest, code: "invalid_wait") { world in
            try await world.send(.get, "/v1/agents/\(world.agentA.id)/desired-state?wait=-1", token: world.agentA.token)
        },
        HostileCase(name: "wait not a number", status: .badRequest, code: "invalid_wait") { world in
            try await world.send(.get, "/v1/agents/\(world.agentA.id)/desired-state?wait=forever", token: world.agentA.token)
        },
        HostileCase(name: "invalid service in a listing", status: .badRequest, code: "invalid_service") { world in
            try await world.send(.get, "/v1/services/API!/releases", token: world.operatorToken)
        },
        HostileCase(name: "listing limit zero", status: .badRequest, code: "invalid_limit") { world in
            try await world.send(.get, "/v1/services/api/releases?limit=0", token: world.operatorToken)
        },
        HostileCase(name: "no such route", status: .notFound, code: "not_found") { world in
            try await world.send(.get, "/v2/everything", token: world.operatorToken)
        },
    ]

    @Test(arguments: cases)
    func hostileRequestGetsItsSpecificError(_ hostile: HostileCase) async throws {
        let limits: (inout ControllerConfiguration) -> Void = {
            $0.maximumArtifactBytes = HostileWorld.artifactLimit
            $0.maximumStatusBytes = HostileWorld.statusLimit
        }
        try await ControllerFixture.with(threshold: hostile.threshold, adjust: limits) { fixture in
            try await fixture.withRouter { client in
                let world = try await HostileWorld.make(fixture, client)
                let response = try await hostile.send(world)
                #expect(response.status == hostile.status, "\(String(buffer: response.body))")
                #expect(ControllerFixture.errorCode(response) == hostile.code, "\(String(buffer: response.body))")
                #expect(response.headers[.contentType]?.hasPrefix("application/json") == true)
                // Nothing a hostile request did changed what agents are told to run.
                let latest = try await fixture.store.latestReleases(for: ["api"])
                #expect(latest.map(\.serial) == [1])
            }
        }
    }

    /// A control character in the URL (percent-encoded) is a 400 on either store: PostgreSQL refuses a NUL in a text
    /// parameter, so a viewer's `?q=%00` was a 500 and an error log line there, as often as it was sent.
    @Test(arguments: StoreBackendKind.available)
    func aControlCharacterInTheURLIsABadRequest(_ kind: StoreBackendKind) async throws {
        try await ControllerFixture.with(kind) { fixture in
            try await fixture.withRouter { client in
                let urls = [
                    "/v1/fleet?q=%00", "/v1/fleet?service=api%00", "/v1/fleet?version=1%0A2", "/v1/agents/web%001",
                    "/v1/rollouts?service=a%00", "/v1/events?service=%1f", "/agents/web%7F1", "/v1/fleet?q=x%00&limit=10",
                ]
                for url in urls {
                    let response = try await client.execute(uri: url, method: .get, headers: ControllerFixture.bearer(fixture.viewerToken))
                    #expect(response.status == .badRequest, "\(url): \(String(buffer: response.body))")
                    #expect(ControllerFixture.errorCode(response) == "invalid_url", "\(url)")
                }
                // Escapes of anything else still reach the routes: a space in a search, a percent sign.
                for url in ["/v1/fleet?q=a%20b", "/v1/fleet?q=%25", "/v1/fleet?q=%2500"] {
                    let response = try await client.execute(uri: url, method: .get, headers: ControllerFixture.bearer(fixture.viewerToken))
                    #expect(response.status == .ok, "\(url): \(String(buffer: response.body))")
                }
            }
        }
    }

    /// Names an operator could not tell from another agent's, or that a terminal or the dashboard shows as something else:
    /// an enrollment token's holder could have enrolled `web-1` twice, as far as anyone reading the fleet could see.
    static let deceptiveAgentNames: [(name: String, reason: String)] = [
        ("web-1\u{200B}", "invisible formatting character (U+200B"),
        ("\u{FEFF}web-1", "invisible formatting character (U+FEFF"),
        ("web\u{202E}1-bew", "invisible formatting character (U+202E"),
        ("web\u{00AD}-1", "invisible formatting character (U+00AD"),
        ("web\u{00A0}1", "space other than U+0020 (U+00A0)"),
        ("web\u{2028}1", "space other than U+0020 (U+2028)"),
        ("web-1 ", "begin or end with a space"),
        (" web-1", "begin or end with a space"),
        ("web\u{009B}1", "control character (U+009B)"),
        ("web\u{E000}1", "unassigned or private-use character (U+E000)"),
        ("web-1\u{034F}", "invisible character (U+034F)"),
        ("web-1\u{FE0F}", "invisible character (U+FE0F)"),
        ("web\u{3164}1", "invisible character (U+3164)"),
        (" \u{0301}web-1", "begin or end with a space"),
        ("web\u{1B}[31m", "control characters are not allowed"),
    ]

    @Test func anEnrolmentUnderADeceptiveNameIsRefused() async throws {
        try await ControllerFixture.with { fixture in
            try await fixture.withRouter { client in
                let world = try await HostileWorld.make(fixture, client)
                func enrol(_ name: String) async throws -> TestResponse {
                    let body = JSONValue.object(["name": .string(name), "hostname": .string("h"), "services": .array([.string("api")])])
                    return try await world.send(.post, "/v1/agents", token: world.fixture.enrollToken, body: Array(body.encoded()))
                }
                for (name, reason) in Self.deceptiveAgentNames {
                    let response = try await enrol(name)
                    let text = String(buffer: response.body)
                    #expect(response.status == .unprocessableContent, "\(name.unicodeScalars.map(\.value)): \(text)")
                    #expect(ControllerFixture.errorCode(response) == "invalid_document")
                    #expect(text.contains(reason), "\(text)")
                    #expect(try await fixture.store.agent(named: name) == nil)
                }
                // Spaces inside a name, and letters beyond ASCII, stay allowed.
                for name in ["web 1", "serveur-café-1"] {
                    let response = try await enrol(name)
                    #expect(response.status == .created, "\(name): \(String(buffer: response.body))")
                }
            }
        }
    }

    @Test func tableCoversAtLeastTwentyFiveCases() {
        #expect(Self.cases.count >= 25)
        #expect(Set(Self.cases.map(\.name)).count == Self.cases.count)
    }
}
