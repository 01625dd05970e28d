import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Shared
import Synchronization
import TestSupport
import Testing

@testable import Controller

/// Issue 15 on the controller: one agent in full, one rollout in full, the failure (with its diagnosis and log tail)
/// in `/v1/fleet`, the release history, the dashboard's detail pages, and the event stream.
@Suite("Insight routes: agent and rollout details, release history, event stream")
struct InsightRoutesTests {
    /// A line an app wrote to stderr, with markup in it: it must reach the pages as text.
    static let distinctive = "FATAL <script>alert('ferry')</script> cannot reach db-7731"

    static let diagnosis = FailureDiagnosis(
        stage: .healthGate,
        cause: .crashed,
        at: Date(timeIntervalSince1970: 1_800_000_000),
        instances: [FailureDiagnosis.Instance(app: "api", pmId: 0, status: "errored", restarts: 2, exitCode: 1)],
        logs: [
            FailureDiagnosis.LogTail(app: "api", pmIds: [0], stream: .stderr, lines: ["booting", distinctive], truncated: false),
            FailureDiagnosis.LogTail(app: "api", pmIds: [0], stream: .stdout, lines: ["listening on ${PORT}"], truncated: true),
        ]
    )

    /// An agent named with a space and a slash, running serial 1 after serial 2 crashed and was rolled back.
    static let agentName = "web 1/eu"

    static func rolledBack() -> ServiceStatus {
        ServiceStatus(
            service: "api",
            serial: 1,
            version: "1.0.0",
            targetSerial: 2,
            phase: .rolledBack,
            message: "serial 2 (2.0.0) failed and was rolled back to serial 1 (1.0.0): api: pm_id 0 errored",
            health: .healthy,
            failures: [
                ReleaseFailure(serial: 2, reason: "api: pm_id 0 errored (PM2 gave up restarting it)", kind: "rolled-back", diagnosis: diagnosis)
            ],
            processes: [
                ProcessReport(name: "api", pmId: 0, pid: 4321, status: "online", restarts: 0, uptimeSeconds: 90, memoryBytes: 50 << 20, cpuPercent: 1)
            ]
        )
    }

    /// Publishes serials 1 and 2 (staged, so the failure halts the rollout) and makes the agent report the rollback.
    static func seed(_ fixture: ControllerFixture, _ client: any TestClientProtocol) async throws -> (id: String, token: String) {
        let agent = try await fixture.enroll(client, name: agentName)
        let artifact = try await fixture.upload(client, Array("artifact".utf8))
        #expect(try await fixture.publish(client, ControllerFixture.release(serial: 1, artifact: artifact)).status == .created)
        let second = try fixture.envelope(ControllerFixture.release(serial: 2, version: "2.0.0", artifact: artifact))
        let published = try await client.execute(
            uri: "/v1/releases?strategy=canary:1&waveStableSeconds=5",
            method: .post,
            headers: ControllerFixture.bearer(fixture.operatorToken),
            body: second
        )
        #expect(published.status == .created)
        try await report(client, agent, hostname: "web-1.example", rolledBack())
        return agent
    }

    /// `agent` reports `status` (answered `204`).
    static func report(_ client: any TestClientProtocol, _ agent: (id: String, token: String), hostname: String, _ status: ServiceStatus) async throws
    {
        let report = StatusReport(agentVersion: "0.1.0", hostname: hostname, processManager: "pm2", services: [status])
        let answer = try await client.execute(
            uri: "/v1/agents/\(agent.id)/status",
            method: .post,
            headers: ControllerFixture.bearer(agent.token),
            body: ByteBuffer(bytes: report.json.encoded())
        )
        #expect(answer.status == .noContent)
    }

    static func get(_ client: any TestClientProtocol, _ uri: String, token: String) async throws -> TestResponse {
        try await client.execute(uri: uri, method: .get, headers: ControllerFixture.bearer(token))
    }

    @Test(arguments: StoreBackendKind.available)
    func anAgentInFullByNameOrId(_ kind: StoreBackendKind) async throws {
        try await ControllerFixture.with(kind) { fixture in
            try await fixture.withRouter { client in
                let agent = try await Self.seed(fixture, client)
                let byName = try await Self.get(client, "/v1/agents/web%201%2Feu", token: fixture.viewerToken)
                #expect(byName.status == .ok)
                let document = try ControllerFixture.json(byName)
                #expect(document.object?["id"] == .string(agent.id))
                #expect(document.object?["name"] == .string(Self.agentName))
                let service = try #require(FleetDocument.array(document.object?["services"]).first?.object)
                #expect(service["phase"] == .string("rolled-back"))
                let process = try #require(FleetDocument.array(service["processes"]).first?.object)
                #expect(process["pid"] == .integer(4321))
                let failure = try #require(service["failure"]?.object)
                #expect(failure["serial"] == .integer(2))
                let tail = FleetDocument.array(failure["diagnosis"]?.object?["logs"]).first?.object
                let lines = FleetDocument.array(tail?["lines"])
                #expect(lines.contains(.string(Self.distinctive)))
                #expect(FleetDocument.array(document.object?["reports"]).count == 1)
                // The id works too, and so does an operator token.
                let byID = try await Self.get(client, "/v1/agents/\(agent.id)", token: fixture.operatorToken)
                #expect(try ControllerFixture.json(byID).object?["name"] == .string(Self.agentName))
            }
        }
    }

    /// An agent stored under another agent's id as its name (refused at enrolment now; an older controller took it)
    /// does not shadow that agent: a key of an id's shape is an id first.
    @Test func aNameCopyingAnIdDoesNotShadowItsAgent() async throws {
        try await ControllerFixture.with { fixture in
            try await fixture.withRouter { client in
                let victim = try await Self.seed(fixture, client)
                _ = try await fixture.store.enrollAgent(
                    proposedID: "agt_0000000000000001",
                    name: victim.id,
                    hostname: "impostor.example",
                    services: ["api"],
                    tokenHash: Token.digest(Token.generate()),
                    at: Date()
                )
                for uri in ["/v1/agents/\(victim.id)", "/agents/\(victim.id)"] {
                    let answer = try await Self.get(client, uri, token: fixture.viewerToken)
                    #expect(answer.status == .ok, "\(uri)")
                    let text = String(buffer: answer.body)
                    #expect(text.contains("web 1"), "\(uri): \(text.prefix(400))")
                    #expect(!text.contains("impostor.example"), "\(uri) shows the impostor")
                }
                // The impostor stays reachable by its own id.
                let impostor = try ControllerFixture.json(try await Self.get(client, "/v1/agents/agt_0000000000000001", token: fixture.viewerToken))
                #expect(impostor.object?["hostname"] == .string("impostor.example"))
            }
        }
    }

    @Test func theFleetCarriesTheCurrentFailureWithItsTail() async throws {
        try await ControllerFixture.with { fixture in
            try await fixture.withRouter { client in
                _ = try await Self.seed(fixture, client)
                let fleet = try ControllerFixture.json(try await Self.get(client, "/v1/fleet", token: fixture.viewerToken))
                let agent = try #require(FleetDocument.agents(fleet).first)
                let entry = try #require(FleetDocument.array(agent["services"]).first?.object)
                let lines = FleetDocument.array(entry["failure"]?.object?["diagnosis"]?.object?["logs"]).flatMap {
                    FleetDocument.array($0.object?["lines"])
                }
                #expect(lines.contains(.string(Self.distinctive)))
            }
        }
    }

    @Test func aRolloutInFullWithEachAgentsFailure() async throws {
        try await ControllerFixture.with { fixture in
            try await fixture.withRouter { client in
                _ = try await Self.seed(fixture, client)
                let rollout = try ControllerFixture.json(try await Self.get(client, "/v1/rollouts/api/2", token: fixture.viewerToken))
                #expect(rollout.object?["state"] == .string("halted"))
                let agent = try #require(FleetDocument.array(rollout.object?["agents"]).first?.object)
                #expect(agent["name"] == .string(Self.agentName))
                #expect(agent["progress"] == .string("failed"))
                #expect(agent["failure"]?.object?["diagnosis"]?.object?["cause"] == .string("crashed"))
                #expect(RolloutWaitVerdict.failures(rollout).first?.failure != nil)
                if case .failed = RolloutWaitVerdict.decide(rollout) {} else { Issue.record("a halted rollout is a failed wait") }
            }
        }
    }

    /// A release that failed on many agents: the rollout document carries the first `RolloutDetail.wholeTails` failed
    /// agents' log tails whole and the fleet excerpt for the others, so its size no longer grows with the fleet's by
    /// every agent's whole tails (up to 128 KiB each).
    @Test func aRolloutOfManyFailedAgentsCarriesWholeTailsForTheFirstOnly() async throws {
        try await ControllerFixture.with { fixture in
            try await fixture.withRouter { client in
                let count = RolloutDetail.wholeTails + 3
                var agents: [(id: String, token: String)] = []
                for index in 0..<count { agents.append(try await fixture.enroll(client, name: String(format: "web-%03d", index))) }
                let artifact = try await fixture.upload(client, Array("artifact".utf8))
                #expect(try await fixture.publish(client, ControllerFixture.release(serial: 1, artifact: artifact)).status == .created)
                #expect(
                    try await fixture.publish(client, ControllerFixture.release(serial: 2, version: "2.0.0", artifact: artifact)).status == .created
                )
                var failure = Self.rolledBack()
                failure.failures[0].diagnosis?.logs[0].lines = (1...30).map { "line \($0)" }
                for (index, agent) in agents.enumerated() { try await Self.report(client, agent, hostname: "web-\(index)", failure) }
                let rollout = try ControllerFixture.json(try await Self.get(client, "/v1/rollouts/api/2", token: fixture.viewerToken))
                let listed = FleetDocument.array(rollout.object?["agents"])
                #expect(listed.count == count)
                let tails = listed.map { agent in
                    FleetDocument.array(agent.object?["failure"]?.object?["diagnosis"]?.object?["logs"]).first?.object
                }
                let whole = tails.filter { FleetDocument.array($0?["lines"]).count == 30 && $0?["truncated"] == .bool(false) }
                let cut = tails.filter { FleetDocument.array($0?["lines"]).count == 10 && $0?["truncated"] == .bool(true) }
                #expect(whole.count == RolloutDetail.wholeTails)
                #expect(cut.count == 3)
                #expect(FleetDocument.array(tails.last??["lines"]).last == .string("line 30"), "the excerpt keeps the last lines")
                #expect(RolloutWaitVerdict.failures(rollout).allSatisfy { $0.failure != nil }, "every failure named carries its detail")

                // What `rollout wait` reads every few seconds: the failed agents only (at most the whole-tail ones), with
                // the same counts and failures; one agent that runs the serial is not listed, although it once refused it
                // (its failure of the serial is still in its report) and comes first in rollout order.
                let running = ServiceStatus(
                    service: "api",
                    serial: 2,
                    version: "2.0.0",
                    targetSerial: 2,
                    phase: .running,
                    message: "serial 2 (2.0.0) is running and healthy",
                    health: .healthy,
                    failures: [ReleaseFailure(serial: 2, reason: "the trust root was not current yet", kind: "refused")],
                    processes: []
                )
                try await Self.report(client, agents[0], hostname: "web-0", running)
                let failedOnly = try ControllerFixture.json(
                    try await Self.get(client, "/v1/rollouts/api/2?agents=failed", token: fixture.viewerToken)
                )
                let failedAgents = FleetDocument.array(failedOnly.object?["agents"])
                #expect(failedAgents.count == RolloutDetail.wholeTails)
                #expect(failedAgents.allSatisfy { $0.object?["progress"] == .string("failed") })
                let failedTails = failedAgents.map { agent in
                    FleetDocument.array(agent.object?["failure"]?.object?["diagnosis"]?.object?["logs"]).first?.object
                }
                #expect(failedTails.allSatisfy { FleetDocument.array($0?["lines"]).count == 30 }, "the listed failed agents' tails are whole")
                // The page lists the same failures with their whole tails ("line 1" is not in an excerpt).
                let (_, page) = try await Self.page(client, "/rollouts/api/2", token: fixture.viewerToken)
                #expect(page.components(separatedBy: "line 1\n").count - 1 == RolloutDetail.wholeTails)
                let all = try ControllerFixture.json(try await Self.get(client, "/v1/rollouts/api/2?agents=all", token: fixture.viewerToken))
                #expect(failedOnly.object?["agentsListed"] == .string("failed") && failedOnly.object?["counts"] == all.object?["counts"])
                let everyone = FleetDocument.array(all.object?["agents"])
                #expect(everyone.count == count && everyone.contains { $0.object?["progress"] != .string("failed") })
            }
        }
    }

    @Test func theReleaseHistoryNamesSignersAndRolloutOutcomes() async throws {
        try await ControllerFixture.with { fixture in
            try await fixture.withRouter { client in
                _ = try await Self.seed(fixture, client)
                let listing = try ControllerFixture.json(
                    try await Self.get(client, "/v1/services/api/releases?envelopes=false", token: fixture.operatorToken)
                )
                let releases = FleetDocument.array(listing.object?["releases"]).compactMap(\.object)
                #expect(releases.map { $0["serial"] } == [.integer(2), .integer(1)])
                for release in releases {
                    #expect(release["envelope"] == nil, "envelopes=false leaves them out")
                    #expect(release["publishedBy"] == .string("alice"))
                    #expect(FleetDocument.array(release["keyIds"]) == [.string(fixture.signingKey.publicKey.keyID)])
                }
                #expect(releases[0]["rollout"]?.object?["strategy"] == .string("canary:1"))
                #expect(releases[0]["rollout"]?.object?["state"] == .string("halted"))
                #expect(releases[1]["rollout"]?.object?["state"] == .string("completed"))
                // By default the envelopes are there (rollback re-signs from them).
                let full = try ControllerFixture.json(try await Self.get(client, "/v1/services/api/releases", token: fixture.operatorToken))
                #expect(FleetDocument.array(full.object?["releases"]).allSatisfy { $0.object?["envelope"] != nil })
            }
        }
    }

    /// One refused request to the new routes: the status and error code it must get.
    struct Refusal: Sendable, CustomTestStringConvertible {
        var uri: String
        var token: Token
        var status: HTTPResponse.Status
        var code: String?

        enum Token: Sendable { case none, viewer, agent, operatorToken }

        var testDescription: String { "\(uri) → \(status.code) \(code ?? "")" }
    }

    static let refusals: [Refusal] = [
        Refusal(uri: "/v1/agents/nobody", token: .viewer, status: .notFound, code: "unknown_agent"),
        Refusal(uri: "/v1/agents/\(String(repeating: "x", count: 129))", token: .viewer, status: .badRequest, code: "invalid_agent_name"),
        Refusal(uri: "/v1/agents/nobody", token: .none, status: .unauthorized, code: "unauthorized"),
        Refusal(uri: "/v1/agents/nobody", token: .agent, status: .forbidden, code: "forbidden"),
        Refusal(uri: "/v1/rollouts/API/1", token: .viewer, status: .badRequest, code: "invalid_service"),
        Refusal(uri: "/v1/rollouts/api/0", token: .viewer, status: .badRequest, code: "invalid_serial"),
        Refusal(uri: "/v1/rollouts/api/two", token: .viewer, status: .badRequest, code: "invalid_serial"),
        Refusal(uri: "/v1/rollouts/api/99999999999999999999", token: .viewer, status: .badRequest, code: "invalid_serial"),
        Refusal(uri: "/v1/rollouts/api/99", token: .viewer, status: .notFound, code: "unknown_rollout"),
        Refusal(uri: "/v1/rollouts/api/1?agents=some", token: .viewer, status: .badRequest, code: "invalid_agents"),
        Refusal(uri: "/v1/events/stream?keepalive=0", token: .viewer, status: .badRequest, code: "invalid_keepalive"),
        Refusal(uri: "/v1/events/stream?keepalive=61", token: .viewer, status: .badRequest, code: "invalid_keepalive"),
        Refusal(uri: "/v1/events/stream?after=-1", token: .viewer, status: .badRequest, code: "invalid_after"),
        Refusal(uri: "/v1/events/stream?service=Not%20a%20service", token: .viewer, status: .badRequest, code: "invalid_service"),
        Refusal(uri: "/v1/events/stream", token: .agent, status: .forbidden, code: "forbidden"),
        Refusal(uri: "/v1/services/api/releases?envelopes=maybe", token: .operatorToken, status: .badRequest, code: "invalid_envelopes"),
        Refusal(uri: "/v1/services/api/releases", token: .viewer, status: .forbidden, code: "forbidden"),
        Refusal(uri: "/agents/nobody", token: .viewer, status: .notFound, code: "unknown_agent"),
        Refusal(uri: "/rollouts/api/7", token: .viewer, status: .notFound, code: "unknown_rollout"),
    ]

    @Test(arguments: refusals)
    func refusedRequests(_ row: Refusal) async throws {
        try await ControllerFixture.with { fixture in
            try await fixture.withRouter { client in
                let agent = try await fixture.enroll(client, name: "someone")
                let headers: HTTPFields
                switch row.token {
                case .none: headers = [:]
                case .viewer: headers = ControllerFixture.bearer(fixture.viewerToken)
                case .agent: headers = ControllerFixture.bearer(agent.token)
                case .operatorToken: headers = ControllerFixture.bearer(fixture.operatorToken)
                }
                let response = try await client.execute(uri: row.uri, method: .get, headers: headers)
                #expect(response.status == row.status)
                #expect(ControllerFixture.errorCode(response) == row.code)
            }
        }
    }

    // MARK: Dashboard detail pages

    static func page(_ client: any TestClientProtocol, _ uri: String, token: String) async throws -> (TestResponse, String) {
        let credentials = Data("viewer:\(token)".utf8).base64EncodedString()
        let response = try await client.execute(uri: uri, method: .get, headers: [.authorization: "Basic \(credentials)"])
        return (response, String(decoding: response.body.readableBytesView, as: UTF8.self))
    }

    @Test func theAgentPageShowsTheTailAsTextUnderTheDashboardsPolicy() async throws {
        try await ControllerFixture.with { fixture in
            try await fixture.withRouter { client in
                _ = try await Self.seed(fixture, client)
                let (response, html) = try await Self.page(client, "/agents/web%201%2Feu", token: fixture.viewerToken)
                #expect(response.status == .ok)
                #expect(response.headers[.contentSecurityPolicy] == DashboardRenderer.contentSecurityPolicy)
                #expect(response.headers[.contentType] == "text/html; charset=utf-8")
                #expect(html.contains("FATAL &lt;script&gt;alert(&#39;ferry&#39;)&lt;/script&gt; cannot reach db-7731"), "the line, escaped")
                #expect(!html.contains("<script>alert"), "the app's line never becomes markup")
                #expect(html.components(separatedBy: "<script>").count == 2, "only the page's own refresh script")
                #expect(html.contains(#"data-diagnosis-stage="health-gate""#) && html.contains(#"data-diagnosis-cause="crashed""#))
                #expect(html.contains(#"data-exit-code="1""#))
                #expect(html.contains(#"data-log-stream="stderr""#))
                #expect(html.contains(#"data-pid="4321""#))
                #expect(html.contains("id=\"summary\"") && html.contains("id=\"dashboard\""), "the refresh script's hooks")
                for reference in ["src=", "href=", "url(", "@import", "http:", "https:", "<link", "<iframe", "<img", "<object"] {
                    #expect(!html.contains(reference), "the agent page contains \(reference)")
                }
            }
        }
    }

    /// Errors quote what the request said (an unknown agent's name, a bad query value): each answers as JSON that no
    /// browser sniffs into a page nor frames, as the pages do.
    @Test(arguments: [
        "/agents/%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E", "/?q=%3Cscript%3E" + String(repeating: "x", count: 300), "/no/such/route",
    ])
    func anErrorPageIsDataNotMarkup(_ uri: String) async throws {
        try await ControllerFixture.with { fixture in
            try await fixture.withRouter { client in
                let (response, body) = try await Self.page(client, uri, token: fixture.viewerToken)
                #expect(response.status.code >= 400, "\(body)")
                #expect(response.headers[.contentType] == "application/json; charset=utf-8")
                #expect(response.headers[.xContentTypeOptions] == "nosniff")
                #expect(response.headers[.contentSecurityPolicy] == "default-src 'none'; frame-ancestors 'none'")
            }
        }
    }

    /// The documents that carry what agents reported (failure reasons, log tails, names) answer as data a browser does
    /// not sniff into a page nor frame, as errors do; they had neither header.
    @Test(arguments: ["/v1/fleet", "/v1/rollouts", "/v1/events", "/v1/services"])
    func aDocumentIsDataNotMarkup(_ uri: String) async throws {
        try await ControllerFixture.with { fixture in
            try await fixture.withRouter { client in
                _ = try await Self.seed(fixture, client)
                let (response, body) = try await Self.page(client, uri, token: fixture.viewerToken)
                #expect(response.status.code == 200, "\(body)")
                #expect(response.headers[.contentType] == "application/json; charset=utf-8")
                #expect(response.headers[.xContentTypeOptions] == "nosniff")
                #expect(response.headers[.contentSecurityPolicy] == "default-src 'none'; frame-ancestors 'none'")
            }
        }
    }

    /// "Last events" names each event's agent, also when the page of agents does not hold it (a filter, another page):
    /// it showed the agent's id then.
    @Test func theEventsNameAgentsThePageDoesNotList() async throws {
        try await ControllerFixture.with { fixture in
            try await fixture.withRouter { client in
                _ = try await Self.seed(fixture, client)
                let (response, html) = try await Self.page(client, "/?q=no-agent-has-this", token: fixture.viewerToken)
                #expect(response.status == .ok)
                #expect(!html.contains(#"data-open="/agents/"#), "the filter lists no agent")
                #expect(html.contains("<small>agent \(Self.agentName)</small>"), "\(html.suffix(3000))")
                #expect(!html.contains("<small>agent agt_"))
            }
        }
    }

    /// Basic credentials a browser sends for another site's page (an `<img>` or `<iframe>` pointing at the event
    /// stream could hold a token's streams) are refused; a link followed from another site opens the page; curl and the
    /// dashboard's own requests pass.
    @Test(arguments: [
        (["Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image"], "/v1/events/stream", 403),
        (["Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "iframe"], "/", 403),
        (["Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty"], "/v1/fleet", 403),
        (["Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"], "/", 200),
        (["Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty"], "/v1/fleet", 200),
        ([:], "/v1/fleet", 200),
    ])
    func basicCredentialsForAnotherSitesPageAreRefused(_ fetch: [String: String], _ uri: String, _ status: Int) async throws {
        try await ControllerFixture.with { fixture in
            try await fixture.withRouter { client in
                let credentials = Data("viewer:\(fixture.viewerToken)".utf8).base64EncodedString()
                var headers: HTTPFields = [.authorization: "Basic \(credentials)"]
                for (name, value) in fetch { headers[HTTPField.Name(name)!] = value }
                let response = try await client.execute(uri: uri, method: .get, headers: headers)
                #expect(Int(response.status.code) == status, "\(fetch) \(uri)")
                if status == 403 { #expect(String(buffer: response.body).contains("cross_origin")) }
            }
        }
    }

    @Test func theRolloutPageAndTheLinksFromTheFleetPage() async throws {
        try await ControllerFixture.with { fixture in
            try await fixture.withRouter { client in
                _ = try await Self.seed(fixture, client)
                let (fleetResponse, fleet) = try await Self.page(client, "/", token: fixture.viewerToken)
                #expect(fleetResponse.status == .ok)
                #expect(fleet.contains(#"data-open="/agents/web%201%2Feu""#), "the agent's link, its name percent-encoded")
                #expect(fleet.contains(#"data-open="/rollouts/api/2""#))
                let (response, html) = try await Self.page(client, "/rollouts/api/2", token: fixture.viewerToken)
                #expect(response.status == .ok)
                #expect(response.headers[.contentSecurityPolicy] == DashboardRenderer.contentSecurityPolicy)
                #expect(html.contains(#"data-rollout-state="halted""#))
                #expect(html.contains(#"data-rollout-agent="web 1/eu" data-progress="failed""#))
                #expect(html.contains("cannot reach db-7731") && !html.contains("<script>alert"))
            }
        }
    }

    /// The page script (fleet and detail pages) with its click-to-open handler is valid JavaScript: a syntax error would
    /// leave the pages without refresh and without detail views, and no other test runs the script.
    @Test func thePageScriptParses() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-page-script") { directory in
            let file = directory.appendingPathComponent("page.js")
            try Data(DashboardTemplate.script.utf8).write(to: file)
            let environment = ProcessInfo.processInfo.environment
            let check = try await CommandRunner.run(
                CommandRunner.Request(
                    executable: "/usr/bin/env",
                    arguments: ["node", "--check", file.path],
                    environment: environment,
                    timeout: .seconds(60)
                )
            )
            #expect(check.termination == .exited(0), "\(String(decoding: check.standardError, as: UTF8.self))")
            #expect(DashboardTemplate.script.contains("data-open"))
        }
    }

    // MARK: Event stream

    /// The bytes a stream delivered so far, filled on the transfer's thread.
    final class Received: Sendable {
        private let text = Mutex("")
        func append(_ bytes: [UInt8]) { text.withLock { $0 += String(decoding: bytes, as: UTF8.self) } }
        var value: String { text.withLock { $0 } }
    }

    @Test(.timeLimit(.minutes(2)))
    func theEventStreamSendsEventsAndKeepAlivesAndEndsForARevokedToken() async throws {
        try await ControllerFixture.with { fixture in
            let streamToken = Token.generate()
            let record = try await fixture.store.createToken(hash: Token.digest(streamToken), name: "ci-follow", role: .viewer, at: Date())
            try await fixture.withLiveServer { base in
                let received = Received()
                let client = HTTPClient()
                let request = HTTPClient.Request(method: .get, url: "\(base)/v1/events/stream?service=api&keepalive=1&after=0")
                    .withBearerToken(streamToken)
                let stream = Task {
                    try await client.stream(request, idleTimeout: .seconds(10)) { received.append($0) }
                }
                // Nothing has happened yet: within two seconds the stream sends keep-alive comments.
                try await Self.until("a keep-alive comment") { received.value.contains(": keep-alive\n\n") }
                #expect(received.value.hasPrefix("retry: 2000\n"))

                // Publishing an `all` release: its event arrives as a message with its id.
                let http = LiveHTTP()
                let artifact = try await http.send("POST", "\(base)/v1/artifacts", token: fixture.operatorToken, body: Data("bytes".utf8))
                #expect(artifact.status == 201)
                let digest = SHA256.hash(Array("bytes".utf8))
                let reference = ArtifactReference(url: ArtifactReference.controllerPath(for: digest), sha256: digest, size: 5)
                let envelope = try fixture.envelope(ControllerFixture.release(serial: 1, artifact: reference))
                let published = try await http.send(
                    "POST",
                    "\(base)/v1/releases",
                    token: fixture.operatorToken,
                    body: Data(envelope.readableBytesView)
                )
                #expect(published.status == 201)
                try await Self.until("the published event") { received.value.contains("\"kind\":\"published\"") }
                var reader = ServerSentEvents()
                let messages = try reader.feed(Array(received.value.utf8))
                let event = try #require(messages.first { $0.data.contains("published") })
                #expect(event.id != nil)
                let parsed = try JSONValue.parse(Array(event.data.utf8))
                #expect(parsed.object?["service"] == .string("api") && parsed.object?["serial"] == .integer(1))

                // Revoking the token ends the stream at its next look, saying why.
                _ = try await fixture.store.revokeToken(id: record.id, at: Date())
                fixture.controller.core.tokenRevoked()
                let response = try await stream.value
                #expect(response.status == 200)
                #expect(received.value.hasSuffix(": the token no longer works (revoked or expired)\n\n"))
            }
        }
    }

    /// The events seen by a follower, filled on the transfer's thread.
    final class Seen: Sendable {
        private let events = Mutex<[JSONValue]>([])
        func append(_ event: JSONValue) { events.withLock { $0.append(event) } }
        var value: [JSONValue] { events.withLock { $0 } }
    }

    /// `events --follow` (and `rollout wait`) as the CLI runs it: each new event once, in order; when the token is
    /// revoked the stream ends, the follower reconnects, gets the 401 and stops with it instead of retrying for ever.
    @Test(.timeLimit(.minutes(2)), arguments: StoreBackendKind.available)
    func followingGivesEachEventOnceAndStopsWhenTheTokenIsRevoked(_ kind: StoreBackendKind) async throws {
        try await ControllerFixture.with(kind) { fixture in
            let followToken = Token.generate()
            let record = try await fixture.store.createToken(hash: Token.digest(followToken), name: "ci-follow", role: .viewer, at: Date())
            try await fixture.withLiveServer { base in
                let http = LiveHTTP()
                let artifact = try await http.send("POST", "\(base)/v1/artifacts", token: fixture.operatorToken, body: Data("bytes".utf8))
                #expect(artifact.status == 201)
                let digest = SHA256.hash(Array("bytes".utf8))
                let reference = ArtifactReference(url: ArtifactReference.controllerPath(for: digest), sha256: digest, size: 5)
                func publish(_ serial: Int64) async throws { try await Self.publishLive(fixture, base, serial: serial, artifact: reference) }
                // Serial 1 happened before the follower started after it: never shown.
                try await publish(1)
                let start = try await fixture.store.latestEventID()
                let seen = Seen()
                let client = OperatorClient(baseURL: base, token: followToken)
                let follower = Task { try await EventsCommand.follow(client: client, service: "api", after: start) { seen.append($0) } }
                try await publish(2)
                try await publish(3)
                try await Self.until("serials 2 and 3 published") { seen.value.filter { $0.object?["kind"] == .string("published") }.count >= 2 }
                _ = try await fixture.store.revokeToken(id: record.id, at: Date())
                fixture.controller.core.tokenRevoked()
                do {
                    try await follower.value
                    Issue.record("the follower returned instead of stopping with the 401")
                } catch let error as ClientError {
                    guard case .api(_, _, let status, let code, _) = error else {
                        Issue.record("unexpected \(error)")
                        return
                    }
                    #expect(status == 401 && code == "token_revoked", "\(error)")
                }
                let ids = seen.value.compactMap { event -> Int64? in
                    if case .integer(let id)? = event.object?["id"] { return id }
                    return nil
                }
                #expect(ids == ids.sorted() && Set(ids).count == ids.count && ids.allSatisfy { $0 > start }, "each event once, in order: \(ids)")
                let published = seen.value.filter { $0.object?["kind"] == .string("published") }.map { $0.object?["serial"] }
                #expect(published == [.integer(2), .integer(3)])
            }
        }
    }

    /// A client that goes away ends its stream at once (`ferry_event_streams_open` drops), not at the next write: with
    /// `keepalive=60` the stream went on polling the store for up to a minute after the client had left, while the
    /// connection limit already counted the slot free.
    @Test(.timeLimit(.minutes(2)))
    func aStreamEndsWhenItsClientGoesAway() async throws {
        try await ControllerFixture.with { fixture in
            try await fixture.withLiveServer { base in
                let port = try #require(base.split(separator: ":").last.flatMap { Int($0) })
                @Sendable func openStreams() async throws -> Double? {
                    let text = String(decoding: try await LiveHTTP().send("GET", base + "/metrics").body, as: UTF8.self)
                    return text.split(separator: "\n").first { $0.hasPrefix("ferry_event_streams_open ") }.flatMap {
                        Double($0.split(separator: " ")[1])
                    }
                }
                @Sendable func until(_ what: String, _ value: Double) async throws {
                    let deadline = ContinuousClock.now + .seconds(5)
                    while try await openStreams() != value {
                        guard ContinuousClock.now < deadline else {
                            throw FixtureError("\(what): \(try await openStreams().map { "\($0)" } ?? "no gauge")")
                        }
                        try await Task.sleep(for: .milliseconds(50))
                    }
                }
                do {
                    let connection = try RawConnection(port: port)
                    try connection.send(
                        "GET /v1/events/stream?keepalive=60 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(fixture.viewerToken)\r\n\r\n"
                    )
                    #expect(try await connection.waitForStatus(timeout: .seconds(10)) == 200)
                    try await until("one stream open", 1)
                }  // the client closes here
                try await until("no stream open once its client left", 0)
            }
        }
    }

    /// One token holds at most `maximumStreamsPerToken` event streams: the next is a 429 saying why, another token is
    /// not affected, and a stream whose client left frees its slot.
    @Test(.timeLimit(.minutes(2)))
    func aTokenHoldsABoundedNumberOfStreams() async throws {
        try await ControllerFixture.with { fixture in
            try await fixture.withLiveServer { base in
                let port = try #require(base.split(separator: ":").last.flatMap { Int($0) })
                func open(_ token: String) async throws -> (RawConnection, Int?) {
                    let connection = try RawConnection(port: port)
                    try connection.send("GET /v1/events/stream?keepalive=60 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(token)\r\n\r\n")
                    return (connection, try await connection.waitForStatus(timeout: .seconds(10)))
                }
                var held: [RawConnection] = []
                for _ in 0..<InsightRoutes.maximumStreamsPerToken {
                    let (connection, status) = try await open(fixture.viewerToken)
                    #expect(status == 200)
                    held.append(connection)
                }
                let (refused, status) = try await open(fixture.viewerToken)
                #expect(status == 429)
                #expect(String(decoding: refused.received, as: UTF8.self).contains("too_many_streams"))
                #expect(try await open(fixture.operatorToken).1 == 200, "another token is not affected")
                held.removeLast()  // its client leaves
                let deadline = ContinuousClock.now + .seconds(10)
                var again: Int?
                while ContinuousClock.now < deadline {
                    let (connection, status) = try await open(fixture.viewerToken)
                    again = status
                    if status == 200 {
                        held.append(connection)
                        break
                    }
                    try await Task.sleep(for: .milliseconds(200))
                }
                #expect(again == 200, "the slot of the stream whose client left was not given back")
            }
        }
    }

    /// A reconnecting `EventSource` sends the URL it first used (`?after=0`) with `Last-Event-ID`: the id wins, so only
    /// what came after it is sent again. And a cursor past the newest event (a database restored, a made-up id) starts
    /// at the newest, instead of matching nothing for ever.
    @Test(.timeLimit(.minutes(2)))
    func aReconnectResumesAtItsLastEventID() async throws {
        try await ControllerFixture.with { fixture in
            try await fixture.withLiveServer { base in
                let port = try #require(base.split(separator: ":").last.flatMap { Int($0) })
                let http = LiveHTTP()
                #expect(try await http.send("POST", "\(base)/v1/artifacts", token: fixture.operatorToken, body: Data("bytes".utf8)).status == 201)
                let digest = SHA256.hash(Array("bytes".utf8))
                let reference = ArtifactReference(url: ArtifactReference.controllerPath(for: digest), sha256: digest, size: 5)
                @Sendable func publish(_ serial: Int64) async throws {
                    try await Self.publishLive(fixture, base, serial: serial, artifact: reference)
                }
                try await publish(1)
                try await publish(2)
                let events = try JSONValue.parse(Array(try await http.send("GET", "\(base)/v1/events", token: fixture.viewerToken).body))
                var ids: [Int64] = []
                if case .array(let items)? = events.object?["events"] {
                    for item in items { if case .integer(let id)? = item.object?["id"] { ids.append(id) } }
                }
                let newest = try #require(ids.max())
                #expect(ids.count >= 2)

                func stream(_ target: String, lastEventID: Int64?) async throws -> RawConnection {
                    let connection = try RawConnection(port: port)
                    let header = lastEventID.map { "Last-Event-ID: \($0)\r\n" } ?? ""
                    try connection.send(
                        "GET \(target) HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(fixture.viewerToken)\r\n\(header)\r\n"
                    )
                    #expect(try await connection.waitForStatus(timeout: .seconds(10)) == 200)
                    return connection
                }
                let resumed = try await stream("/v1/events/stream?after=0&keepalive=1", lastEventID: newest - 1)
                // Until the newest event came (events are sent oldest first: any older one would have come before it).
                let until = ContinuousClock.now + .seconds(10)
                while !String(decoding: resumed.received, as: UTF8.self).contains("id: \(newest)\n"), ContinuousClock.now < until {
                    try await Task.sleep(for: .milliseconds(50))
                    resumed.poll()
                }
                let text = String(decoding: resumed.received, as: UTF8.self)
                #expect(text.contains("id: \(newest)\n"), "\(text)")
                #expect(ids.filter { $0 < newest }.allSatisfy { !text.contains("id: \($0)\n") }, "events before Last-Event-ID sent again: \(text)")

                let ahead = try await stream("/v1/events/stream?after=999999999&keepalive=1", lastEventID: nil)
                try await publish(3)
                let deadline = ContinuousClock.now + .seconds(10)
                while !String(decoding: ahead.received, as: UTF8.self).contains("\"serial\":3") {
                    guard ContinuousClock.now < deadline else { break }
                    try await Task.sleep(for: .milliseconds(50))
                    ahead.poll()
                }
                #expect(String(decoding: ahead.received, as: UTF8.self).contains("\"serial\":3"), "a cursor ahead of the newest event saw nothing")
            }
        }
    }

    @Test(.timeLimit(.minutes(2)))
    func anOpenStreamDoesNotHoldUpAShutdown() async throws {
        try await ControllerFixture.with { fixture in
            let received = Received()
            let (stream, shutdownStarted) = try await fixture.withLiveServer { base in
                let request = HTTPClient.Request(method: .get, url: "\(base)/v1/events/stream").withBearerToken(fixture.viewerToken)
                let stream = Task { try await HTTPClient().stream(request, idleTimeout: .seconds(30)) { received.append($0) } }
                try await Self.until("the stream's first bytes") { received.value.contains("retry:") }
                // The graceful shutdown starts as this returns.
                return (stream, ContinuousClock.now)
            }
            // The graceful shutdown answered the stream: it ended with the server's last comment (not the client's idle
            // timeout), and the shutdown did not wait for that timeout either.
            _ = try await stream.value
            #expect(received.value.contains("the controller is shutting down"))
            #expect(shutdownStarted.duration(to: .now) < .seconds(30))
        }
    }

    /// Publishes serial `serial` of api through the live server at `base`, with `artifact` (stored already).
    static func publishLive(_ fixture: ControllerFixture, _ base: String, serial: Int64, artifact: ArtifactReference) async throws {
        let envelope = try fixture.envelope(ControllerFixture.release(serial: serial, artifact: artifact))
        let published = try await LiveHTTP().send("POST", "\(base)/v1/releases", token: fixture.operatorToken, body: Data(envelope.readableBytesView))
        #expect(published.status == 201)
    }

    static func until(_ what: String, timeout: Duration = .seconds(20), _ condition: () -> Bool) async throws {
        let deadline = ContinuousClock.now + timeout
        while !condition() {
            guard ContinuousClock.now < deadline else { throw FixtureError("timed out waiting for \(what)") }
            try await Task.sleep(for: .milliseconds(50))
        }
    }
}
