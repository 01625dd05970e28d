import ArgumentParser

// Placeholder until the controller issue lands this command.
struct PublishCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "publish", abstract: "(not yet available)", shouldDisplay: false)
    func run() async throws { throw ValidationError("ferry-controller publish is not implemented yet") }
}
