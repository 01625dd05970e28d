import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Shared
import Testing

@testable import Controller

/// A request is authenticated when its head arrives, but its body may take hours (a byte within each idle timeout) and a
/// long-poll waits up to a minute: a token that stops working meanwhile (revoked, or its agent replaced by an operator's
/// re-enrolment) must not act when the body completes, nor be handed the state when the wait ends.
@Suite struct RequestOutlivesTokenTests {
    typealias Fixture = ControllerFixture

    /// Replaces agent `name` through the live server with the operator token, for `services`.
    static func replace(_ base: String, _ fixture: Fixture, name: String, services: [String]) async throws {
        let body = EnrollRequest(name: name, hostname: "\(name).example", services: services, replace: true).json.encoded()
        let response = try await LiveHTTP().send(
            "POST",
            base + "/v1/agents",
            token: fixture.operatorToken,
            headers: ["Content-Type": "application/json"],
            body: Data(body)
        )
        try #require(response.status == 201, "\(String(decoding: response.body, as: UTF8.self))")
    }

    /// Sends all of `request` but its last `held` bytes on a new connection to `port`.
    static func begin(_ request: [UInt8], holding held: Int, port: Int) throws -> RawConnection {
        let connection = try RawConnection(port: port)
        try connection.send(String(decoding: request.dropLast(held), as: UTF8.self))
        return connection
    }

    /// A second operator token (to revoke the fixture's with) and the id of the fixture's operator token.
    static func secondOperator(_ fixture: Fixture) async throws -> (revoker: String, stolenID: String) {
        let store = fixture.controller.core.store
        let revoker = Token.generate()
        try await store.createToken(hash: Token.digest(revoker), name: "bob", role: .operator, scope: nil, at: Date())
        let stolenID = try #require(try await store.credential(forTokenHash: Token.digest(fixture.operatorToken))?.principal.tokenID)
        return (revoker, stolenID)
    }

    /// A whole `POST` of `body` to `path` with `token`, as raw bytes.
    static func post(_ path: String, token: String, contentType: String, body: [UInt8]) -> [UInt8] {
        Array(
            ("POST \(path) HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(token)\r\n"
                + "Content-Type: \(contentType)\r\nContent-Length: \(body.count)\r\n\r\n").utf8
        ) + body
    }

    static func port(of base: String) throws -> Int {
        guard let port = URLComponents(string: base)?.port else { throw FixtureError("no port in \(base)") }
        return port
    }

    /// A report whose agent is replaced (its token with it) while the body arrives is refused when the body completes,
    /// and nothing of it is stored: taken by the poll handler (the token cached by a poll first) and by the router.
    @Test(arguments: [false, true])
    func aReportOfAReplacedAgentIsRefusedWhenItsBodyCompletes(pollFirst: Bool) async throws {
        try await Fixture.with { fixture in
            try await fixture.withLiveServer { base in
                let agent = try await fixture.withRouter { client in try await fixture.enroll(client, name: "a") }
                if pollFirst {
                    let poll = try await LiveHTTP().send("GET", base + "/v1/agents/\(agent.id)/desired-state", token: agent.token)
                    try #require(poll.status == 200)
                }
                let report = StatusReportHandlerTests.sizedReport(agent, "late", size: 2_000)
                let connection = try Self.begin(report, holding: 100, port: try Self.port(of: base))
                let held = fixture.controller.core.bodyBudget
                let deadline = ContinuousClock.now + .seconds(20)
                while held.bytesHeld < 1_000, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
                try #require(held.bytesHeld >= 1_000, "the body is arriving")
                try await Self.replace(base, fixture, name: "a", services: ["api"])
                try connection.send(String(decoding: report.suffix(100), as: UTF8.self))
                let answer = try await StatusReportHandlerTests.answer(connection)
                #expect(answer.hasPrefix("HTTP/1.1 401"), "\(answer)")
                #expect(try await fixture.controller.core.store.serviceStatuses(agentID: agent.id).isEmpty, "nothing of the report is stored")
            }
        }
    }

    /// An operator token revoked while its enrolment body arrives replaces no agent: the agent keeps its token.
    @Test func anOperatorTokenRevokedWhileItsBodyArrivesReplacesNothing() async throws {
        try await Fixture.with { fixture in
            try await fixture.withLiveServer { base in
                let agent = try await fixture.withRouter { client in try await fixture.enroll(client, name: "a") }
                let store = fixture.controller.core.store
                let (revoker, stolenID) = try await Self.secondOperator(fixture)
                let body = Array(
                    EnrollRequest(
                        name: "a",
                        hostname: "attacker.example",
                        services: ["api"],
                        replace: true,
                        tokenSHA256: SHA256Digest(bytes: .init(repeating: 7, count: 32))
                    )
                    .json.encoded()
                )
                let request = Self.post("/v1/agents", token: fixture.operatorToken, contentType: "application/json", body: body)
                let connection = try Self.begin(request, holding: 10, port: try Self.port(of: base))
                let held = fixture.controller.core.bodyBudget
                let deadline = ContinuousClock.now + .seconds(20)
                while held.bytesHeld < body.count - 10, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
                try #require(held.bytesHeld >= body.count - 10, "the body is arriving")
                let revoked = try await LiveHTTP().send("DELETE", base + "/v1/tokens/\(stolenID)", token: revoker)
                try #require(revoked.status == 200, "\(String(decoding: revoked.body, as: UTF8.self))")
                try connection.send(String(decoding: request.suffix(10), as: UTF8.self))
                let answer = try await StatusReportHandlerTests.answer(connection)
                #expect(answer.hasPrefix("HTTP/1.1 401"), "\(answer)")
                #expect(answer.contains("token_revoked"), "\(answer)")
                let poll = try await LiveHTTP().send("GET", base + "/v1/agents/\(agent.id)/desired-state", token: agent.token)
                #expect(poll.status == 200, "the agent keeps its token")
                #expect(try await store.agent(named: "a")?.hostname == "a.example")
            }
        }
    }

    /// An operator token revoked while its artifact upload arrives stores nothing: the upload is answered 401 when its
    /// body completes, and the artifact is not there (nor left half-written in the upload directory).
    @Test func anUploadOfARevokedTokenStoresNothing() async throws {
        try await Fixture.with { fixture in
            try await fixture.withLiveServer { base in
                let (revoker, stolenID) = try await Self.secondOperator(fixture)
                let artifact = Array(repeating: UInt8(ascii: "z"), count: 20_000)
                let request = Self.post("/v1/artifacts", token: fixture.operatorToken, contentType: "application/octet-stream", body: artifact)
                let connection = try Self.begin(request, holding: 10, port: try Self.port(of: base))
                // The upload's file appears in the artifact store's upload directory once its head was authenticated and
                // its body began to be stored.
                let uploads = fixture.directory.appendingPathComponent("artifacts/tmp").path
                func uploading() -> Int { ((try? FileManager.default.contentsOfDirectory(atPath: uploads)) ?? []).count }
                let deadline = ContinuousClock.now + .seconds(20)
                while uploading() == 0, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
                try #require(uploading() == 1, "the upload is arriving")
                let revoked = try await LiveHTTP().send("DELETE", base + "/v1/tokens/\(stolenID)", token: revoker)
                try #require(revoked.status == 200, "\(String(decoding: revoked.body, as: UTF8.self))")
                try connection.send(String(decoding: request.suffix(10), as: UTF8.self))
                let answer = try await StatusReportHandlerTests.answer(connection)
                #expect(answer.hasPrefix("HTTP/1.1 401"), "\(answer)")
                #expect(answer.contains("token_revoked"), "\(answer)")
                #expect(fixture.controller.core.artifacts.size(of: SHA256.hash(artifact)) == nil, "nothing is stored")
                #expect(uploading() == 0, "nothing is left in the upload directory")
            }
        }
    }

    /// A long-poll parked with an agent's token, when an operator re-enrolls the agent for one more service (its token
    /// replaced): the wake-up the replace sends is answered 401, not with the new service's release (and its env
    /// values). Through the poll handler (live) and through the router.
    @Test(arguments: [false, true])
    func aParkedPollOfAReplacedAgentIsNotHandedTheState(throughRouter: Bool) async throws {
        try await Fixture.with { fixture in
            try await fixture.withLiveServer { base in
                let agent = try await fixture.withRouter { client in
                    let artifact = try await fixture.upload(client, Array("web".utf8))
                    let published = try await fixture.publish(
                        client,
                        Fixture.release(service: "web", serial: 1, artifact: artifact),
                        keys: [fixture.signingKey]
                    )
                    try #require(published.status == .created)
                    return try await fixture.enroll(client, name: "a")
                }
                let first = try await LiveHTTP().send("GET", base + "/v1/agents/\(agent.id)/desired-state", token: agent.token)
                let etag = try #require(first.header("ETag"))
                let hub = fixture.controller.core.desiredStates.hub
                let poll: Task<Int, any Error>
                if throughRouter {
                    poll = Task {
                        try await fixture.withRouter { client in
                            let response = try await client.execute(
                                uri: "/v1/agents/\(agent.id)/desired-state?wait=30",
                                method: .get,
                                headers: Fixture.bearer(agent.token, [.ifNoneMatch: etag])
                            )
                            return Int(response.status.code)
                        }
                    }
                } else {
                    poll = Task {
                        let response = try await LiveHTTP().send(
                            "GET",
                            base + "/v1/agents/\(agent.id)/desired-state?wait=30",
                            token: agent.token,
                            headers: ["If-None-Match": etag]
                        )
                        return response.status
                    }
                }
                let deadline = ContinuousClock.now + .seconds(20)
                while hub.waiterCount == 0, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
                try #require(hub.waiterCount == 1, "the poll is parked")
                let started = ContinuousClock.now
                try await Self.replace(base, fixture, name: "a", services: ["api", "web"])
                let status = try await poll.value
                #expect(status == 401, "the old token's parked poll")
                #expect(ContinuousClock.now - started < .seconds(20), "answered at the wake-up, not at the end of the wait")
            }
        }
    }
}
