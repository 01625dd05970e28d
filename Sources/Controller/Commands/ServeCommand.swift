import ArgumentParser

// Placeholder until the controller issue lands this command.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "serve", abstract: "(not yet available)", shouldDisplay: false)
    func run() async throws { throw ValidationError("ferry-controller serve is not implemented yet") }
}
