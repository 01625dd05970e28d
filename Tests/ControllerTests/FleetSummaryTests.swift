import Foundation
import Hummingbird
import HummingbirdTesting
import Shared
import Testing

@testable import Controller

/// `GET /v1/fleet`'s summary and pages over a fleet of agents that reported through the API: the counts are the
/// agents' reports, counted; filters and paging list exactly the agents a count counts, failures first.
@Suite struct FleetSummaryTests {
    typealias Fixture = ControllerFixture

    static let agentCount = 40

    /// Rows of the summary are (serial, version) as stored: no version and an empty one (stored before reports with one
    /// were refused) are two rows, not one under a blank label.
    @Test func noVersionAndAnEmptyVersionAreTwoRows() {
        let summary = FleetSummary([
            FleetCountRow(service: "api", version: nil, serial: nil, phase: "waiting", health: nil, stale: false, count: 2),
            FleetCountRow(service: "api", version: "", serial: nil, phase: "running", health: "healthy", stale: false, count: 3),
        ])
        let rows = summary.services.first?.versions.map { ($0.version, $0.agents) } ?? []
        #expect(rows.count == 2 && rows.contains { $0.0 == nil && $0.1 == 2 } && rows.contains { $0.0 == "" && $0.1 == 3 }, "\(rows)")
    }

    /// What agent `index` reports for `service` (`nil`: nothing, the service counts as unreported).
    static func standing(_ index: Int, _ service: String) -> (serial: Int64, version: String, phase: DeployPhase)? {
        // The last four agents never report.
        guard index < agentCount - 4 else { return nil }
        switch service {
        case "api":
            switch index % 5 {
            case 0, 1: return (2, "2.0.0", .running)
            case 2: return (2, "2.0.0", .failed)
            case 3: return (1, "1.0.0", .rolledBack)
            default: return (2, "2.0.0", .deploying)
            }
        default:
            // Only even agents run web; every other one of them has not reported it.
            return index % 4 == 0 ? (1, "1.0.0", .running) : nil
        }
    }

    static func services(of index: Int) -> [String] { index % 2 == 0 ? ["api", "web"] : ["api"] }

    static func report(_ index: Int) -> StatusReport {
        let services = Self.services(of: index).compactMap { service -> ServiceStatus? in
            guard let standing = standing(index, service) else { return nil }
            return ServiceStatus(
                service: service,
                serial: standing.serial,
                version: standing.version,
                targetSerial: 2,
                phase: standing.phase,
                message: "",
                health: standing.phase == .failed ? .unhealthy : .healthy,
                failures: [],
                processes: []
            )
        }
        return StatusReport(agentVersion: "1.0", hostname: "host-\(index)", processManager: "builtin", services: services)
    }

    /// The expected counts: service → "version/phase" → agents.
    static var expected: [String: [String: Int]] {
        var counts: [String: [String: Int]] = [:]
        for index in 0..<agentCount {
            for service in services(of: index) {
                let key = standing(index, service).map { "\($0.version)/\($0.phase.rawValue)" } ?? "-/unreported"
                counts[service, default: [:]][key, default: 0] += 1
            }
        }
        return counts
    }

    /// Enrolls the fleet, lets every agent report, and runs `body` with the fixture and an in-process client.
    static func withFleet(
        _ kind: StoreBackendKind,
        _ body: @Sendable (Fixture, any TestClientProtocol, [String: Int]) async throws -> Void
    ) async throws {
        // No agent may turn stale while the test runs (three poll intervals without a report): it would move in the
        // listing between two queries (seen once, on a machine loaded enough that the test took 150 s).
        let hourlyPolls: @Sendable (inout ControllerConfiguration) -> Void = { $0.pollInterval = .seconds(3600) }
        try await Fixture.with(kind, adjust: hourlyPolls) { fixture in
            try await fixture.withRouter { client in
                var indexes: [String: Int] = [:]
                for index in 0..<agentCount {
                    let agent = try await fixture.enroll(client, name: String(format: "agent-%02d", index), services: services(of: index))
                    indexes[agent.id] = index
                    guard index < agentCount - 4 else { continue }
                    let response = try await client.execute(
                        uri: "/v1/agents/\(agent.id)/status",
                        method: .post,
                        headers: Fixture.bearer(agent.token),
                        body: ByteBuffer(bytes: report(index).json.encoded())
                    )
                    #expect(response.status == .noContent)
                }
                try await body(fixture, client, indexes)
            }
        }
    }

    static func fleet(_ client: any TestClientProtocol, _ fixture: Fixture, query: String = "") async throws -> JSONValue {
        let response = try await client.execute(uri: "/v1/fleet" + query, method: .get, headers: Fixture.bearer(fixture.viewerToken))
        #expect(response.status == .ok, "\(query): \(String(buffer: response.body))")
        return try Fixture.json(response)
    }

    @Test(arguments: StoreBackendKind.available)
    func theSummaryCountsTheAgentsReports(_ kind: StoreBackendKind) async throws {
        try await Self.withFleet(kind) { fixture, client, _ in
            let document = try await Self.fleet(client, fixture)
            let summary = FleetDocument.array(document.object?["summary"]).compactMap(\.object)
            var counted: [String: [String: Int]] = [:]
            for service in summary {
                guard case .string(let name)? = service["service"] else { continue }
                var total = 0
                for version in FleetDocument.array(service["versions"]).compactMap(\.object) {
                    let label: String
                    if case .string(let text)? = version["version"] { label = text } else { label = "-" }
                    for (phase, count) in version["phases"]?.object ?? [:] {
                        guard case .integer(let count) = count else { continue }
                        counted[name, default: [:]]["\(label)/\(phase)", default: 0] += Int(count)
                        total += Int(count)
                    }
                }
                let expected = Self.expected[name] ?? [:]
                #expect(service["agents"] == .integer(Int64(expected.values.reduce(0, +))), "\(name): agents")
                #expect(total == expected.values.reduce(0, +), "\(name): the phases add up to the agents")
                let failing = expected.filter { $0.key.hasSuffix("/failed") || $0.key.hasSuffix("/rolled-back") }.values.reduce(0, +)
                #expect(service["failing"] == .integer(Int64(failing)), "\(name): failing")
                #expect(service["unreported"] == .integer(Int64(expected["-/unreported"] ?? 0)), "\(name): unreported")
                #expect(service["unhealthy"] == .integer(Int64(expected["2.0.0/failed"] ?? 0)), "\(name): unhealthy")
            }
            #expect(counted == Self.expected)
            // Failing versions first within a service.
            let api = try #require(summary.first { $0["service"] == .string("api") })
            let firstVersion = try #require(FleetDocument.array(api["versions"]).first?.object)
            #expect(firstVersion["failing"] != .integer(0), "a version with failing agents comes first")

            // The dashboard shows the same counts.
            let page = try await client.execute(uri: "/", method: .get, headers: Fixture.bearer(fixture.viewerToken))
            let html = String(buffer: page.body)
            for (key, count) in Self.expected["api"] ?? [:] {
                let parts = key.split(separator: "/")
                let version = parts[0] == "-" ? "" : String(parts[0])
                #expect(html.contains("data-version=\"\(version)\" data-phase=\"\(parts[1])\" data-count=\"\(count)\""), "dashboard api \(key)")
            }
        }
    }

    /// Every count the dashboard's summary shows opens a listing of exactly that many agents: the "failing" button
    /// (failed and rolled back; it listed the failed ones only), each version row's cells (by serial too: a version
    /// published again under a new serial, here 2.0.0 as serial 3, is a row of its own and listed the union of both),
    /// and the row of agents with no release installed (it listed that phase on every version).
    @Test(arguments: StoreBackendKind.available)
    func everyCountTheDashboardShowsListsThatManyAgents(_ kind: StoreBackendKind) async throws {
        try await Self.withFleet(kind) { fixture, client, _ in
            let extras: [(name: String, serial: Int64?, version: String?, phase: DeployPhase)] = [
                ("republished", 3, "2.0.0", .failed), ("first-install-failed", nil, nil, .failed),
                // One without the other (an agent of another make): rows of their own, whose cells listed every agent of
                // the serial, or counted one the "no release installed" cell did not list.
                ("serial-without-version", 2, nil, .running), ("version-without-serial", nil, "2.0.0", .failed),
            ]
            for extra in extras {
                let agent = try await fixture.enroll(client, name: extra.name, services: ["api"])
                let status = ServiceStatus(
                    service: "api",
                    serial: extra.serial,
                    version: extra.version,
                    targetSerial: 3,
                    phase: extra.phase,
                    message: "",
                    health: .unhealthy,
                    failures: [],
                    processes: []
                )
                try await InsightRoutesTests.report(client, agent, hostname: extra.name, status)
            }
            let page = try await client.execute(uri: "/", method: .get, headers: Fixture.bearer(fixture.viewerToken))
            let html = String(buffer: page.body)
            let buttons = try Regex(#"data-query="([^"]*)">([0-9]+)"#)
            var checked = 0
            for match in html.matches(of: buttons) {
                guard let query = match.output[1].substring, let shown = match.output[2].substring.flatMap({ Int64($0) }) else { continue }
                let text = String(query).replacingOccurrences(of: "&amp;", with: "&")
                let listing = try await Self.fleet(client, fixture, query: "?" + text)
                #expect(listing.object?["page"]?.object?["matching"] == .integer(shown), "\(text): the dashboard shows \(shown)")
                checked += 1
            }
            #expect(checked >= 10, "\(checked) counts checked")
            #expect(html.contains("phase=failing") && html.contains("serial=3") && html.contains("serial=none"))
        }
    }

    @Test(arguments: StoreBackendKind.available)
    func filtersAndPagesListExactlyTheCountedAgentsFailuresFirst(_ kind: StoreBackendKind) async throws {
        try await Self.withFleet(kind) { fixture, client, indexes in
            func listed(_ document: JSONValue) -> [Int] {
                FleetDocument.agents(document).compactMap { agent in
                    guard case .string(let id)? = agent["id"] else { return nil }
                    return indexes[id]
                }
            }
            func matching(_ document: JSONValue) -> Int64? {
                if case .integer(let count)? = document.object?["page"]?.object?["matching"] { return count }
                return nil
            }
            let all = try await Self.fleet(client, fixture)
            #expect(matching(all) == Int64(Self.agentCount))
            let order = listed(all)
            #expect(order.count == Self.agentCount)
            // Failed and rolled-back agents first (every one of them), then the rest by name.
            let failingAgents = (0..<Self.agentCount).filter { index in
                [DeployPhase.failed, .rolledBack].contains(Self.standing(index, "api")?.phase)
            }
            #expect(Set(order.prefix(failingAgents.count)) == Set(failingAgents), "\(order)")

            let rows: [(query: String, expected: [Int])] = [
                ("?service=api&phase=failed", (0..<Self.agentCount).filter { Self.standing($0, "api")?.phase == .failed }),
                ("?service=api&version=1.0.0", (0..<Self.agentCount).filter { Self.standing($0, "api")?.version == "1.0.0" }),
                (
                    "?service=web&phase=unreported",
                    (0..<Self.agentCount).filter { Self.services(of: $0).contains("web") && Self.standing($0, "web") == nil }
                ),
                ("?health=unhealthy", (0..<Self.agentCount).filter { Self.standing($0, "api")?.phase == .failed }),
                ("?q=agent-07", [7]),
            ]
            for row in rows {
                let document = try await Self.fleet(client, fixture, query: row.query)
                #expect(matching(document) == Int64(row.expected.count), "\(row.query): matching")
                #expect(Set(listed(document)) == Set(row.expected), "\(row.query)")
            }

            // Pages of 7 cover every agent once, in the same order as one page.
            var paged: [Int] = []
            for offset in stride(from: 0, to: Self.agentCount, by: 7) {
                let document = try await Self.fleet(client, fixture, query: "?limit=7&offset=\(offset)")
                #expect(matching(document) == Int64(Self.agentCount))
                paged += listed(document)
            }
            #expect(paged == order)
        }
    }

    /// Hostile or mistaken fleet queries: a 400 naming the parameter, never a 500 or a silently ignored filter.
    @Test(arguments: [
        ("?phase=exploded", "phase"), ("?health=sick", "health"), ("?stale=maybe", "stale"), ("?limit=0", "limit"),
        ("?limit=1001", "limit"), ("?limit=99999999999999999999", "limit"), ("?offset=-1", "offset"), ("?sort=age", "sort"),
        ("?after=web-01", "after"), ("?sort=name&after=", "after"),
        ("?service=" + String(repeating: "s", count: 129), "service"), ("?q=" + String(repeating: "q", count: 129), "q"),
    ])
    func badQueriesAreRefusedByName(_ query: String, _ parameter: String) async throws {
        try await Fixture.with { fixture in
            try await fixture.withRouter { client in
                for path in ["/v1/fleet", "/"] {
                    let response = try await client.execute(uri: path + query, method: .get, headers: Fixture.bearer(fixture.viewerToken))
                    #expect(response.status == .badRequest, "\(path)\(query)")
                    #expect(Fixture.errorCode(response) == "invalid_query", "\(path)\(query)")
                    #expect(String(buffer: response.body).contains("query parameter \(parameter)="), "\(path)\(query)")
                }
            }
        }
    }
}
