import ArgumentParser
import Foundation
import Shared

/// `ferry-controller agents`: enrolled agents.
struct AgentsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agents",
        abstract: "List enrolled agents with their services and when they were last seen."
    )

    @OptionGroup var controller: ControllerOptions

    @Flag(name: .long, help: "Print the agents as JSON instead of a table.")
    var json = false

    func run() async throws {
        let fleet = try await controller.client().getJSON("/v1/fleet")
        let agents = FleetDocument.agents(fleet)
        if json {
            Console.print(String(decoding: JSONValue.array(agents.map { .object($0) }).encoded(), as: UTF8.self))
            return
        }
        guard !agents.isEmpty else {
            Console.print("no agents enrolled")
            return
        }
        let rows = agents.map { agent in
            [
                FleetDocument.text(agent["id"]), FleetDocument.text(agent["name"]), FleetDocument.text(agent["hostname"]),
                FleetDocument.array(agent["services"]).compactMap { $0.object.map { FleetDocument.text($0["service"]) } }.joined(separator: ","),
                FleetDocument.text(agent["agentVersion"]), FleetDocument.lastSeen(agent),
            ]
        }
        Console.print(TextTable.render(headers: ["ID", "NAME", "HOSTNAME", "SERVICES", "AGENT", "LAST SEEN"], rows: rows))
    }
}
