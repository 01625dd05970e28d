import ArgumentParser
import Foundation
import Shared

/// `ferry-controller status`: the fleet as a table (or JSON).
struct FleetStatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show what every agent runs: version, serial, phase, health, last seen.",
        discussion: "One row per agent and service. Agents without a status report for three poll intervals are marked stale."
    )

    @OptionGroup var controller: ControllerOptions

    @Option(name: .long, help: "Only this service.")
    var service: String?

    @Flag(name: .long, help: "Print the fleet document (GET /v1/fleet) as JSON instead of a table.")
    var json = false

    func run() async throws {
        let fleet = try await FleetDocument.fetchAll(try controller.client())
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
    }
}
