import ArgumentParser

// Placeholder until the agent issue lands this command.
struct EnrollCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "enroll", abstract: "(not yet available)", shouldDisplay: false)
    func run() async throws { throw ValidationError("ferry-agent enroll is not implemented yet") }
}
