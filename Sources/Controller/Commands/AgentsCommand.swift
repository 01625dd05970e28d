import ArgumentParser
import Foundation
import Shared

/// `ferry-controller agents`: enrolled agents (listing them is the default), and removing one.
struct AgentsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agents",
        abstract: "List enrolled agents, or remove one.",
        subcommands: [AgentsListCommand.self, AgentsRemoveCommand.self],
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

    func validate() throws {
        guard !name.isEmpty, name.utf8.count <= 128 else { throw ValidationError("an agent name is 1 to 128 characters") }
    }

    func run() async throws {
        var allowed = CharacterSet.urlPathAllowed
        allowed.remove(charactersIn: "/;?#%")
        guard let encoded = name.addingPercentEncoding(withAllowedCharacters: allowed) else {
            throw ValidationError("the agent name \(name) cannot be put in a URL")
        }
        let answer = try await controller.client().deleteJSON("/v1/agents/\(encoded)")
        let removed = answer.object?["removed"]?.object
        Console.print("removed agent \(name) (\(FleetDocument.text(removed?["id"]))); its token no longer works")
    }
}
