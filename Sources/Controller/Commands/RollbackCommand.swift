import ArgumentParser

// Placeholder until the controller issue lands this command.
struct RollbackCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rollback", abstract: "(not yet available)", shouldDisplay: false)
    func run() async throws { throw ValidationError("ferry-controller rollback is not implemented yet") }
}
