import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import Shared
import TestSupport
import Testing

@testable import Controller

/// One enrolment in use by two running agents (an image baked after enrolment, a copied token) is noticed from the
/// hostnames of its reports going back and forth; a renamed host or a restarted agent is not.
@Suite("Agent identity reported from two hosts")
struct AgentIdentityWatchTests {
    struct Case: Sendable, CustomStringConvertible {
        let label: String
        /// (seconds from the start, hostname) of each report of one agent.
        let reports: [(Double, String)]
        /// The indices of the reports that make a conflict to say.
        let said: [Int]
        var description: String { label }
    }

    static let cases: [Case] = [
        Case(label: "one host", reports: [(0, "a"), (30, "a"), (60, "a"), (90, "a")], said: []),
        Case(label: "a host renamed once", reports: [(0, "a"), (30, "b"), (60, "b"), (90, "b")], said: []),
        Case(label: "renamed, then renamed again to a third name", reports: [(0, "a"), (30, "b"), (60, "c"), (90, "a")], said: []),
        Case(label: "renamed and back once (a late report of the old name)", reports: [(0, "a"), (30, "b"), (31, "a"), (60, "a")], said: []),
        Case(label: "two hosts in turn", reports: [(0, "a"), (1, "b"), (30, "a"), (31, "b"), (60, "a"), (61, "b")], said: [3]),
        Case(
            label: "said again once the window has passed, while it lasts",
            reports: [(0, "a"), (1, "b"), (30, "a"), (31, "b"), (300, "a"), (601, "b"), (632, "a"), (633, "b")],
            said: [3, 6]
        ),
        Case(label: "back and forth, but further apart than the window", reports: [(0, "a"), (1, "b"), (700, "a"), (1400, "b")], said: []),
        Case(label: "reports without a hostname say nothing", reports: [(0, "a"), (1, ""), (30, "a"), (31, ""), (60, "a")], said: []),
    ]

    @Test(arguments: cases)
    func conflictsAreSaidFromTheHostnames(_ check: Case) {
        let watch = AgentIdentityWatch()
        let start = Date(timeIntervalSince1970: 1_800_000_000)
        var said: [Int] = []
        for (index, (seconds, hostname)) in check.reports.enumerated() {
            if let conflict = watch.observe(agentID: "agt_1", hostname: hostname, at: start.addingTimeInterval(seconds)) {
                #expect(conflict == .init(agentID: "agt_1", hostnames: ["a", "b"]))
                said.append(index)
            }
        }
        #expect(said == check.said)
    }

    /// One agent token flipping its hostname on every report, as fast as it can: the watch keeps the last two
    /// switch-backs, not one per report for the window (which every report then filtered under the shared lock).
    @Test func aHostnameFlippingOnEveryReportKeepsNoMoreThanItCounts() {
        let watch = AgentIdentityWatch()
        let start = Date(timeIntervalSince1970: 1_800_000_000)
        var said = 0
        for index in 0..<20_000 {
            let instant = start.addingTimeInterval(Double(index) / 100)
            if watch.observe(agentID: "agt_1", hostname: index % 2 == 0 ? "a" : "b", at: instant) != nil { said += 1 }
        }
        #expect(watch.keptSwitchBacks(agentID: "agt_1") == 2)
        #expect(said == 1, "said once per window")
        #expect(watch.standing(agentID: "agt_1", at: start.addingTimeInterval(200)) != nil)
    }

    /// Several controllers on one database, each with its own watch: each report goes to one controller, and the agents
    /// row carries the hostname of the last report stored (by any controller), which the store returns as the report's
    /// `hostnameBefore`. The agent enrolled from host `a`.
    struct AcrossControllers: Sendable, CustomStringConvertible {
        let label: String
        /// (seconds from the start, hostname, the controller that receives the report) of each report.
        let reports: [(Double, String, Int)]
        /// (report index, controller) of each conflict said.
        let said: [[Int]]
        var description: String { label }
    }

    static let acrossControllers: [AcrossControllers] = [
        AcrossControllers(
            label: "two hosts, each kept on its own controller by the load balancer: both controllers notice",
            reports: [(0, "a", 0), (1, "b", 1), (30, "a", 0), (31, "b", 1), (60, "a", 0), (61, "b", 1), (90, "a", 0)],
            said: [[3, 1], [4, 0]]
        ),
        AcrossControllers(
            label: "two hosts on one controller: as without the row",
            reports: [(0, "a", 0), (1, "b", 0), (30, "a", 0), (31, "b", 0), (60, "a", 0)],
            said: [[3, 0]]
        ),
        AcrossControllers(
            label: "two hosts, the connections moving between controllers",
            reports: [(0, "a", 0), (1, "b", 1), (30, "a", 1), (31, "b", 0), (60, "a", 0), (61, "b", 1), (90, "a", 1), (91, "b", 0)],
            said: [[5, 1], [7, 0]]
        ),
        AcrossControllers(
            label: "a host renamed, its connection moving to the other controller",
            reports: [(0, "a", 0), (30, "b", 1), (60, "b", 0), (90, "b", 1), (120, "b", 0), (150, "b", 1)],
            said: []
        ),
        AcrossControllers(
            label: "one host whose reports go to either controller",
            reports: [(0, "a", 0), (30, "a", 1), (60, "a", 0), (90, "a", 1), (120, "a", 1), (150, "a", 0)],
            said: []
        ),
        AcrossControllers(
            label: "renamed and back once, across controllers (a late report of the old name)",
            reports: [(0, "a", 0), (30, "b", 1), (31, "a", 0), (60, "a", 1), (90, "a", 0)],
            said: []
        ),
    ]

    @Test(arguments: acrossControllers)
    func everyControllerCountsTheOthersTurns(_ check: AcrossControllers) {
        let watches = [AgentIdentityWatch(), AgentIdentityWatch()]
        let start = Date(timeIntervalSince1970: 1_800_000_000)
        var row = "a"
        var said: [[Int]] = []
        for (index, (seconds, hostname, controller)) in check.reports.enumerated() {
            let before = row
            row = hostname
            let conflict = watches[controller].observe(
                agentID: "agt_1",
                hostname: hostname,
                before: before,
                at: start.addingTimeInterval(seconds)
            )
            if let conflict {
                #expect(conflict == .init(agentID: "agt_1", hostnames: ["a", "b"]))
                said.append([index, controller])
            }
        }
        #expect(said == check.said)
    }

    /// (seconds from the start, hostname) of each report, then (seconds, the standing conflict's hostnames or `nil`)
    /// asked after them.
    static let standings: [(label: String, reports: [(Double, String)], asked: [(Double, [String]?)])] = [
        ("one host", [(0, "a"), (30, "a")], [(31, nil)]),
        ("renamed once", [(0, "a"), (30, "b"), (60, "b")], [(61, nil)]),
        ("renamed and back once", [(0, "a"), (30, "b"), (31, "a")], [(32, nil)]),
        (
            "two hosts in turn: stands until a window after the last switch-back",
            [(0, "a"), (1, "b"), (30, "a"), (31, "b"), (60, "a")],
            [(61, ["a", "b"]), (659, ["a", "b"]), (660, nil), (5_000, nil)]
        ),
        (
            "lapsed, then back: noticed afresh",
            [(0, "a"), (1, "b"), (30, "a"), (31, "b"), (1_000, "a"), (1_001, "b"), (1_030, "a")],
            [(1_000.5, nil), (1_031, ["a", "b"])]
        ),
    ]

    @Test func theStandingConflictLastsWhileTheHostsTakeTurns() {
        let start = Date(timeIntervalSince1970: 1_800_000_000)
        for check in Self.standings {
            let watch = AgentIdentityWatch()
            var pending = check.reports[...]
            for (seconds, expected) in check.asked {
                // Every report up to the time asked, then the question.
                while let (at, hostname) = pending.first, at <= seconds {
                    _ = watch.observe(agentID: "agt_1", hostname: hostname, at: start.addingTimeInterval(at))
                    pending = pending.dropFirst()
                }
                let standing = watch.standing(agentID: "agt_1", at: start.addingTimeInterval(seconds))
                #expect(standing?.hostnames == expected, "\(check.label), at \(seconds) s")
            }
        }
        // When it was noticed: the switch-back that made it, kept while it stands.
        let watch = AgentIdentityWatch()
        for (seconds, host) in [(0.0, "a"), (1, "b"), (30, "a"), (31, "b"), (60, "a"), (61, "b")] {
            _ = watch.observe(agentID: "agt_1", hostname: host, at: start.addingTimeInterval(seconds))
        }
        let standing = watch.standing(agentID: "agt_1", at: start.addingTimeInterval(62))
        #expect(standing?.noticedAt == start.addingTimeInterval(31) && standing?.lastSwitchAt == start.addingTimeInterval(61))
        #expect(watch.standing(agentID: "agt_2", at: start.addingTimeInterval(62)) == nil, "an agent never seen")
    }

    @Test func agentsAreJudgedApartAndForgotten() {
        let watch = AgentIdentityWatch()
        let start = Date(timeIntervalSince1970: 1_800_000_000)
        // Two agents each on a host of its own, with the same two names: no conflict.
        for step in 0..<6 {
            let at = start.addingTimeInterval(Double(step))
            #expect(watch.observe(agentID: "one", hostname: "a", at: at) == nil)
            #expect(watch.observe(agentID: "two", hostname: "b", at: at) == nil)
        }
        // Forgotten (removed): its next host starts afresh.
        #expect(watch.observe(agentID: "one", hostname: "b", at: start.addingTimeInterval(10)) == nil)
        #expect(watch.observe(agentID: "one", hostname: "a", at: start.addingTimeInterval(11)) == nil)
        watch.forget(agentID: "one")
        #expect(watch.observe(agentID: "one", hostname: "b", at: start.addingTimeInterval(12)) == nil)
        #expect(watch.observe(agentID: "one", hostname: "a", at: start.addingTimeInterval(13)) == nil)
        // At capacity, an agent not yet followed is not followed.
        let full = AgentIdentityWatch(capacity: 1)
        _ = full.observe(agentID: "first", hostname: "a", at: start)
        for (step, host) in ["a", "b", "a", "b", "a"].enumerated() {
            #expect(full.observe(agentID: "second", hostname: host, at: start.addingTimeInterval(Double(step))) == nil)
        }
        // Once the agent it follows has been silent for a whole window (an instance replaced without being removed),
        // it is let go and the new one is followed: its two hosts taking turns are seen.
        let later = start.addingTimeInterval(full.window + 1)
        let conflicts = ["a", "b", "a", "b", "a"].enumerated().compactMap { step, host in
            full.observe(agentID: "second", hostname: host, at: later.addingTimeInterval(Double(step)))
        }
        #expect(conflicts.map(\.agentID) == ["second"])
        #expect(full.followedCount == 1)
        // An agent that keeps reporting is not let go: "second" reported within the window, so "third" waits.
        let third = ["a", "b", "a", "b", "a"].enumerated().compactMap { step, host in
            full.observe(agentID: "third", hostname: host, at: later.addingTimeInterval(full.window - 1 + Double(step)))
        }
        #expect(third.isEmpty)
        #expect(full.standing(agentID: "second", at: later.addingTimeInterval(10)) != nil)
    }

    /// Through the API: two hosts reporting as one agent count once in `/metrics`; a renamed host does not count.
    @Test func theControllerCountsThemFromTheReports() async throws {
        try await ControllerFixture.with { fixture in
            try await fixture.withRouter { client in
                let twin = try await fixture.enroll(client, name: "twin")
                let renamed = try await fixture.enroll(client, name: "renamed")
                func report(_ agent: (id: String, token: String), hostname: String) async throws {
                    var headers = ControllerFixture.bearer(agent.token)
                    headers[.contentType] = "application/json"
                    let body = #"{"agentVersion":"1.0","hostname":"\#(hostname)","processManager":"builtin","services":[]}"#
                    let response = try await client.execute(
                        uri: "/v1/agents/\(agent.id)/status",
                        method: .post,
                        headers: headers,
                        body: ByteBuffer(string: body)
                    )
                    #expect(response.status == .noContent)
                }
                for host in ["ip-10-0-1-2", "ip-10-0-1-3", "ip-10-0-1-2", "ip-10-0-1-3", "ip-10-0-1-2"] {
                    try await report(twin, hostname: host)
                }
                for host in ["old-name", "new-name", "new-name", "new-name"] { try await report(renamed, hostname: host) }
                // Shown where an operator looks: the agent document, `agents show` and the agent's dashboard page.
                let twinDocument = try await ControllerFixture.json(InsightRoutesTests.get(client, "/v1/agents/twin", token: fixture.viewerToken))
                let conflict = try #require(twinDocument.object?["identityConflict"]?.object)
                #expect(conflict["hostnames"] == .array([.string("ip-10-0-1-2"), .string("ip-10-0-1-3")]))
                #expect(conflict["noticedAt"].map { FleetDocument.text($0).hasPrefix("20") } == true)
                #expect(conflict["lastSwitchAt"].map { FleetDocument.text($0).hasPrefix("20") } == true)
                let shown = AgentsShowCommand.describe(twinDocument, logLines: 0)
                #expect(shown.contains { $0.hasPrefix("WARNING: two running agents report as this agent, from ip-10-0-1-2 and ip-10-0-1-3") })
                let renamedDocument = try await ControllerFixture.json(
                    InsightRoutesTests.get(client, "/v1/agents/renamed", token: fixture.viewerToken)
                )
                #expect(renamedDocument.object?["identityConflict"] == .null)
                #expect(!AgentsShowCommand.describe(renamedDocument, logLines: 0).contains { $0.hasPrefix("WARNING") })
                let (page, html) = try await InsightRoutesTests.page(client, "/agents/twin", token: fixture.viewerToken)
                #expect(page.status == .ok)
                #expect(html.contains(#"id="identity-conflict" data-hostnames="ip-10-0-1-2 and ip-10-0-1-3""#))
                let (_, renamedHTML) = try await InsightRoutesTests.page(client, "/agents/renamed", token: fixture.viewerToken)
                #expect(!renamedHTML.contains("identity-conflict"))
                // And where an operator looks at the whole fleet: the fleet document, `agents` and the dashboard's rows.
                try await Self.expectFleetFlags(client, token: fixture.viewerToken, ["renamed": false, "twin": true])
            }
            #expect(fixture.counter("ferry_agent_identity_conflicts_total") == 1)
        }
    }

    /// `/v1/fleet`, the `agents` table and the dashboard's agent rows flag exactly the agents `expected` says.
    static func expectFleetFlags(_ client: any TestClientProtocol, token: String, _ expected: [String: Bool]) async throws {
        let fleet = try await ControllerFixture.json(InsightRoutesTests.get(client, "/v1/fleet", token: token))
        let agents = FleetDocument.agents(fleet)
        var flags: [String: Bool] = [:]
        for agent in agents { flags[FleetDocument.text(agent["name"])] = agent["identityConflict"] == .bool(true) }
        #expect(flags == expected)
        // Conflicts come first, before failures and names.
        let order = agents.map { $0["identityConflict"] == .bool(true) }
        #expect(order == order.sorted { $0 && !$1 }, "\(agents.map { FleetDocument.text($0["name"]) })")
        let table = AgentsListCommand.table(agents)
        let (_, html) = try await InsightRoutesTests.page(client, "/", token: token)
        for (name, flagged) in expected {
            let line = table.split(separator: "\n").first { $0.contains(" \(name)") }
            #expect(line?.contains("\(name) (identity conflict)") == flagged, "\(table)")
            let row = html.components(separatedBy: "data-agent=\"\(name)\"").dropFirst().first?.components(separatedBy: "</tr>").first
            #expect(row?.contains("data-identity-conflict") == flagged, "\(name): \(row ?? "no row")")
        }
    }

    static func report(_ client: any TestClientProtocol, _ agent: (id: String, token: String), hostname: String) async throws {
        var headers = ControllerFixture.bearer(agent.token)
        headers[.contentType] = "application/json"
        let body = #"{"agentVersion":"1.0","hostname":"\#(hostname)","processManager":"builtin","services":[]}"#
        let response = try await client.execute(uri: "/v1/agents/\(agent.id)/status", method: .post, headers: headers, body: ByteBuffer(string: body))
        #expect(response.status == .noContent)
    }

    /// A controller that received none of the reports (restarted, or another one behind the load balancer) shows the
    /// conflict from the database; re-enrolling the agent (a new token) clears it.
    @Test func aStandingConflictIsShownByAControllerThatSawNoneOfIt() async throws {
        let directory = try TestPaths.makeTemporaryDirectory("ferry-identity-restart")
        defer { try? FileManager.default.removeItem(at: directory) }
        let twin = try await ControllerFixture.with(directory: directory) { fixture in
            try await fixture.withRouter { client in
                let twin = try await fixture.enroll(client, name: "twin")
                for host in ["ip-10-0-1-2", "ip-10-0-1-3", "ip-10-0-1-2", "ip-10-0-1-3", "ip-10-0-1-2"] {
                    try await Self.report(client, twin, hostname: host)
                }
                return twin
            }
        }
        // The same database under a new controller: its watch has seen nothing.
        try await ControllerFixture.with(directory: directory) { fixture in
            try await fixture.withRouter { client in
                let document = try await ControllerFixture.json(InsightRoutesTests.get(client, "/v1/agents/twin", token: fixture.viewerToken))
                let conflict = try #require(document.object?["identityConflict"]?.object, "\(document)")
                #expect(conflict["hostnames"] == .array([.string("ip-10-0-1-2"), .string("ip-10-0-1-3")]))
                let noticed = try #require(conflict["noticedAt"].flatMap { Timestamp.parse(FleetDocument.text($0)) })
                let last = try #require(conflict["lastSwitchAt"].flatMap { Timestamp.parse(FleetDocument.text($0)) })
                #expect(noticed <= last)
                let (_, html) = try await InsightRoutesTests.page(client, "/agents/twin", token: fixture.viewerToken)
                #expect(html.contains(#"id="identity-conflict" data-hostnames="ip-10-0-1-2 and ip-10-0-1-3""#))
                try await Self.expectFleetFlags(client, token: fixture.viewerToken, ["twin": true])
                // One more turn here: the stored conflict and this controller's own view make one.
                try await Self.report(client, twin, hostname: "ip-10-0-1-3")
                let again = try await ControllerFixture.json(InsightRoutesTests.get(client, "/v1/agents/twin", token: fixture.viewerToken))
                let combined = try #require(again.object?["identityConflict"]?.object)
                #expect(combined["noticedAt"] == conflict["noticedAt"], "the earliest notice stays")
                // Enrolled afresh by an operator: a new token, and no conflict.
                _ = try await fixture.enroll(client, name: "twin", replacingWith: fixture.operatorToken)
                #expect(try await fixture.store.identityConflict(agentID: twin.id) == nil)
                let replaced = try await ControllerFixture.json(InsightRoutesTests.get(client, "/v1/agents/twin", token: fixture.viewerToken))
                #expect(replaced.object?["identityConflict"] == .null)
                try await Self.expectFleetFlags(client, token: fixture.viewerToken, ["twin": false])
            }
        }
    }
}
