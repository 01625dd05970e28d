import Foundation
import Shared
import TestSupport
import Testing

/// An enrolment whose answer is lost after the controller committed it (a load balancer's 502, a dropped connection,
/// the instance's network going away) used to be refused for good: the controller had issued a token nobody received,
/// and every retry of `ferry-agent enroll` was a taken name (409 `agent_exists`), so an instance enrolling from its user
/// data never came up without an operator. Now the agent chooses its token and sends its digest, keeping the token in
/// `agent.token.pending` until the enrolment is written: the command tries again itself (1 s, 2 s, 4 s), and a run
/// that gave up and runs again offers the same token; the controller answers a repeat of a stored enrolment again.
@Suite("Enrolment retries", .serialized)
struct EnrollRetryEndToEndTests {
    @Test("an enrolment whose answers are lost is answered again, in the same run and in the next", .timeLimit(.minutes(3)))
    func aLostAnswerIsAnsweredAgain() async throws {
        try await FleetFixture.with { fleet in
            try await fleet.startController()
            // The first run's four attempts all lose their answer; the next run's goes through.
            let proxy = await RecordingProxy(upstream: fleet.controller.url, port: try freeLoopbackPort(), losing: .init(4, of: .post, "/v1/agents"))
            do {
                let first = try await fleet.runEnroll(name: "web-1", caFile: nil, controllerURL: proxy.url)
                #expect(first.status != 0, "every answer was lost: \(first.stdout)")
                #expect(first.stderr.contains("enrolment attempt 3 failed"), "\(first.stderr)")
                let pending = fleet.root.appendingPathComponent("web-1/state/agent.token.pending")
                #expect(FileManager.default.fileExists(atPath: pending.path), "the offered token is kept for the next run")

                let second = try await fleet.runEnroll(name: "web-1", caFile: nil, controllerURL: proxy.url)
                #expect(second.status == 0, "\(second.stdout)\(second.stderr)")
                #expect(!FileManager.default.fileExists(atPath: pending.path))

                let sent = await proxy.exchanges.filter { $0.method == "POST" && $0.path == "/v1/agents" }
                let digests = Set(sent.compactMap { try? EnrollRequest(json: JSONValue.parse($0.body)).tokenSHA256 })
                #expect(sent.count == 5 && digests.count == 1, "five attempts, one token: \(sent.count), \(digests)")
                let token = try String(contentsOf: fleet.root.appendingPathComponent("web-1/state/agent.token"), encoding: .utf8)
                    .trimmingCharacters(in: .whitespacesAndNewlines)
                #expect(digests.first == SHA256.hash(Array(token.utf8)), "the token written is the one offered")
                #expect(!sent.contains { String(decoding: $0.body, as: UTF8.self).contains(token) }, "the token never left the instance")

                let fleetView = try await fleet.controller.fleet(token: fleet.viewerToken)
                let agents = fleetView["agents"]?.arrayValue ?? []
                #expect(agents.compactMap { $0["name"]?.stringValue } == ["web-1"], "one agent")
                let agentID = try #require(agents.first?["id"]?.stringValue)
                let state = try await HTTPClient().send(
                    HTTPClient.Request(
                        url: fleet.controller.url + "/v1/agents/\(agentID)/desired-state",
                        headers: ["Authorization": "Bearer \(token)"],
                        timeout: .seconds(10)
                    )
                )
                #expect(state.status == 200, "the controller accepts the token the agent kept")
            } catch {
                await proxy.stop()
                throw error
            }
            await proxy.stop()
        }
    }
}
