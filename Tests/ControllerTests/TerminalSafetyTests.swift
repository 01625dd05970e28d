import Foundation
import Shared
import TestSupport
import Testing

@testable import Controller

/// An attacker holding one instance's credentials writes what its agent reports: the hostname, status messages,
/// failure reasons. The operator reads those through `ferry-controller` in a terminal, and the controller's log. None
/// of it may reach the terminal as a control sequence; `--json` keeps the text exactly.
@Suite struct TerminalSafetyTests {
    /// Sets the clipboard, clears the screen, returns to the line's start, a C1 CSI, a right-to-left override: in a
    /// message or a failure's reason, which may hold any text.
    static let hostile = "web\u{1B}]52;c;cHduZWQ=\u{07}\u{1B}[2J\r\u{9B}1m\u{202E}1"
    /// What a terminal shows of the clipboard write, escaped.
    static let shown = #"web\u001b]52;c;cHduZWQ=\u0007"#
    /// A hostname: documents refuse C0 controls and DEL in names (`Field.string`), not C1 controls or bidi overrides.
    /// A line feed and what follows it, made to look like a line of `events` of its own.
    static let forged = "\n2026-01-01T00:00:00Z  api  serial 9  completed  every agent healthy"
    static let hostileHostname = "web\u{9B}2J\u{202E}1"
    static let shownHostname = #"web\u009b2J\u202e1"#

    static func controlFree(_ text: String) -> Bool {
        !text.unicodeScalars.contains { TerminalText.needsEscape($0) }
    }

    @Test func whatAnAgentWritesReachesTheOperatorEscaped() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-terminal-safety") { directory in
            let cli = CommandLineEndToEndTests.cli
            let data = directory.appendingPathComponent("data").path
            let keyPrefix = directory.appendingPathComponent("operator").path
            _ = try await cli(["keygen", "--out", keyPrefix], [:], nil)
            let operatorToken = try Self.token(try await cli(["token", "create", "--data-dir", data, "--role", "operator", "--json"], [:], nil))
            let enrollToken = try Self.token(
                try await cli(["token", "create", "--data-dir", data, "--role", "enroll", "--any-service", "--json"], [:], nil)
            )
            let server = try await ServerProcess(
                arguments: ["--data-dir", data, "--trusted-key", keyPrefix + ".pub", "--poll-seconds", "5"],
                logDirectory: directory
            )
            defer { server.stop() }
            let environment = ["FERRY_CONTROLLER_URL": server.baseURL, "FERRY_TOKEN": operatorToken]

            let http = LiveHTTP()
            let enrolled = try await http.send(
                "POST",
                server.baseURL + "/v1/agents",
                token: enrollToken,
                body: EnrollRequest(name: "web-1", hostname: Self.hostileHostname, services: ["api"]).json.encoded()
            )
            #expect(enrolled.status == 201, "\(String(decoding: enrolled.body, as: UTF8.self))")
            let agent = try EnrollResponse(json: JSONValue.parse(enrolled.body))
            // Two hostnames taking turns: the controller logs an identity conflict naming both.
            for hostname in ["web-1.internal", Self.hostileHostname, "web-1.internal", Self.hostileHostname, "web-1.internal", Self.hostileHostname] {
                let report = StatusReport(
                    agentVersion: "0.1.0",
                    hostname: hostname,
                    processManager: "builtin",
                    services: [
                        ServiceStatus(
                            service: "api",
                            serial: 1,
                            version: "1.0.0",
                            targetSerial: 2,
                            phase: .rolledBack,
                            message: "rolled back: " + Self.hostile + Self.forged,
                            health: .unhealthy,
                            failures: [
                                ReleaseFailure(serial: 2, reason: "health check answered: " + Self.hostile + Self.forged, kind: "rolled-back")
                            ],
                            processes: []
                        )
                    ]
                )
                let posted = try await http.send(
                    "POST",
                    server.baseURL + "/v1/agents/\(agent.agentID)/status",
                    token: agent.token,
                    body: report.json.encoded()
                )
                #expect(posted.status == 204)
            }

            // Each command, and what of the agent's text it shows.
            let human: [([String], [String])] = [
                (["status"], [Self.shownHostname]),
                (["agents"], [Self.shownHostname]),
                (["agents", "show", "web-1"], [Self.shownHostname, Self.shown]),
                (["events"], [Self.shown]),
            ]
            for (arguments, texts) in human {
                let run = try await cli(arguments, environment, nil)
                let what = arguments.joined(separator: " ")
                #expect(run.status == 0, "\(what): \(run.errors)")
                #expect(Self.controlFree(run.output) && Self.controlFree(run.errors), "\(what): \(run.output.debugDescription)")
                for text in texts { #expect(run.output.contains(text), "\(what) shows \(text), escaped: \(run.output)") }
                // A line feed of the agent's does not start a line of the output: one line per event, per field.
                #expect(!run.output.split(separator: "\n").contains { $0.hasPrefix("2026-01-01T00:00:00Z") }, "\(what): \(run.output)")
            }
            // JSON: the same text, exactly, once parsed.
            let list = try CommandLineJSONTests.json(try await cli(["agents", "--json"], environment, nil), "agents")
            #expect(FleetDocument.array(list).first?.object?["hostname"] == .string(Self.hostileHostname))
            let json: [([String], String)] = [
                (["status", "--json"], Self.shownHostname),
                (["agents", "show", "web-1", "--json"], Self.shownHostname),
                (["events", "--json"], Self.shown),
            ]
            for (arguments, text) in json {
                let run = try await cli(arguments, environment, nil)
                let what = arguments.joined(separator: " ")
                #expect(run.status == 0, "\(what): \(run.errors)")
                #expect(Self.controlFree(run.output), "\(what): \(run.output.debugDescription)")
                for line in run.output.split(separator: "\n") {
                    #expect(throws: Never.self, "\(what): every line is JSON") { try JSONValue.parse(Array(line.utf8)) }
                }
                #expect(run.output.contains(text), "\(what)")
            }
            let shown = try CommandLineJSONTests.json(try await cli(["agents", "show", "web-1", "--json"], environment, nil), "agents show")
            let service = FleetDocument.array(shown.object?["services"]).first?.object
            let reason = FleetDocument.array(service?["failures"]).first?.object?["reason"]
            #expect(reason == .string("health check answered: " + Self.hostile + Self.forged), "the reason, exactly")

            // An error that quotes the controller's answer.
            let missing = try await cli(["agents", "show", "web-2"], environment, nil)
            #expect(missing.status != 0 && Self.controlFree(missing.errors))

            // The controller's log: the conflict's warning names both hostnames on one line, escaped.
            let log = server.log
            let warning = try #require(log.split(separator: "\n").first { $0.contains("Two running agents report as one agent") })
            #expect(warning.contains(Self.shownHostname), "\(warning)")
            #expect(Self.controlFree(log), "\(log.debugDescription)")
        }
    }

    static func token(_ run: CommandLineEndToEndTests.Run) throws -> String {
        FleetDocument.text(try CommandLineJSONTests.json(run, "token create").object?["token"])
    }

    @Test func aFailuresLogTailLosesItsColoursAndKeepsNoOtherSequence() {
        let failure = JSONValue.object([
            "serial": .integer(3), "kind": .string("rolled-back"), "reason": .string("exited"),
            "diagnosis": .object([
                "stage": .string("health"), "cause": .string("crashed"), "at": .string("2026-12-05T10:00:00Z"),
                "logs": .array([
                    .object([
                        "stream": .string("stderr"), "app": .string("api"), "pmIds": .array([.integer(0)]),
                        "lines": .array([.string("\u{1B}[31mError\u{1B}[0m: boom"), .string("\u{1B}]52;c;eA==\u{07}"), .string("a\rb")]),
                    ])
                ]),
            ]),
        ])
        let lines = FailureText.lines(failure)
        #expect(lines.suffix(3) == ["    | Error: boom", #"    | \u001b]52;c;eA==\u0007"#, #"    | a\u000db"#])
    }
}
