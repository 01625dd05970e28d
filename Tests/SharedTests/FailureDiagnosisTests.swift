import Foundation
import Shared
import Testing

/// The failure diagnosis a status report carries (issue 15): it round-trips, and the controller's strict parser
/// refuses every malformed or oversized one with the field it concerns.
@Suite("Failure diagnosis: the evidence in a status report")
struct FailureDiagnosisTests {
    static let at = Date(timeIntervalSince1970: 1_800_000_000)

    static let diagnosis = FailureDiagnosis(
        stage: .healthGate,
        cause: .timedOut,
        at: at,
        deadlineSeconds: 20,
        health: FailureDiagnosis.HealthProbe(url: "http://127.0.0.1:${PORT}/healthz", status: 503, body: "db pool exhausted"),
        instances: [
            FailureDiagnosis.Instance(app: "web", pmId: 0, status: "errored", restarts: 2, exitCode: 1),
            FailureDiagnosis.Instance(app: "web", pmId: 1, status: "stopped", restarts: 0, signal: "SIGKILL"),
        ],
        logs: [
            FailureDiagnosis.LogTail(app: "web", pmIds: [0], stream: .stderr, lines: ["Error: boom", "\tat main (server.js:1)"], truncated: true),
            FailureDiagnosis.LogTail(app: "web", pmIds: [0], stream: .stdout, lines: ["starting"], truncated: false),
        ]
    )

    /// A status report of one service whose newest failure carries `diagnosis` (as JSON).
    static func report(diagnosis: JSONValue) -> JSONValue {
        .object([
            "agentVersion": .string("0.1.0"), "hostname": .string("web-1"), "processManager": .string("pm2"),
            "services": .array([
                .object([
                    "service": .string("web"), "phase": .string("rolled-back"), "message": .string("rolled back"),
                    "health": .string("healthy"), "processes": .array([]), "serial": .integer(1), "targetSerial": .integer(2),
                    "failures": .array([
                        .object([
                            "serial": .integer(2), "reason": .string("not healthy within 20s"), "kind": .string("rolled-back"),
                            "diagnosis": diagnosis,
                        ])
                    ]),
                ])
            ]),
        ])
    }

    @Test func aDiagnosisRoundTripsThroughAStatusReport() throws {
        let parsed = try StatusReport(json: JSONValue.parse(Self.report(diagnosis: Self.diagnosis.json).encoded()))
        #expect(parsed.services.first?.failures.first?.diagnosis == Self.diagnosis)
        // And the report's own JSON is the same document again.
        #expect(try StatusReport(json: parsed.json) == parsed)
    }

    @Test func aReportWithoutDiagnosisStillParses() throws {
        let plain = ReleaseFailure(serial: 3, reason: "refused: bad signature", kind: "refused")
        guard case .object(let fields) = plain.json else {
            Issue.record("a failure is an object")
            return
        }
        #expect(fields["diagnosis"] == nil)
        let status = ServiceStatus(
            service: "web",
            serial: 1,
            version: "1.0.0",
            targetSerial: 3,
            phase: .running,
            message: "ok",
            health: .healthy,
            failures: [plain],
            processes: [
                ProcessReport(name: "web", pmId: 0, pid: 4242, status: "online", restarts: 0, uptimeSeconds: 5, memoryBytes: 1, cpuPercent: 0)
            ]
        )
        let report = StatusReport(agentVersion: "0.1.0", hostname: "h", processManager: "builtin", services: [status])
        let parsed = try StatusReport(json: JSONValue.parse(report.json.encoded()))
        #expect(parsed == report)
        #expect(parsed.services.first?.processes.first?.pid == 4242)
    }

    /// One hostile diagnosis: how it differs from the good one, and the error the controller must answer.
    struct HostileCase: Sendable, CustomTestStringConvertible {
        var name: String
        var change: @Sendable (inout [String: JSONValue]) -> Void
        var error: DocumentError

        var testDescription: String { name }
    }

    static let path = "services[0].failures[0].diagnosis"

    static func logs(_ transform: @escaping @Sendable (inout [String: JSONValue]) -> Void) -> @Sendable (inout [String: JSONValue]) -> Void {
        { fields in
            guard case .array(var tails)? = fields["logs"], case .object(var first)? = tails.first else { return }
            transform(&first)
            tails[0] = .object(first)
            fields["logs"] = .array(tails)
        }
    }

    static let hostile: [HostileCase] = [
        HostileCase(name: "an unknown field", change: { $0["extra"] = .bool(true) }, error: .unknownField("\(path).extra")),
        HostileCase(
            name: "an unknown stage",
            change: { $0["stage"] = .string("deploy") },
            error: .invalidValue(field: "\(path).stage", reason: "\"deploy\" must be one of install, start, reload, health-gate")
        ),
        HostileCase(
            name: "an unknown cause",
            change: { $0["cause"] = .string("oops") },
            error: .invalidValue(field: "\(path).cause", reason: "\"oops\" must be one of crashed, not-running, timed-out, command-failed")
        ),
        HostileCase(name: "no instances list", change: { $0["instances"] = nil }, error: .missingField("\(path).instances")),
        HostileCase(
            name: "a time that is not RFC 3339",
            change: { $0["at"] = .string("yesterday") },
            error: .invalidValue(
                field: "\(path).at",
                reason: "\"yesterday\" is not an RFC 3339 timestamp like 2026-11-26T12:00:00Z between 1970 and 9999"
            )
        ),
        HostileCase(
            name: "a time written back before year 0",
            change: { $0["at"] = .string("0000-01-01T00:00:00+00:01") },
            error: .invalidValue(
                field: "\(path).at",
                reason: "\"0000-01-01T00:00:00+00:01\" is not an RFC 3339 timestamp like 2026-11-26T12:00:00Z between 1970 and 9999"
            )
        ),
        HostileCase(
            name: "a time with a ten-digit hour",
            change: { $0["at"] = .string("2026-01-01T9999999999:00:00Z") },
            error: .invalidValue(
                field: "\(path).at",
                reason: "\"2026-01-01T9999999999:00:00Z\" is not an RFC 3339 timestamp like 2026-11-26T12:00:00Z between 1970 and 9999"
            )
        ),
        HostileCase(
            name: "a deadline of a year",
            change: { $0["deadlineSeconds"] = .integer(31_536_000) },
            error: .invalidValue(field: "\(path).deadlineSeconds", reason: "31536000 is outside 0...86400")
        ),
        HostileCase(
            name: "51 lines in one tail",
            change: logs { $0["lines"] = .array((0...50).map { .string("line \($0)") }) },
            error: .tooMany(field: "\(path).logs[0].lines", limit: 50, actual: 51)
        ),
        HostileCase(
            name: "a tail of more than 8 KiB",
            change: logs { $0["lines"] = .array([.string(String(repeating: "a", count: 5000)), .string(String(repeating: "b", count: 5000))]) },
            error: .tooLarge(field: "\(path).logs[0].lines", limit: 8192, actual: 10_000)
        ),
        HostileCase(
            name: "a line with a line break",
            change: logs { $0["lines"] = .array([.string("one\ntwo")]) },
            error: .invalidValue(field: "\(path).logs[0].lines[0]", reason: "line breaks and control characters other than tab are not allowed")
        ),
        HostileCase(
            name: "a line with an escape character",
            change: logs { $0["lines"] = .array([.string("\u{1B}[31mred")]) },
            error: .invalidValue(field: "\(path).logs[0].lines[0]", reason: "line breaks and control characters other than tab are not allowed")
        ),
        HostileCase(
            name: "an unknown stream",
            change: logs { $0["stream"] = .string("stdin") },
            error: .invalidValue(field: "\(path).logs[0].stream", reason: "\"stdin\" must be one of stderr, stdout")
        ),
        HostileCase(
            name: "17 log tails",
            change: { fields in
                guard case .array(let tails)? = fields["logs"], let first = tails.first else { return }
                fields["logs"] = .array(Array(repeating: first, count: 17))
            },
            error: .tooMany(field: "\(path).logs", limit: 16, actual: 17)
        ),
        HostileCase(
            name: "65 instances",
            change: { fields in
                guard case .array(let instances)? = fields["instances"], let first = instances.first else { return }
                fields["instances"] = .array(Array(repeating: first, count: 65))
            },
            error: .tooMany(field: "\(path).instances", limit: 64, actual: 65)
        ),
        HostileCase(
            name: "a negative pm_id",
            change: { fields in
                guard case .array(var instances)? = fields["instances"], case .object(var first)? = instances.first else { return }
                first["pmId"] = .integer(-1)
                instances[0] = .object(first)
                fields["instances"] = .array(instances)
            },
            error: .invalidValue(field: "\(path).instances[0].pmId", reason: "-1 is outside 0...2147483647")
        ),
        HostileCase(
            name: "a health body over 512 bytes",
            change: { fields in
                fields["health"] = .object(["url": .string("http://127.0.0.1/"), "body": .string(String(repeating: "x", count: 513))])
            },
            error: .tooLarge(field: "\(path).health.body", limit: 512, actual: 513)
        ),
        HostileCase(
            name: "an HTTP status of 42",
            change: { fields in fields["health"] = .object(["url": .string("http://127.0.0.1/"), "status": .integer(42)]) },
            error: .invalidValue(field: "\(path).health.status", reason: "42 is outside 100...999")
        ),
        HostileCase(
            name: "a diagnosis that is a string",
            change: { fields in fields = ["not": .string("an object")] },
            error: .missingField("\(path).stage")
        ),
    ]

    @Test(arguments: hostile)
    func hostileDiagnosesAreRefusedNamingTheField(_ row: HostileCase) throws {
        guard case .object(var fields) = Self.diagnosis.json else {
            Issue.record("the diagnosis is not an object")
            return
        }
        row.change(&fields)
        #expect(throws: row.error) { try StatusReport(json: Self.report(diagnosis: .object(fields))) }
    }

    @Test func theTextOfADiagnosisIsMappedByMapText() {
        let masked = Self.diagnosis.mapText { $0.replacingOccurrences(of: "boom", with: "${SECRET}") }
        #expect(masked.logs[0].lines[0] == "Error: ${SECRET}")
        #expect(masked.health?.body == "db pool exhausted")
        #expect(masked.instances == Self.diagnosis.instances)
        #expect(Self.diagnosis.logBytes == "Error: boom".utf8.count + "\tat main (server.js:1)".utf8.count + "starting".utf8.count)
    }
}
