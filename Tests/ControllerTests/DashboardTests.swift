import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Shared
import Testing

@testable import Controller

/// The dashboard page rendered from a fleet seeded through the real router and SQLite store: matrix, stale agents,
/// rollouts, events, escaping, self-containment and the self-refresh hooks.
@Suite struct DashboardTests {
    /// a (web, worker), b (web), c (web); web 1.0.0 then 2.0.0 in `waves:34,100`; a rolls 2.0.0 back, c went silent.
    @Test func pageShowsMatrixStaleAgentHaltedRolloutAndEvents() async throws {
        try await RolloutHarness.with { harness in
            try await harness.withClient { api in
                let a = try await api.enroll("agent-a", services: ["web", "worker"])
                let b = try await api.enroll("agent-b")
                let c = try await api.enroll("agent-c")
                try await api.mustPublish(serial: 1, version: "1.0.0")
                try await api.mustPublish(service: "worker", serial: 1, version: "1.4.0")
                for agent in [a, b, c] { try await api.report(agent, running("web", serial: 1, version: "1.0.0")) }
                try await api.report(a, running("worker", serial: 1, version: "1.4.0"))

                // c never reports again: stale after three 15 s poll intervals.
                harness.clock.advance(seconds: 90)
                try await api.mustPublish(serial: 2, version: "2.0.0", query: "strategy=waves:34,100&waveStableSeconds=3")
                try await api.reportRolledBack(a, failed: 2, runs: 1, reason: "crashed at boot")
                try await api.report(b, running("web", serial: 1, version: "1.0.0"))

                let (html, headers) = try await page(api, token: harness.viewerToken)

                #expect(html.contains("3 agents · 1 stale · 2 services · 1 open rollout · <strong class=\"alert\">1 halted</strong>"))
                // A filter narrows the list, not the fleet's counts: the page and `/v1/fleet` count every agent.
                for filter in ["?service=worker", "?stale=false", "?q=agent-a"] {
                    let (filtered, _) = try await page(api, token: harness.viewerToken, path: "/" + filter)
                    #expect(filtered.contains("3 agents · 1 stale · 2 services"), "\(filter)")
                    let fleet = try await api.client.execute(
                        uri: "/v1/fleet" + filter,
                        method: .get,
                        headers: [.authorization: "Bearer \(harness.viewerToken)"]
                    )
                    #expect(try JSONValue.parse(Array(buffer: fleet.body)).object?["staleAgents"] == .integer(1), "\(filter)")
                }
                // Rows: c is stale, and says so in words, not only in colour.
                #expect(try tag(html, "tr", "data-agent", "agent-a").contains("data-stale=\"false\""))
                #expect(try tag(html, "tr", "data-agent", "agent-b").contains("data-stale=\"false\""))
                let staleRow = try element(html, "tr", "data-agent", "agent-c")
                #expect(staleRow.hasPrefix("<tr class=\"stale\""))
                #expect(staleRow.contains("data-stale=\"true\""))
                #expect(staleRow.contains("<span class=\"badge stale\" title=\"no status report for three poll intervals\">stale</span> 1m ago"))

                // Cells: version, serial, phase, health, target serial; "—" where the agent does not run the service.
                let aRow = try element(html, "tr", "data-agent", "agent-a")
                let aWeb = try element(aRow, "td", "data-service", "web")
                #expect(aWeb.contains("data-version=\"v1\" data-serial=\"1\" data-phase=\"rolled-back\" data-health=\"unhealthy\""))
                #expect(aWeb.contains("<span class=\"target\" title=\"target serial\">→ 2</span>"))
                #expect(aWeb.contains("crashed at boot"))
                #expect(try tag(aRow, "td", "data-service", "worker").contains("data-version=\"1.4.0\" data-serial=\"1\" data-phase=\"running\""))
                let bRow = try element(html, "tr", "data-agent", "agent-b")
                let bWeb = try tag(bRow, "td", "data-service", "web")
                #expect(bWeb.contains("data-version=\"1.0.0\" data-serial=\"1\" data-phase=\"running\" data-health=\"healthy\""))
                #expect(try element(bRow, "td", "data-service", "worker").contains("<span class=\"none\">—</span>"))
                #expect(html.contains("<th data-service=\"web\">web<small>latest 2.0.0 · serial 2</small></th>"))

                // Rollouts: web halted at wave 1/2 with the reason; worker completed.
                let web = try element(html, "article", "data-rollout-service", "web")
                #expect(web.contains("data-rollout-version=\"2.0.0\" data-rollout-state=\"halted\""))
                #expect(web.contains("<span class=\"badge state halted\">halted</span> <span class=\"wave\">wave 1/2</span>"))
                let reason = try element(web, "p", "class", "reason")
                #expect(reason.contains("agent-a (rolled-back): crashed at boot"))
                #expect(web.contains("<span class=\"part failed\" style=\"width: 33.3%\" title=\"1 failed\"></span>"))
                #expect(web.contains("<span class=\"part pending\" style=\"width: 66.7%\" title=\"2 pending\"></span>"))
                #expect(web.contains("0 healthy · <span class=\"key updated\"></span>0 updated · <span class=\"key failed\"></span>1 failed"))
                #expect(web.contains("<span class=\"chip failed\" data-progress=\"failed\">agent-a</span>"))
                #expect(web.contains("waves:34,100 · stable serial 1 · waves stable after 3 s · max failures 0"))
                let worker = try element(html, "article", "data-rollout-service", "worker")
                #expect(worker.contains("data-rollout-state=\"completed\""))
                #expect(worker.contains("all · stable serial none · changed"))

                // Events, newest first, with the agent's failure reason.
                let kinds = attributeValues(html, "data-event-kind")
                #expect(kinds == ["halted", "rolled-back", "published", "published", "published"])
                let rolledBack = try element(html, "tr", "data-event-kind", "rolled-back")
                #expect(rolledBack.contains("agent agent-a rolled back serial 2 of web: crashed at boot"))
                #expect(rolledBack.contains("<small>agent agent-a</small>"))

                // Served with the policy that allows exactly the page's own script.
                let policy = try #require(headers[.contentSecurityPolicy])
                #expect(policy.contains("default-src 'none'"))
                let hash = try scriptHash(of: html)
                #expect(policy.contains("script-src '\(hash)'"))
            }
        }
    }

    /// One hostile value per place where agent- or operator-supplied text reaches the page, each checked to appear
    /// escaped (and so as text in a browser), never as markup.
    @Test(arguments: HostileField.allCases, hostileTexts)
    func hostileTextIsEscaped(_ field: HostileField, _ text: HostileText) async throws {
        try await RolloutHarness.with { harness in
            try await harness.withClient { api in
                func value(_ own: HostileField, _ benign: String) -> String { own == field ? text.raw : benign }
                let request = EnrollRequest(name: value(.agentName, "agent-a"), hostname: value(.hostname, "a.test"), services: ["web"])
                let enrolled = try await api.call(.post, "/v1/agents", token: harness.enrollToken, body: Array(request.json.encoded()))
                let agent: String
                let token: String
                if EnrollRequest.nameProblem(request.name) != nil {
                    // Refused as a name now (invisible formatting characters); an older controller stored it, and the
                    // page still shows it escaped.
                    #expect(enrolled.status == 422)
                    token = Token.generate()
                    let record = try await harness.store.enrollAgent(
                        proposedID: "agt_hostile",
                        name: request.name,
                        hostname: request.hostname,
                        services: request.services,
                        tokenHash: Token.digest(token),
                        at: Date()
                    )
                    agent = record.id
                } else {
                    #expect(enrolled.status == 201)
                    agent = try #require(enrolled.json["agentId"].string)
                    token = try #require(enrolled.json["token"].string)
                }
                try await api.mustPublish(serial: 1, version: "1.0.0")
                try await api.mustPublish(serial: 2, version: "2.0.0", query: "strategy=one-at-a-time")
                let reason = value(.failureReason, "crashed at boot")
                let status = ServiceStatus(
                    service: "web",
                    serial: 1,
                    version: value(.reportedVersion, "1.0.0"),
                    targetSerial: 2,
                    phase: .rolledBack,
                    message: value(.statusMessage, "rolled back"),
                    health: .healthy,
                    failures: [ReleaseFailure(serial: 2, reason: reason, kind: "rolled-back")],
                    processes: []
                )
                let report = StatusReport(
                    agentVersion: value(.agentVersion, "0.1.0"),
                    hostname: value(.hostname, "a.test"),
                    processManager: value(.processManager, "pm2"),
                    services: [status],
                    trustRoot: TrustRootStatus(version: 2, expiresAt: nil, problem: value(.trustRootProblem, "trust root expired"))
                )
                let posted = try await api.call(.post, "/v1/agents/\(agent)/status", token: token, body: Array(report.json.encoded()))
                #expect(posted.status == 204)
                #expect(try await api.rollout()["state"].string == "halted")

                let (html, _) = try await page(api, token: harness.viewerToken)
                #expect(html.contains(text.escaped), "\(field) is shown, escaped")
                // The agent's trust root problem is a badge on its row, with the whole text as its title.
                let row = try element(html, "tr", "data-agent-id", agent)
                #expect(row.contains("· root 2</small>"), "\(row)")
                #expect(
                    row.contains(
                        "<span class=\"badge tone-bad\" data-trust-root-problem title=\"\(field == .trustRootProblem ? text.escaped : "trust root expired")\">"
                    ),
                    "\(row)"
                )
                if text.raw != text.escaped { #expect(!html.contains(text.raw), "\(field) never appears unescaped") }
                // Nothing but the page's own markup: one script element, no element the hostile text could inject.
                #expect(html.components(separatedBy: "<script").count == 2)
                #expect(!html.contains("<img") && !html.contains("<h1>owned"))
            }
        }
    }

    /// No fonts, scripts, images or styles from anywhere, not even from the controller itself: the page works on an
    /// isolated network and under `default-src 'none'`.
    @Test func pageLoadsNothingFromElsewhere() async throws {
        try await RolloutHarness.with { harness in
            try await harness.withClient { api in
                let agent = try await api.enroll("agent-a")
                try await api.mustPublish(serial: 1, version: "1.0.0")
                try await api.reportHealthy(agent, serial: 1)
                let (html, _) = try await page(api, token: harness.viewerToken)
                #expect(html.contains("data-agent=\"agent-a\""))
                for reference in ["src=", "href=", "url(", "@import", "http:", "https:", "<link", "<iframe", "<img", "<object"] {
                    #expect(!html.contains(reference), "the page contains \(reference)")
                }
                #expect(html.components(separatedBy: "<script").count == 2, "exactly the refresh script")
                #expect(!html.contains("<script src"))
            }
        }
    }

    /// With JavaScript on, the script refreshes the data; with it off, `<noscript>` reloads the page.
    @Test(arguments: [(1, 5), (15, 15), (30, 30), (3600, 60)] as [(Int64, Int64)])
    func refreshFollowsThePollInterval(pollSeconds: Int64, refreshSeconds: Int64) throws {
        #expect(DashboardRenderer.refreshSeconds(for: .seconds(pollSeconds)) == refreshSeconds)
        let html = try DashboardRenderer().render(
            FleetSnapshot(generatedAt: Date(), pollInterval: .seconds(pollSeconds), services: [], agents: [])
        )
        #expect(html.contains("<noscript><meta http-equiv=\"refresh\" content=\"\(refreshSeconds)\"></noscript>"))
        #expect(html.contains("<body data-refresh-seconds=\"\(refreshSeconds)\">"))
        #expect(html.contains("<p id=\"refresh-status\" data-refresh=\"off\">"))
        #expect(html.contains("<main id=\"dashboard\"") && html.contains("<p id=\"summary\">"), "the elements the script swaps")
        #expect(html.contains("No agent has enrolled yet.") && html.contains("No rollout yet.") && html.contains("No event yet."))
    }

    @Test func scriptIsAllowedByItsHashAndFetchesSameOrigin() throws {
        let html = try DashboardRenderer().render(FleetSnapshot(generatedAt: Date(), pollInterval: .seconds(15), services: [], agents: []))
        let hash = try scriptHash(of: html)
        #expect(DashboardRenderer.contentSecurityPolicy.contains("script-src '\(hash)';"))
        #expect(DashboardRenderer.contentSecurityPolicy.contains("connect-src 'self'"))
        // Mustache would treat two opening braces as a tag and change the script (and break its hash).
        #expect(!DashboardTemplate.script.contains("{{"))
        #expect(DashboardTemplate.script.contains("fetch(location.origin + location.pathname"))
    }

    @Test(arguments: [(0, 0, "0"), (1, 3, "33.3"), (2, 3, "66.7"), (3, 3, "100.0"), (1, 7, "14.3"), (0, 5, "0.0")] as [(Int, Int, String)])
    func progressWidths(count: Int, total: Int, percent: String) {
        #expect(DashboardRenderer.percent(count, of: total) == percent)
    }
}

// MARK: Hostile inputs

/// Where agent- or operator-supplied text reaches the page.
enum HostileField: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case agentName, hostname, agentVersion, processManager, reportedVersion, statusMessage, failureReason, trustRootProblem

    var testDescription: String { rawValue }
}

struct HostileText: Sendable, CustomTestStringConvertible {
    var raw: String
    /// How the page must show it.
    var escaped: String

    var testDescription: String { raw }
}

/// Each at most 32 characters (the shortest field limit, `processManager`).
private let hostileTexts: [HostileText] = [
    HostileText(raw: "<script>alert(1)</script>", escaped: "&lt;script&gt;alert(1)&lt;/script&gt;"),
    HostileText(raw: "\"><img src=x onerror=alert(1)>", escaped: "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"),
    HostileText(raw: "' onmouseover='alert(1)", escaped: "&#39; onmouseover=&#39;alert(1)"),
    HostileText(raw: "</td></tr><h1>owned</h1>", escaped: "&lt;/td&gt;&lt;/tr&gt;&lt;h1&gt;owned&lt;/h1&gt;"),
    HostileText(raw: "&lt;b&gt; & co", escaped: "&amp;lt;b&amp;gt; &amp; co"),
    // Values are not templates: Mustache tags in them stay text.
    HostileText(raw: "{{generatedAt}}{{{reason}}}", escaped: "{{generatedAt}}{{{reason}}}"),
    // A right-to-left override would show another name; a C1 control, whatever a browser makes of it: shown escaped, as
    // the command line shows them (names refuse C0 controls already).
    HostileText(raw: "evil\u{202E}gnp.exe", escaped: #"evil\u202egnp.exe"#),
    HostileText(raw: "a\u{9B}31m\u{2066}<b>", escaped: #"a\u009b31m\u2066&lt;b&gt;"#),
]

// MARK: Page helpers

/// `GET /` as a browser sends it after the login prompt: HTTP Basic, any user, the token as password.
private func page(_ api: RolloutClient, token: String, path: String = "/") async throws -> (html: String, headers: HTTPFields) {
    let credentials = Data("viewer:\(token)".utf8).base64EncodedString()
    let response = try await api.client.execute(uri: path, method: .get, headers: [.authorization: "Basic \(credentials)"])
    #expect(response.status == .ok)
    #expect(response.headers[.contentType] == "text/html; charset=utf-8")
    return (String(buffer: response.body), response.headers)
}

/// The start tag of the first `<name ... attribute="value"...>` in `html`.
private func tag(_ html: String, _ name: String, _ attribute: String, _ value: String) throws -> String {
    let element = try element(html, name, attribute, value)
    guard let end = element.firstIndex(of: ">") else { throw FixtureError("unterminated <\(name)>") }
    return String(element[...end])
}

/// The first `<name ...>` element with `attribute="value"`, up to its closing tag (these elements do not nest).
private func element(_ html: String, _ name: String, _ attribute: String, _ value: String) throws -> String {
    var search = html.startIndex..<html.endIndex
    while let start = html.range(of: "<\(name) ", range: search) {
        guard let close = html.range(of: ">", range: start.upperBound..<html.endIndex) else { break }
        let startTag = html[start.lowerBound..<close.upperBound]
        if startTag.contains(" \(attribute)=\"\(value)\"") {
            guard let end = html.range(of: "</\(name)>", range: close.upperBound..<html.endIndex) else {
                throw FixtureError("<\(name) \(attribute)=\"\(value)\"> is not closed")
            }
            return String(html[start.lowerBound..<end.upperBound])
        }
        search = close.upperBound..<html.endIndex
    }
    throw FixtureError("no <\(name) \(attribute)=\"\(value)\"> in the page")
}

/// The values of `attribute` in document order.
private func attributeValues(_ html: String, _ attribute: String) -> [String] {
    html.components(separatedBy: " \(attribute)=\"").dropFirst().compactMap { $0.split(separator: "\"", maxSplits: 1).first.map(String.init) }
}

/// `sha256-<base64>` of the page's inline script, as a browser computes it for the Content-Security-Policy.
private func scriptHash(of html: String) throws -> String {
    guard let open = html.range(of: "<script>"), let close = html.range(of: "</script>", range: open.upperBound..<html.endIndex) else {
        throw FixtureError("the page has no inline script")
    }
    let source = html[open.upperBound..<close.lowerBound]
    return "sha256-" + Data(SHA256.hash(Array(source.utf8)).bytes).base64EncodedString()
}

/// `service` running `serial` and healthy.
private func running(_ service: String, serial: Int64, version: String) -> ServiceStatus {
    ServiceStatus(
        service: service,
        serial: serial,
        version: version,
        targetSerial: serial,
        phase: .running,
        message: "serial \(serial) is running and healthy",
        health: .healthy,
        processes: [ProcessReport(name: service, pmId: 0, status: "online", restarts: 0, uptimeSeconds: 5, memoryBytes: 1, cpuPercent: 0)]
    )
}
