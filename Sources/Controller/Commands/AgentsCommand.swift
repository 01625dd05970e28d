import ArgumentParser

// Placeholder until the controller issue lands this command.
struct AgentsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "agents", abstract: "(not yet available)", shouldDisplay: false)
    func run() async throws { throw ValidationError("ferry-controller agents is not implemented yet") }
}
