import Logging
import Testing

@testable import Agent

/// Command lines an operator really types, refused before anything runs with an error that says what to change, or
/// taken as meant.
@Suite struct AgentCommandInputTests {
    static let enroll = [
        "enroll", "--controller", "http://127.0.0.1:8080", "--token", "fer_x", "--config", "/tmp/x.json", "--trusted-key", "/tmp/k.pub",
    ]

    /// Before: a repeated `--service` enrolled, and the controller then refused every status report of the agent (a
    /// service named twice); a `--log-level` that names no level logged at info without a word.
    static let refused: [(arguments: [String], message: String)] = [
        (enroll + ["--service", "api", "--service", "web", "--service", "api"], "--service api is given more than once"),
        (["run", "--log-level", "verbose"], #"--log-level "verbose" is not a log level: give one of trace, debug, info"#),
        (["once", "--log-level", ""], #"--log-level "" is not a log level"#),
    ]

    @Test(arguments: refused)
    func refuses(_ row: (arguments: [String], message: String)) {
        do {
            _ = try AgentCommand.parseAsRoot(row.arguments)
            Issue.record("\(row.arguments) was accepted")
        } catch {
            let message = AgentCommand.message(for: error)
            #expect(message.contains(row.message), "\(message)")
        }
    }

    /// A level in capitals (`FERRY_LOG_LEVEL=DEBUG`, as people write it) is that level, not info.
    @Test(arguments: [("DEBUG", Logger.Level.debug), ("Warning", .warning), ("trace", .trace), ("loud", nil)] as [(String, Logger.Level?)])
    func aLevelInAnyCaseIsThatLevel(_ text: String, _ level: Logger.Level?) throws {
        #expect(ConfigOptions.level(text) == level)
        if level != nil { _ = try AgentCommand.parseAsRoot(["once", "--log-level", text]) }
    }
}
