import Foundation
import Shared
import Testing

@testable import Controller

/// `StatusWrite` puts its services' texts into the text of the report without them: the texts and the fingerprint
/// must be exactly those of encoding the report, its services and its steady copy separately.
@Suite struct StatusWriteTests {
    static func process(_ name: String, uptime: Int64? = 5) -> ProcessReport {
        ProcessReport(name: name, pmId: 0, status: "online", restarts: 1, uptimeSeconds: uptime, memoryBytes: 123_456, cpuPercent: 2.5)
    }

    static func service(_ name: String, message: String = "running", processes: [ProcessReport] = []) -> ServiceStatus {
        ServiceStatus(
            service: name,
            serial: 3,
            version: "1.2.3",
            targetSerial: 4,
            phase: .running,
            message: message,
            health: .healthy,
            processes: processes
        )
    }

    static let cases: [(name: String, report: StatusReport)] = [
        ("no services", StatusReport(agentVersion: "1.0", hostname: "h", processManager: "pm2", services: [])),
        ("one service without processes", StatusReport(agentVersion: "1.0", hostname: "h", processManager: "pm2", services: [service("api")])),
        (
            "services with and without processes",
            StatusReport(
                agentVersion: "1.0",
                hostname: "h",
                processManager: "pm2",
                services: [service("api", processes: [process("api"), process("worker", uptime: nil)]), service("web")]
            )
        ),
        (
            "the key's text inside every string",
            StatusReport(
                agentVersion: #""services":[]"#,
                hostname: #"x","services":[],"y":"#,
                processManager: "\"services\":[]",
                services: [service(#""services":[]"#, message: #"],"services":[{"#, processes: [process(#""services":[]"#)])]
            )
        ),
        (
            "control characters and non-ASCII text",
            StatusReport(
                agentVersion: "1.0\n",
                hostname: "hôte\u{1}",
                processManager: "pm2",
                services: [service("api", message: "ünïcode \u{7f} \t 🚀")]
            )
        ),
        (
            "a trust root after the services",
            StatusReport(
                agentVersion: "1.0",
                hostname: "h",
                processManager: "pm2",
                services: [service("api", processes: [process("api")])],
                trustRoot: TrustRootStatus(version: 7, expiresAt: Date(timeIntervalSince1970: 1_800_000_000), problem: "expired \"soon\"")
            )
        ),
    ]

    @Test(arguments: cases.indices)
    func theTextsAreTheSeparateEncodings(_ index: Int) throws {
        let report = Self.cases[index].report
        let write = StatusWrite(report: report, agentID: "agt_1", receivedAt: Date())
        #expect(write.reportText == String(decoding: report.json.encodedBytes(), as: UTF8.self), "\(Self.cases[index].name)")
        #expect(write.serviceTexts == report.services.map { String(decoding: $0.json.encodedBytes(), as: UTF8.self) })
        #expect(write.fingerprint == StatusWrite.fingerprint(of: report))
        // (Some cases hold text a report may not carry: the encodings are compared all the same.)
        if (try? StatusReport(json: report.json)) != nil {
            #expect(try StatusReport(json: JSONValue.parse(Array(write.reportText.utf8))) == report, "the text reads back as the report")
        }
    }

    /// The fingerprint leaves out what changes in every report of a running app, and nothing else.
    @Test func theFingerprintIgnoresOnlyUptimeMemoryAndCPU() {
        let base = StatusReport(
            agentVersion: "1.0",
            hostname: "h",
            processManager: "pm2",
            services: [Self.service("api", processes: [Self.process("api")])]
        )
        var busier = base
        busier.services[0].processes[0].uptimeSeconds = 99
        busier.services[0].processes[0].memoryBytes = 1
        busier.services[0].processes[0].cpuPercent = 99
        var restarted = base
        restarted.services[0].processes[0].restarts = 2
        let print = { (report: StatusReport) in StatusWrite(report: report, agentID: "a", receivedAt: Date()).fingerprint }
        #expect(print(busier) == print(base))
        #expect(print(restarted) != print(base))
    }

    /// The search that cuts a report's text at its services: the first match, none, and edges.
    @Test(
        arguments: [
            ("", "ab", nil),
            ("ab", "", nil),
            ("a", "ab", nil),
            ("ab", "ab", 0),
            ("xab", "ab", 1),
            ("xaab", "ab", 2),
            ("abab", "ab", 0),
            ("aaa", "ab", nil),
            (#"{"a":"\"services\":[]","services":[]}"#, #""services":[]"#, 23),
        ] as [(String, String, Int?)]
    )
    func firstOffset(_ row: (bytes: String, pattern: String, offset: Int?)) {
        #expect(StatusWrite.firstOffset(of: Array(row.pattern.utf8), in: Array(row.bytes.utf8)) == row.offset)
    }
}
