import ArgumentParser
import Foundation
import Shared

/// `ferry-controller status`: the fleet as a table (or JSON).
struct FleetStatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show what every agent runs: version, serial, phase, health, last seen, and why releases failed.",
        discussion: """
            One row per agent and service. Agents without a status report for three poll intervals are marked stale. \
            Below the table, each agent whose latest failure concerns a serial above the one it runs shows that failure: \
            the reason, the health gate's verdict (exit code and signal of each instance, the health URL's answer), and \
            the last lines the failing app wrote to stderr and stdout (masked: instance env values show as ${NAME}; the last \
            10 lines of each, `agents show NAME` has them all).
            """
    )

    @OptionGroup var controller: ControllerOptions

    @Option(name: .long, help: "Only this service.")
    var service: String?

    @Flag(name: .long, help: "Print the fleet document (GET /v1/fleet) as JSON instead of a table.")
    var json = false

    @Option(name: .long, help: "Lines of each failure's log tail to print (the fleet view carries the last 10; agents show has all).")
    var logLines: Int = 10

    func validate() throws {
        if let service, !Release.isValidServiceName(service) { throw ValidationError("--service \(service) is not a service name") }
        guard (0...FailureDiagnosis.maximumLines).contains(logLines) else {
            throw ValidationError("--log-lines must be between 0 and \(FailureDiagnosis.maximumLines)")
        }
    }

    func run() async throws {
        // The controller filters the agents (a fleet of 10,000 is not read whole for one service's 800).
        let fleet = try await FleetDocument.fetchAll(try controller.client(), query: service.map { "service=\(FleetQuery.escape($0))" } ?? "")
        let filtered = FleetDocument.filter(fleet, service: service)
        if json {
            Console.print(String(decoding: filtered.encoded(), as: UTF8.self))
            return
        }
        var rows: [[String]] = []
        for agent in FleetDocument.agents(filtered) {
            for entry in FleetDocument.array(agent["services"]) {
                guard case .object(let status) = entry else { continue }
                let name = FleetDocument.text(status["service"])
                if let service, name != service { continue }
                let reported = status["reported"] == .bool(true)
                rows.append([
                    FleetDocument.text(agent["name"]), FleetDocument.text(agent["hostname"]), name,
                    reported ? FleetDocument.text(status["version"]) : "-",
                    reported ? FleetDocument.text(status["serial"]) : "-",
                    reported ? FleetDocument.text(status["phase"]) : "no report",
                    reported ? FleetDocument.text(status["health"]) : "-",
                    FleetDocument.lastSeen(agent),
                ])
            }
        }
        let latest = FleetDocument.array(filtered.object?["services"]).compactMap { $0.object }.map {
            "\(FleetDocument.text($0["name"])) \(FleetDocument.text($0["latestVersion"])) (serial \(FleetDocument.text($0["latestSerial"])))"
        }
        if rows.isEmpty {
            Console.print(service.map { "no agent runs service \($0)" } ?? "no agents enrolled")
        } else {
            Console.print(TextTable.render(headers: ["AGENT", "HOST", "SERVICE", "VERSION", "SERIAL", "PHASE", "HEALTH", "LAST SEEN"], rows: rows))
        }
        if !latest.isEmpty { Console.print("latest release: " + latest.joined(separator: ", ")) }
        for case .object(let rollout) in FleetDocument.array(filtered.object?["rollouts"]) {
            if let service, FleetDocument.text(rollout["service"]) != service { continue }
            let counts = rollout["counts"]?.object ?? [:]
            var line = "rollout \(FleetDocument.text(rollout["service"])) serial \(FleetDocument.text(rollout["serial"]))"
            line += " (\(FleetDocument.text(rollout["strategy"]))): \(FleetDocument.text(rollout["state"]))"
            line += ", wave \(FleetDocument.text(rollout["wave"]))/\(FleetDocument.text(rollout["waveCount"]))"
            line += "; agents \(FleetDocument.text(counts["agents"])): updated \(FleetDocument.text(counts["updated"]))"
            line += ", healthy \(FleetDocument.text(counts["healthy"])), failed \(FleetDocument.text(counts["failed"]))"
            line += ", pending \(FleetDocument.text(counts["pending"]))"
            if let reason = rollout["reason"], reason != .null, !FleetDocument.text(reason).isEmpty {
                line += " — \(FleetDocument.text(reason))"
            }
            Console.print(line)
        }
        for case .object(let approval) in FleetDocument.array(filtered.object?["approvals"]) {
            if let service, FleetDocument.text(approval["service"]) != service { continue }
            let signers = FleetDocument.array(approval["signedBy"]).map { String(FleetDocument.text($0).prefix(12)) }
            let name = FleetDocument.text(approval["service"])
            let serial = FleetDocument.text(approval["serial"])
            Console.print(
                "awaiting approval: \(name) serial \(serial) (\(FleetDocument.text(approval["version"]))) published by "
                    + "\(FleetDocument.text(approval["publishedBy"])): \(signers.count) of \(FleetDocument.text(approval["signaturesRequired"])) "
                    + "signatures (signed by \(signers.isEmpty ? "no key" : signers.joined(separator: ", "))); "
                    + "approve with `ferry-controller approve --service \(name) --serial \(serial) --key KEY`"
            )
        }
        if case .object(let trust)? = filtered.object?["trustRoot"] {
            if let problem = trust["problem"], problem != .null {
                Console.print("trust root: \(FleetDocument.text(problem))")
            } else if trust["fromTrustedKeys"] != .bool(true) {
                let expired = trust["expired"] == .bool(true) ? " — EXPIRED: agents admit no new release" : ""
                Console.print(
                    "trust root: version \(FleetDocument.text(trust["version"])), expires \(FleetDocument.text(trust["expiresAt"]))\(expired)"
                )
            }
        }
        let behind = FleetDocument.agents(filtered).filter { agent in
            guard case .object(let root)? = agent["trustRoot"] else { return false }
            return root["problem"].map { $0 != .null } ?? false
        }
        for agent in behind {
            let problem = agent["trustRoot"]?.object?["problem"] ?? .null
            Console.print("agent \(FleetDocument.text(agent["name"])): \(FleetDocument.text(problem))")
        }
        printFailures(filtered)
    }

    /// Each agent's current failure of each service, with its diagnosis and log tails.
    private func printFailures(_ fleet: JSONValue) {
        for agent in FleetDocument.agents(fleet) {
            for case .object(let status) in FleetDocument.array(agent["services"]) {
                guard let failure = status["failure"], failure != .null else { continue }
                Console.print("")
                Console.print("failure on \(FleetDocument.text(agent["name"])) (\(FleetDocument.text(status["service"]))):")
                for line in FailureText.lines(failure, logLines: logLines) { Console.print(line) }
                Console.print("  (whole tails: ferry-controller agents show \(FleetDocument.text(agent["name"])))")
            }
        }
    }
}
