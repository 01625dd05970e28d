import ArgumentParser

// Placeholder until the controller issue lands this command.
struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "(not yet available)", shouldDisplay: false)
    func run() async throws { throw ValidationError("ferry-controller status is not implemented yet") }
}
