import Foundation
import Shared
import TestSupport
import Testing

@testable import Agent

/// The agent's kept-open connections (`HTTPConnection`, one for polls, one for reports): against the built controller,
/// over plain HTTP and over TLS, many polls and reports cost two accepted connections — counted by the controller itself (`/metrics`).
@Suite("Agent connection reuse", .serialized)
struct AgentConnectionReuseTests {
    static let polls = 30
    static let reports = 5

    @Test("many polls and reports travel over one connection", .timeLimit(.minutes(3)), arguments: [false, true])
    func manyPollsOneConnection(tls: Bool) async throws {
        try await FleetFixture.with(tls: tls) { fleet in
            try await fleet.startController()
            var configuration = HTTPClient.Configuration()
            configuration.caFile = fleet.certificates?.caFile
            let http = HTTPClient(configuration: configuration)
            let enrolled = try await AgentControllerClient.enroll(
                baseURL: fleet.controller.url,
                enrollToken: fleet.enrollToken,
                request: EnrollRequest(name: "reuse-\(tls)", hostname: "reuse", services: ["web"]),
                http: http
            )
            let polls = HTTPConnection(configuration: configuration)
            let reports = HTTPConnection(configuration: configuration)
            defer {
                polls.close()
                reports.close()
            }
            let client = AgentControllerClient(baseURL: fleet.controller.url, token: enrolled.token, http: http, connections: (polls, reports))

            // The reading request itself is one new connection, counted before it is answered.
            let before = try await Self.acceptedConnections(fleet)
            var etag: String?
            for index in 0..<Self.polls {
                switch try await client.desiredState(agentID: enrolled.agentID, etag: etag, wait: 0) {
                case .changed(_, let tag):
                    #expect(index == 0, "poll \(index): the state changed although nothing was published")
                    etag = tag
                case .notModified:
                    #expect(index > 0, "the first poll (no ETag) was answered 304")
                }
                if index % (Self.polls / Self.reports) == 0 {
                    try await client.report(
                        StatusReport(agentVersion: "test", hostname: "reuse", processManager: "builtin", services: []),
                        agentID: enrolled.agentID
                    )
                }
            }
            let after = try await Self.acceptedConnections(fleet)
            // One for the agent's polls, one for its reports (a report must not wait behind a parked long-poll), one for
            // the second reading request: not one per poll or report.
            #expect(after - before == 3, "\(after - before) connections accepted for \(Self.polls) polls and \(Self.reports) reports")
            #expect(etag != nil)
        }
    }

    /// The controller's `ferry_connections_accepted_total` counter.
    static func acceptedConnections(_ fleet: FleetFixture) async throws -> Int {
        let response = try await fleet.controller.http.send(HTTPClient.Request(url: fleet.controller.url + "/metrics"))
        let text = String(decoding: response.body, as: UTF8.self)
        let name = "ferry_connections_accepted_total "
        let line = try #require(text.split(separator: "\n").first { $0.hasPrefix(name) }, "no \(name)in /metrics")
        return try #require(Double(line.dropFirst(name.count)).map { Int($0) })
    }
}
