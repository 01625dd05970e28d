import ArgumentParser

// Placeholder until the agent issue lands this command.
struct OnceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "once", abstract: "(not yet available)", shouldDisplay: false)
    func run() async throws { throw ValidationError("ferry-agent once is not implemented yet") }
}
