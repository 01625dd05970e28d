import ArgumentParser
import Foundation
import Shared

/// `ferry-controller agents`: enrolled agents (listing them is the default), and removing one.
struct AgentsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agents",
        abstract: "List enrolled agents, show one, or remove one.",
        subcommands: [AgentsListCommand.self, AgentsShowCommand.self, AgentsRemoveCommand.self],
        defaultSubcommand: AgentsListCommand.self
    )
}

/// `ferry-controller agents [list] [--json]`.
struct AgentsListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "List enrolled agents with their services and when they were last seen (the default)."
    )

    @OptionGroup var controller: ControllerOptions

    @Flag(name: .long, help: "Print the agents as JSON instead of a table.")
    var json = false

    func run() async throws {
        let fleet = try await FleetDocument.fetchAll(try controller.client())
        let agents = FleetDocument.agents(fleet)
        if json {
            Console.print(String(decoding: JSONValue.array(agents.map { .object($0) }).encoded(), as: UTF8.self))
            return
        }
        guard !agents.isEmpty else {
            Console.print("no agents enrolled")
            return
        }
        Console.print(Self.table(agents))
    }

    /// The agents as a table; an agent two running agents report as is named with "(identity conflict)".
    static func table(_ agents: [[String: JSONValue]]) -> String {
        let rows = agents.map { agent in
            [
                FleetDocument.text(agent["id"]),
                FleetDocument.text(agent["name"]) + (agent["identityConflict"] == .bool(true) ? " (identity conflict)" : ""),
                FleetDocument.text(agent["hostname"]),
                FleetDocument.array(agent["services"]).compactMap { $0.object.map { FleetDocument.text($0["service"]) } }.joined(separator: ","),
                FleetDocument.text(agent["agentVersion"]), FleetDocument.lastSeen(agent),
            ]
        }
        return TextTable.render(headers: ["ID", "NAME", "HOSTNAME", "SERVICES", "AGENT", "LAST SEEN"], rows: rows)
    }
}

/// `ferry-controller agents remove NAME` (operator token): `DELETE /v1/agents/{name}`.
struct AgentsRemoveCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "remove",
        abstract: "Remove an agent: its token stops working at once, its status goes; the event history stays.",
        discussion: """
            Use it for a retired instance, or before enrolling a rebuilt one under the same name with an enroll token \
            (which never replaces an existing agent). An operator may instead re-enroll with `ferry-agent enroll --replace`.
            """
    )

    @OptionGroup var controller: ControllerOptions

    @Argument(help: "The agent's name.")
    var name: String

    @Flag(name: .long, help: "Print the controller's answer ({\"removed\": {id, name, hostname, services}}) as JSON.")
    var json = false

    func validate() throws {
        guard !name.isEmpty, name.utf8.count <= 128 else { throw ValidationError("an agent name is 1 to 128 characters") }
    }

    func run() async throws {
        let answer = try await controller.client().deleteJSON("/v1/agents/\(try AgentsCommand.pathSegment(name))")
        if json {
            Console.print(String(decoding: answer.encoded(), as: UTF8.self))
            return
        }
        let removed = answer.object?["removed"]?.object
        Console.print("removed agent \(name) (\(FleetDocument.text(removed?["id"]))); its token no longer works")
    }
}

extension AgentsCommand {
    /// `name` percent-encoded as one path segment.
    static func pathSegment(_ name: String) throws -> String {
        // A dot segment would be resolved away by libcurl (`agents remove ..` became `DELETE /v1/`).
        if name == "." || name == ".." { return String(repeating: "%2E", count: name.count) }
        var allowed = CharacterSet.urlPathAllowed
        allowed.remove(charactersIn: "/;?#%")
        guard let encoded = name.addingPercentEncoding(withAllowedCharacters: allowed) else {
            throw ValidationError("the agent name \(name) cannot be put in a URL")
        }
        return encoded
    }
}

/// `ferry-controller agents show NAME [--json]`: one agent in full (`GET /v1/agents/{name}`).
struct AgentsShowCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show",
        abstract: "Show one agent: its services, release, phase, processes, last reports and the failure with its log tail.",
        discussion: """
            NAME is the agent's name (or its id). For each service: the version and serial it runs (and the serial it \
            heads for), phase, health and message; the processes (pm_id, pid, status, restarts, uptime, memory, CPU); \
            the failure of a serial above the one it runs, with the health gate's verdict and the last lines the app \
            wrote to stderr and stdout (masked on the instance). Then the agent's last status reports.
            """
    )

    @OptionGroup var controller: ControllerOptions

    @Argument(help: "The agent's name (or id).")
    var name: String

    @Flag(name: .long, help: "Print the agent document (GET /v1/agents/{name}) as JSON.")
    var json = false

    @Option(name: .long, help: "Lines of each failure's log tail to print (the agents send up to 50).")
    var logLines: Int = 50

    func validate() throws {
        guard !name.isEmpty, name.utf8.count <= 128 else { throw ValidationError("an agent name is 1 to 128 characters") }
        guard (0...FailureDiagnosis.maximumLines).contains(logLines) else {
            throw ValidationError("--log-lines must be between 0 and \(FailureDiagnosis.maximumLines)")
        }
    }

    func run() async throws {
        let agent = try await controller.client().getJSON("/v1/agents/\(try AgentsCommand.pathSegment(name))")
        if json {
            Console.print(String(decoding: agent.encoded(), as: UTF8.self))
            return
        }
        for line in Self.describe(agent, logLines: logLines) { Console.print(line) }
    }

    /// The agent document as terminal lines.
    static func describe(_ agent: JSONValue, logLines: Int) -> [String] {
        let fields = agent.object ?? [:]
        let text = FleetDocument.text
        var lines = [
            "agent \(text(fields["name"])) (\(text(fields["id"]))) on \(text(fields["hostname"])), ferry-agent \(text(fields["agentVersion"])) "
                + "with \(text(fields["processManager"]))",
            "enrolled \(text(fields["enrolledAt"]))"
                + (fields["instanceId"].flatMap { $0 == .null ? nil : " on instance \(text($0)) (attested)" } ?? "")
                + ", last seen \(FleetDocument.lastSeen(fields))",
        ]
        if case .object(let conflict)? = fields["identityConflict"] {
            let hostnames = FleetDocument.array(conflict["hostnames"]).map(text).joined(separator: " and ")
            lines.append(
                "WARNING: two running agents report as this agent, from \(hostnames) in turn (noticed \(text(conflict["noticedAt"]))): "
                    + "remove it (ferry-controller agents remove, which revokes the shared token) and enroll each instance afresh"
            )
        }
        for case .object(let service) in FleetDocument.array(fields["services"]) {
            lines.append("")
            guard service["reported"] == .bool(true) else {
                lines.append("service \(text(service["service"])): no status report yet")
                continue
            }
            var head = "service \(text(service["service"])): version \(text(service["version"])) serial \(text(service["serial"]))"
            if let target = service["targetSerial"], target != .null, target != service["serial"] { head += " → \(text(target))" }
            head += ", \(text(service["phase"])), \(text(service["health"])) (reported \(text(service["updatedAt"])))"
            lines.append(head)
            lines.append("  \(text(service["message"]))")
            let processes = FleetDocument.array(service["processes"]).compactMap(\.object)
            if processes.isEmpty {
                lines.append("  no process runs")
            } else {
                let rows = processes.map { process in
                    [
                        text(process["name"]), text(process["pmId"]), text(process["pid"]), text(process["status"]), text(process["restarts"]),
                        uptime(process["uptimeSeconds"]), memory(process["memoryBytes"]), cpu(process["cpuPercent"]),
                    ]
                }
                let table = TextTable.render(headers: ["APP", "PM_ID", "PID", "STATUS", "RESTARTS", "UPTIME", "MEMORY", "CPU"], rows: rows)
                lines += table.split(separator: "\n").map { "  \($0)" }
            }
            if let failure = service["failure"], failure != .null {
                lines.append("  failure:")
                lines += FailureText.lines(failure, indent: "    ", logLines: logLines)
            }
        }
        let reports = FleetDocument.array(fields["reports"]).compactMap(\.object)
        if !reports.isEmpty {
            lines.append("")
            lines.append("last reports (newest first):")
            var rows: [[String]] = []
            for report in reports {
                for case .object(let service) in FleetDocument.array(report["services"]) {
                    rows.append([
                        text(report["receivedAt"]), text(service["service"]), text(service["serial"]), text(service["phase"]),
                        text(service["health"]), FleetDocument.shortened(text(service["message"]), to: 100),
                    ])
                }
            }
            lines += TextTable.render(headers: ["RECEIVED", "SERVICE", "SERIAL", "PHASE", "HEALTH", "MESSAGE"], rows: rows)
                .split(separator: "\n").map { "  \($0)" }
        }
        return lines
    }

    private static func uptime(_ value: JSONValue?) -> String {
        guard case .integer(let seconds)? = value else { return "-" }
        if seconds < 60 { return "\(seconds)s" }
        if seconds < 3600 { return "\(seconds / 60)m" }
        if seconds < 86_400 { return "\(seconds / 3600)h\(seconds % 3600 / 60)m" }
        return "\(seconds / 86_400)d\(seconds % 86_400 / 3600)h"
    }

    private static func memory(_ value: JSONValue?) -> String {
        guard case .integer(let bytes)? = value else { return "-" }
        return "\(bytes / (1 << 20)) MB"
    }

    private static func cpu(_ value: JSONValue?) -> String {
        switch value {
        case .integer(let n)?: return "\(n)%"
        case .number(let d)?: return String(format: "%.1f%%", d)
        default: return "-"
        }
    }
}
