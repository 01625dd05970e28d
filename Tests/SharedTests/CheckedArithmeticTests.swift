import Foundation
import Shared
import Testing

/// Every duration, size and count a document carries meets multiplication or conversion only through checked
/// arithmetic: an overflowing value is a `DocumentError` naming the field, never a trap (issue 9: a signed
/// `min_uptime: "999999999999999999h"` killed the controller on publish and crash-looped the agent).
@Suite("Checked arithmetic: overflow is a DocumentError naming the field")
struct CheckedArithmeticTests {
    enum Document: String, Sendable {
        case release, desiredState, statusReport
    }

    struct Row: Sendable, CustomTestStringConvertible {
        var name: String
        var document: Document
        var path: [Step]
        /// The JSON text put at `path` (literal, so numbers too large for Int64 stay as written).
        var literal: String
        var expected: DocumentError
        var testDescription: String { name }
    }

    static let app: [Step] = [.key("pm2"), .key("apps"), .index(0)]
    static let process: [Step] = [.key("services"), .index(0), .key("processes"), .index(0)]
    static let service: [Step] = [.key("services"), .index(0)]

    static func outside(_ field: String, _ value: String, _ range: String) -> DocumentError {
        .invalidValue(field: field, reason: "\(value) is outside \(range)")
    }

    static let rows: [Row] = [
        // Release: durations.
        Row(
            name: "min_uptime in hours overflows Int64",
            document: .release,
            path: app + [.key("min_uptime")],
            literal: #""999999999999999999h""#,
            expected: .invalidValue(field: "pm2.apps[0].min_uptime", reason: #""999999999999999999h" is too long: at most 86400000 ms"#)
        ),
        Row(
            name: "min_uptime digits overflow Int64",
            document: .release,
            path: app + [.key("min_uptime")],
            literal: #""99999999999999999999999ms""#,
            expected: .invalidValue(field: "pm2.apps[0].min_uptime", reason: #""99999999999999999999999ms" is too long: at most 86400000 ms"#)
        ),
        Row(
            name: "min_uptime over 24 hours",
            document: .release,
            path: app + [.key("min_uptime")],
            literal: #""25h""#,
            expected: .invalidValue(field: "pm2.apps[0].min_uptime", reason: #""25h" is too long: at most 86400000 ms"#)
        ),
        Row(
            name: "min_uptime as a huge number",
            document: .release,
            path: app + [.key("min_uptime")],
            literal: "1e300",
            expected: outside("pm2.apps[0].min_uptime", "1e+300", "0...86400000")
        ),
        Row(
            name: "restart_delay as a huge number",
            document: .release,
            path: app + [.key("restart_delay")],
            literal: "1e300",
            expected: outside("pm2.apps[0].restart_delay", "1e+300", "0...86400000")
        ),
        Row(
            name: "exp_backoff_restart_delay past Int64",
            document: .release,
            path: app + [.key("exp_backoff_restart_delay")],
            literal: "99999999999999999999",
            expected: outside("pm2.apps[0].exp_backoff_restart_delay", "1e+20", "0...86400000")
        ),
        Row(
            name: "kill_timeout at Int64.max",
            document: .release,
            path: app + [.key("kill_timeout")],
            literal: "9223372036854775807",
            expected: outside("pm2.apps[0].kill_timeout", "9223372036854775807", "0...3600000")
        ),
        Row(
            name: "listen_timeout negative past Int64",
            document: .release,
            path: app + [.key("listen_timeout")],
            literal: "-99999999999999999999",
            expected: outside("pm2.apps[0].listen_timeout", "-1e+20", "0...3600000")
        ),
        Row(
            name: "health.deadlineSeconds huge",
            document: .release,
            path: [.key("health"), .key("deadlineSeconds")],
            literal: "1e300",
            expected: outside("health.deadlineSeconds", "1e+300", "1...3600")
        ),
        Row(
            name: "health.stableSeconds at Int64.max",
            document: .release,
            path: [.key("health"), .key("stableSeconds")],
            literal: "9223372036854775807",
            expected: outside("health.stableSeconds", "9223372036854775807", "0...3600")
        ),
        // Release: sizes.
        Row(
            name: "max_memory_restart in G overflows Int64",
            document: .release,
            path: app + [.key("max_memory_restart")],
            literal: #""99999999999999999999G""#,
            expected: .invalidValue(
                field: "pm2.apps[0].max_memory_restart",
                reason: #""99999999999999999999G" is too large: at most 1125899906842624 bytes"#
            )
        ),
        Row(
            name: "max_memory_restart multiplied past Int64",
            document: .release,
            path: app + [.key("max_memory_restart")],
            literal: #""9999999999999G""#,
            expected: .invalidValue(
                field: "pm2.apps[0].max_memory_restart",
                reason: #""9999999999999G" is too large: at most 1125899906842624 bytes"#
            )
        ),
        Row(
            name: "max_memory_restart as a huge number",
            document: .release,
            path: app + [.key("max_memory_restart")],
            literal: "1e300",
            expected: outside("pm2.apps[0].max_memory_restart", "1e+300", "1...1125899906842624")
        ),
        Row(
            name: "artifact.size huge",
            document: .release,
            path: [.key("artifact"), .key("size")],
            literal: "1e300",
            expected: outside("artifact.size", "1e+300", "1...1099511627776")
        ),
        // Release: counts.
        Row(
            name: "serial past Int64",
            document: .release,
            path: [.key("serial")],
            literal: "99999999999999999999",
            expected: outside("serial", "1e+20", "1...9007199254740992")
        ),
        Row(
            name: "max_restarts huge",
            document: .release,
            path: app + [.key("max_restarts")],
            literal: "1e300",
            expected: outside("pm2.apps[0].max_restarts", "1e+300", "0...1000000")
        ),
        Row(
            name: "instances huge",
            document: .release,
            path: app + [.key("instances")],
            literal: "1e300",
            expected: outside("pm2.apps[0].instances", "1e+300", "-1024...1024")
        ),
        Row(
            name: "stop_exit_codes item huge",
            document: .release,
            path: app + [.key("stop_exit_codes")],
            literal: "[0, 1e300]",
            expected: outside("pm2.apps[0].stop_exit_codes[1]", "1e+300", "0...255")
        ),
        // Desired state.
        Row(
            name: "desired state pollSeconds huge",
            document: .desiredState,
            path: [.key("pollSeconds")],
            literal: "1e300",
            expected: outside("pollSeconds", "1e+300", "1...3600")
        ),
        Row(
            name: "desired state pollSeconds past Int64",
            document: .desiredState,
            path: [.key("pollSeconds")],
            literal: "-99999999999999999999",
            expected: outside("pollSeconds", "-1e+20", "1...3600")
        ),
        // Status report.
        Row(
            name: "status serial past Int64",
            document: .statusReport,
            path: service + [.key("serial")],
            literal: "99999999999999999999",
            expected: outside("services[0].serial", "1e+20", "1...9007199254740992")
        ),
        Row(
            name: "status targetSerial huge",
            document: .statusReport,
            path: service + [.key("targetSerial")],
            literal: "1e300",
            expected: outside("services[0].targetSerial", "1e+300", "1...9007199254740992")
        ),
        Row(
            name: "status failure serial huge",
            document: .statusReport,
            path: service + [.key("failures")],
            literal: #"[{"serial":1e300,"reason":"x","kind":"refused"}]"#,
            expected: outside("services[0].failures[0].serial", "1e+300", "0...9007199254740992")
        ),
        Row(
            name: "process pmId huge",
            document: .statusReport,
            path: process + [.key("pmId")],
            literal: "1e300",
            expected: outside("services[0].processes[0].pmId", "1e+300", "0...2147483647")
        ),
        Row(
            name: "process restarts past Int64",
            document: .statusReport,
            path: process + [.key("restarts")],
            literal: "99999999999999999999",
            expected: outside("services[0].processes[0].restarts", "1e+20", "0...2147483647")
        ),
        Row(
            name: "process uptimeSeconds at Int64.max",
            document: .statusReport,
            path: process + [.key("uptimeSeconds")],
            literal: "9223372036854775807",
            expected: outside("services[0].processes[0].uptimeSeconds", "9223372036854775807", "0...214748364700")
        ),
        Row(
            name: "process memoryBytes huge",
            document: .statusReport,
            path: process + [.key("memoryBytes")],
            literal: "1e300",
            expected: outside("services[0].processes[0].memoryBytes", "1e+300", "0...1125899906842624")
        ),
        Row(
            name: "process cpuPercent huge",
            document: .statusReport,
            path: process + [.key("cpuPercent")],
            literal: "1e300",
            expected: .invalidValue(field: "services[0].processes[0].cpuPercent", reason: "1e+300 is outside 0...100000")
        ),
    ]

    static let statusReport: JSONValue = StatusReport(
        agentVersion: "0.1.0",
        hostname: "host",
        processManager: "builtin",
        services: [
            ServiceStatus(
                service: "api",
                serial: 1,
                version: "1.0.0",
                targetSerial: 1,
                phase: .running,
                message: "ok",
                health: .healthy,
                processes: [ProcessReport(name: "api", pmId: 0, status: "online", restarts: 0, uptimeSeconds: 5, memoryBytes: 1024, cpuPercent: 0.5)]
            )
        ]
    ).json

    /// The document with `literal` at `path`: the value is set to a marker string, then the marker's encoding is
    /// replaced by the literal text.
    static func document(_ row: Row) -> [UInt8] {
        let base: JSONValue
        switch row.document {
        case .release: base = Sample.release
        case .desiredState: base = .object(["agentId": .string("agt_1"), "pollSeconds": .integer(15), "releases": .array([])])
        case .statusReport: base = statusReport
        }
        let marker = "@@LITERAL@@"
        let text = String(decoding: base.setting(row.path, to: .string(marker)).encoded(), as: UTF8.self)
        return Array(text.replacingOccurrences(of: "\"\(marker)\"", with: row.literal).utf8)
    }

    @Test(arguments: rows)
    func overflowIsADocumentErrorNamingTheField(_ row: Row) throws {
        let bytes = Self.document(row)
        #expect(String(decoding: bytes, as: UTF8.self).contains(row.literal), "the literal is in the document")
        #expect(throws: row.expected) {
            switch row.document {
            case .release: _ = try Release.decode(bytes)
            case .desiredState: _ = try DesiredState(json: JSONValue.parse(bytes))
            case .statusReport: _ = try StatusReport(json: JSONValue.parse(bytes))
            }
        }
    }

    @Test("the rows' base documents are valid, so each row fails only on its own field")
    func baseDocumentsAreValid() throws {
        _ = try Release.decode(Sample.release.encoded())
        _ = try StatusReport(json: JSONValue.parse(Self.statusReport.encoded()))
        _ = try DesiredState(json: .object(["agentId": .string("agt_1"), "pollSeconds": .integer(15), "releases": .array([])]))
    }

    @Test(
        "DurationText and ByteSize answer nil for overflow instead of trapping",
        arguments: ["999999999999999999h", "9223372036854775807s", "99999999999999999999", "153722867280912931m"]
    )
    func durationOverflowIsNil(_ text: String) {
        #expect(DurationText.milliseconds(text) == nil)
    }

    @Test(arguments: ["9999999999999G", "99999999999999999999", "9223372036854775807K"])
    func sizeOverflowIsNil(_ text: String) {
        #expect(ByteSize.parse(text) == nil)
    }

    @Test(
        arguments: [("1h", 3_600_000), ("500ms", 500), ("2m", 120_000), ("0", 0), ("86400000", 86_400_000), ("24h", 86_400_000)] as [(String, Int64)]
    )
    func durationsInRange(_ text: String, _ milliseconds: Int64) throws {
        #expect(DurationText.milliseconds(text) == milliseconds)
        #expect(try DurationText.milliseconds(text, field: "f") == milliseconds)
    }

    @Test(arguments: ["+5s", "-1s", "1.5s", "s", "", " 1s", "1 s", "1d"])
    func malformedDurations(_ text: String) {
        #expect(DurationText.milliseconds(text) == nil)
        #expect(throws: DocumentError.invalidValue(field: "f", reason: "\(text.debugDescription) must be milliseconds or like 500ms, 1s, 2m, 1h")) {
            try DurationText.milliseconds(text, field: "f")
        }
    }
}
