import ArgumentParser

// Placeholder until the agent issue lands this command.
struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "run", abstract: "(not yet available)", shouldDisplay: false)
    func run() async throws { throw ValidationError("ferry-agent run is not implemented yet") }
}
