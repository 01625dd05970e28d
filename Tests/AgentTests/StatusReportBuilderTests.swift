import Foundation
import Shared
import Testing

@testable import Agent

@Suite("StatusReportBuilder: what the controller learns about this instance, and never the env")
struct StatusReportBuilderTests {
    static let releaseSecret = "release-secret-7a1c"
    static let appSecret = "app-secret-42bd"
    static let instanceSecret = "instance-secret-hunter2"

    /// `api` v7 applied, with a secret in every env layer; `web` never installed.
    static func fixture() -> (state: AgentState, specs: [AppSpec], release: Release) {
        var release = CoreFixture.release(serial: 7, apps: ["api", "api-worker"], env: ["DB_PASSWORD": releaseSecret])
        release.pm2.apps[0].options["env"] = .object(["API_KEY": .string(appSecret)])
        var state = AgentState()
        state["api"] = ServiceState(
            highestAcceptedSerial: 8,
            applied: CoreFixture.applied(release, envDigest: SHA256.hash(Array("TOKEN=\(instanceSecret)\n".utf8)).hex),
            failures: [.init(serial: 8, reason: "not healthy within 60s", kind: .rolledBack)],
            phase: .running,
            message: "serial 7 is running"
        )
        let specs = CoreFixture.specs(release, instanceEnv: ["TOKEN": instanceSecret])
        return (state, specs, release)
    }

    static func report(
        state: AgentState,
        table: [ManagedProcess],
        appNames: [String: Set<String>] = ["api": ["api", "api-worker"]],
        health: [String: HealthState] = ["api": .healthy],
        targetSerials: [String: Int64] = [:],
        hostname: String = "web-01.internal",
        mask: SecretMask = SecretMask([["TOKEN": instanceSecret]])
    ) -> StatusReport {
        StatusReportBuilder.report(
            services: ["api", "web"],
            state: state,
            table: table,
            appNames: appNames,
            health: health,
            targetSerials: targetSerials,
            hostname: hostname,
            processManager: "pm2",
            mask: mask
        )
    }

    @Test func theReportNeverContainsEnvValues() throws {
        let (state, specs, _) = Self.fixture()
        // The secrets really are in what the agent holds: in the specs it runs, and in the payload it keeps.
        #expect(specs[0].env["API_KEY"] == Self.appSecret)
        #expect(specs[0].env["TOKEN"] == Self.instanceSecret)
        let payload = String(decoding: try #require(state["api"].applied).payload, as: UTF8.self)
        #expect(payload.contains(Self.releaseSecret))

        let table = specs.enumerated().map { CoreFixture.process($0.element, pmId: $0.offset) }
        let report = Self.report(state: state, table: table)
        let text = String(decoding: report.json.encoded(), as: UTF8.self)
        for secret in [Self.releaseSecret, Self.appSecret, Self.instanceSecret, "DB_PASSWORD", "API_KEY", "TOKEN"] {
            #expect(!text.contains(secret), "the report leaks \(secret): \(text)")
        }
        // It is still a useful report.
        #expect(text.contains("api-worker"))
        #expect(text.contains("serial 7 is running"))
    }

    @Test func reportsEachServiceWithOnlyItsOwnProcesses() throws {
        let (state, specs, _) = Self.fixture()
        let table = [
            CoreFixture.stray("web", pmId: 4), CoreFixture.process(specs[1], pmId: 3, status: .errored, restarts: 16),
            CoreFixture.stray("old-cron", pmId: 2), CoreFixture.process(specs[0], pmId: 1), CoreFixture.process(specs[0], pmId: 0),
        ]
        let report = Self.report(state: state, table: table, appNames: ["api": ["api", "api-worker"], "web": ["web"]])
        #expect(report.agentVersion == FerryVersion.current)
        #expect(report.hostname == "web-01.internal")
        #expect(report.processManager == "pm2")
        #expect(report.services.map(\.service) == ["api", "web"])

        let api = report.services[0]
        #expect(api.processes.map(\.pmId) == [0, 1, 3])
        #expect(api.processes.map(\.name) == ["api", "api", "api-worker"])
        #expect(
            api.processes[2]
                == ProcessReport(
                    name: "api-worker",
                    pmId: 3,
                    status: "errored",
                    restarts: 16,
                    uptimeSeconds: nil,
                    memoryBytes: 50 << 20,
                    cpuPercent: 1.5
                )
        )
        #expect(api.serial == 7)
        #expect(api.version == "1.0.7")
        #expect(api.targetSerial == 8)
        #expect(api.phase == .running)
        #expect(api.health == .healthy)
        #expect(api.failures == [ReleaseFailure(serial: 8, reason: "not healthy within 60s", kind: "rolled-back")])

        let web = report.services[1]
        #expect(web.processes.map(\.name) == ["web"])
        #expect(web.serial == nil)
        #expect(web.version == nil)
        #expect(web.targetSerial == nil)
        #expect(web.phase == .waiting)
        #expect(web.message == "waiting for the first release")
        #expect(web.health == .unknown)
    }

    @Test func aServiceWithNoKnownAppsReportsNoProcesses() {
        let (state, specs, _) = Self.fixture()
        let report = Self.report(state: state, table: [CoreFixture.process(specs[0])], appNames: [:])
        #expect(report.services.allSatisfy { $0.processes.isEmpty })
    }

    @Test func theTargetSerialIsTheDesiredOneWhenKnown() {
        let (state, _, _) = Self.fixture()
        #expect(Self.report(state: state, table: [], targetSerials: ["api": 9]).services[0].targetSerial == 9)
    }

    @Test func messagesAndReasonsQuotingAnInstanceSecretAreMasked() throws {
        var (state, specs, _) = Self.fixture()
        // Text the agent did not write: an error echoing the secret, an app crash quoting it.
        state["api"] = state["api"].restored(
            message: "pm2 start failed: env TOKEN=\(Self.instanceSecret) rejected",
            recording: [.init(serial: 9, reason: "app printed \(Self.instanceSecret) and exited", kind: .rolledBack)]
        )
        let report = Self.report(state: state, table: [CoreFixture.process(specs[0])])
        let api = report.services[0]
        #expect(api.message == "pm2 start failed: env TOKEN=${TOKEN} rejected")
        #expect(api.failures.first?.reason == "app printed ${TOKEN} and exited")
        #expect(!String(decoding: report.json.encoded(), as: UTF8.self).contains(Self.instanceSecret))
    }

    @Test func outOfRangeReadingsAreClampedSoTheControllerAcceptsTheReport() throws {
        let (state, specs, _) = Self.fixture()
        var process = CoreFixture.process(specs[0])
        process.cpuPercent = .infinity
        process.memoryBytes = .max
        process.uptimeSeconds = .max
        process.restarts = .max
        let report = Self.report(state: state, table: [process])
        let reported = try #require(report.services[0].processes.first)
        #expect(reported.cpuPercent == 0)
        #expect(reported.memoryBytes == 1 << 50)
        #expect(reported.restarts == Int64(Int32.max))
        let decoded = try StatusReport(json: JSONValue.parse(Array(report.json.encoded())))
        #expect(decoded == report)
    }

    @Test func longTextIsClippedSoTheControllerAcceptsTheReport() throws {
        var (state, specs, _) = Self.fixture()
        // Non-ASCII text: the controller counts UTF-8 bytes (2048 at most), not characters.
        state["api"] = state["api"].restored(
            message: String(repeating: "é", count: 5000),
            recording: (Int64(10)...30).map { .init(serial: $0, reason: String(repeating: "—", count: 3000), kind: .refused) }
        )
        let report = Self.report(
            state: state,
            table: [CoreFixture.process(specs[0])],
            hostname: String(repeating: "h", count: 200) + String(repeating: "ü", count: 200)
        )
        let api = report.services[0]
        #expect(api.failures.count == 10)
        #expect(api.failures.map(\.serial) == Array((Int64(21)...30).reversed()))
        #expect(api.message.utf8.count <= 2048)
        #expect(api.message.hasPrefix("éééé"))
        #expect(api.failures.allSatisfy { $0.reason.utf8.count <= 2048 && $0.reason.hasPrefix("——") })
        #expect(report.hostname.utf8.count <= 255)

        // What the controller's strict decoder makes of the encoded report.
        let decoded = try StatusReport(json: JSONValue.parse(Array(report.json.encoded())))
        #expect(decoded == report)
    }

    /// Whatever the state and the table hold, the report is one the controller accepts: a refusal's serial as an
    /// unverified envelope claimed it (a state file written before claims were checked), app names as long as a
    /// release may give them, and more processes than a status may list. Any one of them got every report refused, and
    /// the agent counted as stale, for as long as it lasted.
    @Test func whatTheStateAndTableHoldAlwaysMakeAReportTheControllerAccepts() throws {
        var (state, specs, _) = Self.fixture()
        state["api"] = state["api"].restored(
            message: "running",
            recording: [-1, 0, Int64(1) << 60, Release.maximumSerial].map { .init(serial: $0, reason: "claimed", kind: .refused) }
        )
        let longName = String(repeating: "n", count: PM2App.maximumNameBytes)
        var table: [ManagedProcess] = []
        for index in 0..<(ServiceStatus.maximumProcesses + 100) {
            var process = CoreFixture.process(specs[0], pmId: index)
            process.name = longName
            table.append(process)
        }
        let report = Self.report(state: state, table: table, appNames: ["api": [longName]])
        let api = report.services[0]
        #expect(Set(api.failures.filter { $0.reason == "claimed" }.map(\.serial)) == [0, Release.maximumSerial])
        #expect(api.processes.count == ServiceStatus.maximumProcesses)
        #expect(api.processes.map(\.pmId) == (0..<Int64(ServiceStatus.maximumProcesses)).map { $0 }, "the lowest pm ids")
        let decoded = try StatusReport(json: JSONValue.parse(Array(report.json.encoded())))
        #expect(decoded == report)
    }

    /// A NUL or an escape sequence in an error (a tool's output quoted in a message or a reason) becomes a space: the
    /// controller refuses a report with a NUL in its text, which would silence the agent for as long as it lasted.
    @Test func controlCharactersInFreeTextBecomeSpaces() throws {
        var (state, specs, _) = Self.fixture()
        state["api"] = state["api"].restored(
            message: "pm2 said \u{1B}[31mno\u{1B}[0m\u{0}\r done\n\tnext line",
            recording: [.init(serial: 9, reason: "exec failed: \u{0}\u{7F}binary", kind: .refused)]
        )
        let report = Self.report(state: state, table: [CoreFixture.process(specs[0])])
        let api = report.services[0]
        #expect(api.message == "pm2 said  [31mno [0m   done\n\tnext line")
        #expect(api.failures.first { $0.serial == 9 }?.reason == "exec failed:   binary")
        #expect(ReportText.freeText("root expired\u{0}") == "root expired ")

        let decoded = try StatusReport(json: JSONValue.parse(Array(report.json.encoded())))
        #expect(decoded == report)
    }
}
