import ArgumentParser
import Foundation
import Shared

/// `ferry-controller`: the server agents poll, and the operator's commands.
@main
struct ControllerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ferry-controller",
        abstract: "Serve signed releases to Ferry agents, and publish, sign and inspect them.",
        discussion: """
            Operators generate a key (`keygen`), publish signed releases (`publish`, or `sign` + the API), and watch \
            the fleet (`status`, the dashboard). The server (`serve`) stores artifacts and releases and answers \
            agents; it checks signatures on the way in but never holds a signing key.

            Operator commands read FERRY_CONTROLLER_URL, FERRY_TOKEN and FERRY_KEY when the flags are not given.
            """,
        version: FerryVersion.current,
        subcommands: [
            ServeCommand.self,
            KeygenCommand.self,
            SignCommand.self,
            VerifyCommand.self,
            TokenCommand.self,
            PublishCommand.self,
            FleetStatusCommand.self,
            RollbackCommand.self,
            AgentsCommand.self,
            PlanCommand.self,
            RolloutCommand.self,
            RootCommand.self,
            ApproveCommand.self,
            ReleasesCommand.self,
            EventsCommand.self,
            ArtifactsCommand.self,
        ]
    )

    /// ArgumentParser's `main`, with the final message (an error, or help) written through `Console`: an error can
    /// quote what the controller answered, and that can quote what an agent reported.
    static func main() async {
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            let code = exitCode(for: error)
            let message = withoutKeyText(fullMessage(for: error))
            if !message.isEmpty {
                if code == .success { Console.print(message) } else { Console.error(message) }
            }
            Foundation.exit(code.rawValue)
        }
    }

    /// `message` with each PEM block in it (from `-----BEGIN` to the end of its `-----END …-----` line, or to the next
    /// quote without one) replaced by a note: a private key pasted where its path goes (`--key "$(cat ci.key)"`) starts
    /// with dashes, and the parser's "unknown option" error quoted it whole, into a CI log.
    static func withoutKeyText(_ message: String) -> String {
        var text = Substring(message)
        var result = ""
        while let begin = text.range(of: "-----BEGIN") {
            result += text[..<begin.lowerBound]
            let rest = text[begin.upperBound...]
            if let end = rest.range(of: "-----END"), let close = rest[end.upperBound...].range(of: "-----") {
                text = rest[close.upperBound...]
            } else if let quote = rest.firstIndex(where: { $0 == "'" || $0 == "\"" }) {
                text = rest[quote...]
            } else {
                text = rest[rest.endIndex...]
            }
            result += "(key text not shown)"
        }
        return result + text
    }
}
