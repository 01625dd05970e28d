import Foundation
import Shared
import TestSupport
import Testing

@testable import Controller

/// The CLI reads the whole fleet a page at a time (`status`, `agents`, `plan`, `approve`). Failures first, an agent
/// moves to another page when its report changes between two page reads, and it was skipped or listed twice without a
/// word; by name (`sort=name`), it stays put.
@Suite struct FleetPagingTests {
    static func status(_ phase: String) -> String {
        #"{"agentVersion":"1.0","hostname":"h","processManager":"builtin","services":[{"service":"api","serial":1,"phase":"\#(phase)","message":"m","health":"\#(phase == "failed" ? "unhealthy" : "healthy")","processes":[]}]}"#
    }

    @Test func everyPageReadListsEachAgentOnceInTheControllersOrder() async throws {
        try await ControllerFixture.with { fixture in
            try await fixture.withLiveServer { url in
                let http = LiveHTTP()
                var tokens: [String: (id: String, token: String)] = [:]
                for index in 1...7 {
                    let name = "web-0\(index)"
                    let agent = try await http.enroll(url, token: fixture.enrollToken, name: name)
                    tokens[name] = (agent.agentID, agent.token)
                }
                func report(_ name: String, _ phase: String) async throws {
                    let agent = try #require(tokens[name])
                    let answer = try await http.send(
                        "POST",
                        url + "/v1/agents/\(agent.id)/status",
                        token: agent.token,
                        headers: ["Content-Type": "application/json"],
                        body: Data(Self.status(phase).utf8)
                    )
                    try #require(answer.status == 204, "\(String(decoding: answer.body, as: UTF8.self))")
                }
                for name in tokens.keys { try await report(name, name == "web-05" || name == "web-06" ? "failed" : "running") }

                // By name, each page after the last name read: a report that changes the failures-first order, or an
                // agent removed before the page (an offset would then skip the next one), moves nothing.
                func names(_ path: String) async throws -> [String] {
                    let page = try await http.send("GET", url + path, token: fixture.viewerToken)
                    return FleetDocument.agents(try JSONValue.parse(Array(page.body))).map { FleetDocument.text($0["name"]) }
                }
                var byName = try await names("/v1/fleet?sort=name&limit=3")
                try await report("web-07", "failed")
                #expect(try await http.send("DELETE", url + "/v1/agents/web-02", token: fixture.operatorToken).status == 200)
                byName += try await names("/v1/fleet?sort=name&limit=3&after=\(byName.last ?? "")")
                try await report("web-07", "running")
                byName += try await names("/v1/fleet?sort=name&limit=3&after=\(byName.last ?? "")")
                #expect(byName == (1...7).map { "web-0\($0)" })
                #expect(try await names("/v1/fleet?sort=name&limit=3&offset=3") == ["web-05", "web-06", "web-07"], "an offset skips web-04")
                // A page after a name counts the agents after it: "of N" and whether a next page exists hold for it.
                let tail = try JSONValue.parse(
                    Array(try await http.send("GET", url + "/v1/fleet?sort=name&limit=3&after=web-04", token: fixture.viewerToken).body)
                )
                #expect(tail.object?["page"]?.object?["matching"] == .integer(3), "\(tail.object?["page"] ?? .null)")
                let basic = "Basic " + Data("viewer:\(fixture.viewerToken)".utf8).base64EncodedString()
                let html = String(
                    decoding: try await http.send("GET", url + "/?sort=name&after=web-04&limit=3", headers: ["Authorization": basic]).body,
                    as: UTF8.self
                )
                #expect(html.contains("1–3 of 3 agents") && !html.contains("data-page=\"next\"") && html.contains("· by name"), "\(html)")

                // The CLI's reading: one page as the controller orders it, or many pages by name put in the same order.
                let client = OperatorClient(baseURL: url, token: fixture.viewerToken)
                let whole = FleetDocument.agents(try await FleetDocument.fetchAll(client)).map { FleetDocument.text($0["name"]) }
                #expect(whole == ["web-05", "web-06", "web-01", "web-03", "web-04", "web-07"])
                for size in [2, 3, 5] {
                    let paged = try await FleetDocument.fetchAll(client, pageSize: size)
                    #expect(FleetDocument.agents(paged).map { FleetDocument.text($0["name"]) } == whole, "pages of \(size)")
                    #expect(paged.object?["page"]?.object?["returned"] == .integer(6))
                }
            }
        }
    }

    /// A dashboard page left open past the end of the fleet (a scale-in under `?offset=400`: its reloads keep the
    /// offset) says so and links to the last page; it said "no agent matches" and "No agent has enrolled yet." under a
    /// header counting the agents.
    @Test func aDashboardPagePastTheEndSaysSo() async throws {
        try await ControllerFixture.with { fixture in
            try await fixture.withLiveServer { url in
                let http = LiveHTTP()
                for index in 1...5 { _ = try await http.enroll(url, token: fixture.enrollToken, name: "web-0\(index)") }
                func page(_ query: String) async throws -> String {
                    let answer = try await http.send("GET", url + "/" + query, token: fixture.viewerToken)
                    try #require(answer.status == 200)
                    return String(decoding: answer.body, as: UTF8.self)
                }
                let past = try await page("?limit=2&offset=10")
                #expect(past.contains("this page is past the last of 5 matching agents"), "\(past.prefix(200))")
                #expect(past.contains(#"data-query="offset=4&amp;limit=2" data-page="last""#), "the last page holds the 5th agent")
                #expect(!past.contains("No agent has enrolled yet."))
                #expect(!past.contains(#"data-page="previous""#))
                let last = try await page("?limit=2&offset=4")
                #expect(last.contains("5–5 of 5 agents"))
                let none = try await page("?q=nobody")
                #expect(none.contains("no agent matches") && !none.contains("No agent has enrolled yet."))
            }
        }
    }
}

/// `status --service S --json`: the fleet document of that service alone, counts included.
@Suite struct FleetDocumentFilterTests {
    @Test func everyPartOfTheDocumentIsThatServices() throws {
        func entry(_ service: String) -> JSONValue { .object(["service": .string(service)]) }
        func agent(_ name: String, _ services: [String]) -> JSONValue {
            .object(["name": .string(name), "services": .array(services.map(entry))])
        }
        let fleet = JSONValue.object([
            "services": .array([.object(["name": .string("api")]), .object(["name": .string("web")])]),
            "summary": .array([entry("api"), entry("web")]), "rollouts": .array([entry("web"), entry("api")]),
            "events": .array([entry("web")]), "approvals": .array([entry("api"), entry("web")]),
            "agents": .array([agent("a-1", ["api", "web"]), agent("w-1", ["web"]), agent("w-2", ["web"])]),
            "page": .object(["offset": .integer(0), "limit": .integer(1000), "returned": .integer(3), "matching": .integer(3)]),
        ])
        let filtered = try #require(FleetDocument.filter(fleet, service: "api").object)
        #expect(filtered["page"] == .object(["offset": .integer(0), "limit": .integer(1000), "returned": .integer(1), "matching": .integer(1)]))
        #expect(FleetDocument.agents(.object(filtered)).map { FleetDocument.text($0["name"]) } == ["a-1"])
        #expect(FleetDocument.agents(.object(filtered)).first?["services"] == .array([entry("api")]))
        for key in ["summary", "rollouts", "approvals"] { #expect(filtered[key] == .array([entry("api")]), "\(key)") }
        #expect(filtered["events"] == .array([]))
        #expect(filtered["services"] == .array([.object(["name": .string("api")])]))
        #expect(FleetDocument.filter(fleet, service: nil) == fleet)
    }
}
