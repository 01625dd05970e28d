import ArgumentParser

// Placeholder until the agent issue lands this command.
struct FetchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "fetch", abstract: "(not yet available)", shouldDisplay: false)
    func run() async throws { throw ValidationError("ferry-agent fetch is not implemented yet") }
}
