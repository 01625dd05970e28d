import ArgumentParser

// Placeholder until the agent issue lands this command.
struct SupervisorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "supervisor",
        abstract: "Run the builtin process supervisor daemon (started by the agent on demand).",
        shouldDisplay: false
    )
    func run() async throws { throw ValidationError("ferry-agent supervisor is not implemented yet") }
}
