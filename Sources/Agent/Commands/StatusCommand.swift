import ArgumentParser

// Placeholder until the agent issue lands this command.
struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "(not yet available)", shouldDisplay: false)
    func run() async throws { throw ValidationError("ferry-agent status is not implemented yet") }
}
