import ArgumentParser

// Placeholder until the controller issue lands this command.
struct TokenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "token", abstract: "(not yet available)", shouldDisplay: false)
    func run() async throws { throw ValidationError("ferry-controller token is not implemented yet") }
}
