import Foundation
import Shared
import Testing

@testable import Agent

/// The failure diagnosis in a status report: masked, within the controller's limits, and within a report-wide budget of
/// log text so one agent's many failures never get its whole report refused.
@Suite("StatusReportBuilder: failure diagnoses")
struct StatusReportBuilderDiagnosisTests {
    static let secret = "instance-secret-hunter2"
    static let mask = SecretMask([["TOKEN": secret]])

    static func diagnosis(lines: [String], at: Date = CoreFixture.now) -> FailureDiagnosis {
        FailureDiagnosis(
            stage: .healthGate,
            cause: .crashed,
            at: at,
            health: FailureDiagnosis.HealthProbe(url: "http://127.0.0.1:${PORT}/", status: 500, body: "token \(secret) refused"),
            instances: [FailureDiagnosis.Instance(app: "api", pmId: 0, status: "errored", restarts: 2, exitCode: 1)],
            logs: [FailureDiagnosis.LogTail(app: "api", pmIds: [0], stream: .stderr, lines: lines, truncated: false)]
        )
    }

    static func state(services: [String], diagnosis: FailureDiagnosis) -> AgentState {
        var state = AgentState()
        for service in services {
            state[service] = ServiceState(
                highestAcceptedSerial: 2,
                failures: [.init(serial: 2, reason: "api: pm_id 0 errored", kind: .rolledBack, diagnosis: diagnosis)],
                phase: .failed,
                message: "serial 2 failed"
            )
        }
        return state
    }

    static func report(_ state: AgentState, services: [String]) -> StatusReport {
        StatusReportBuilder.report(
            services: services,
            state: state,
            table: [],
            appNames: [:],
            health: [:],
            targetSerials: [:],
            hostname: "web-01",
            processManager: "builtin",
            mask: mask
        )
    }

    @Test func theDiagnosisIsReportedMasked() throws {
        let lines = ["Error: cannot log in with \(Self.secret)", "\tat main (server.js:3)"]
        let report = Self.report(Self.state(services: ["api"], diagnosis: Self.diagnosis(lines: lines)), services: ["api"])
        let diagnosis = try #require(report.services.first?.failures.first?.diagnosis)
        #expect(diagnosis.logs.first?.lines == ["Error: cannot log in with ${TOKEN}", "\tat main (server.js:3)"])
        #expect(diagnosis.health?.body == "token ${TOKEN} refused")
        #expect(diagnosis.instances.first?.exitCode == 1)
        let text = String(decoding: report.json.encoded(), as: UTF8.self)
        #expect(!text.contains(Self.secret))
        // The controller accepts it as sent.
        #expect(try StatusReport(json: JSONValue.parse(report.json.encoded())) == report)
    }

    @Test func logTextBeyondTheReportBudgetIsLeftOutServiceByService() throws {
        // 40 services, each with a full tail of 8 KiB: 320 KiB of log text against a budget of 256 KiB.
        let lines = (0..<8).map { index in String(repeating: Character(String(index)), count: 1024) }
        let services = (0..<40).map { "svc-\($0)" }
        let report = Self.report(Self.state(services: services, diagnosis: Self.diagnosis(lines: lines)), services: services)
        let withLogs = report.services.filter { !($0.failures.first?.diagnosis?.logs.isEmpty ?? true) }
        #expect(withLogs.count == StatusReportBuilder.logBudgetBytes / (8 * 1024))
        #expect(withLogs.map(\.service) == Array(services.prefix(withLogs.count)), "the first services keep theirs")
        // Every service keeps the rest of its diagnosis.
        #expect(report.services.allSatisfy { $0.failures.first?.diagnosis?.instances.count == 1 })
        let bytes = report.json.encoded().count
        #expect(bytes < 512 * 1024, "\(bytes) bytes")
        #expect(try StatusReport(json: JSONValue.parse(report.json.encoded())) == report)
    }

    /// A state file written by hand (or by a future version) may hold more than the limits: the report is clipped to
    /// what the controller accepts instead of being refused whole.
    @Test func aDiagnosisOverTheLimitsIsClippedToThem() throws {
        var big = Self.diagnosis(lines: (0..<80).map { "line \($0) " + String(repeating: "z", count: 300) } + ["one\nline\u{1B}"])
        big.instances = Array(repeating: big.instances[0], count: 100)
        big.logs = Array(repeating: big.logs[0], count: 20)
        big.health?.body = String(repeating: "b", count: 5000)
        big.deadlineSeconds = 1_000_000
        let report = Self.report(Self.state(services: ["api"], diagnosis: big), services: ["api"])
        let diagnosis = try #require(report.services.first?.failures.first?.diagnosis)
        #expect(diagnosis.instances.count == FailureDiagnosis.maximumInstances)
        #expect(diagnosis.health?.body?.utf8.count == FailureDiagnosis.maximumBodyBytes)
        #expect(diagnosis.deadlineSeconds == 86_400)
        for tail in diagnosis.logs {
            #expect(tail.lines.count <= FailureDiagnosis.maximumLines)
            #expect(tail.lines.joined().utf8.count <= FailureDiagnosis.maximumBytes)
            #expect(tail.lines.last == "one line ", "line breaks and escapes become spaces")
            #expect(tail.truncated)
        }
        #expect(try StatusReport(json: JSONValue.parse(report.json.encoded())) == report)
    }
}
