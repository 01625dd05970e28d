import ArgumentParser
import Testing

@testable import Controller

/// The insight commands' command lines: what parses, and every refused one with the message that says what to fix.
@Suite struct InsightCommandParsingTests {
    struct Refused: Sendable, CustomTestStringConvertible {
        var arguments: [String]
        /// A part of the error message.
        var message: String

        var testDescription: String { arguments.joined(separator: " ") }
    }

    static let refused: [Refused] = [
        Refused(arguments: ["agents", "show", ""], message: "an agent name is 1 to 128 characters"),
        Refused(arguments: ["agents", "show", String(repeating: "a", count: 129)], message: "an agent name is 1 to 128 characters"),
        Refused(arguments: ["agents", "show", "web-1", "--log-lines", "51"], message: "--log-lines must be between 0 and 50"),
        Refused(arguments: ["agents", "show", "web-1", "--log-lines=-1"], message: "--log-lines must be between 0 and 50"),
        Refused(arguments: ["status", "--service", "API"], message: "--service API is not a service name"),
        Refused(arguments: ["status", "--log-lines", "99999999999999999999"], message: "log-lines"),
        Refused(arguments: ["releases"], message: "--service"),
        Refused(arguments: ["releases", "--service", "api", "--limit", "0"], message: "--limit must be between 1 and 500"),
        Refused(arguments: ["releases", "--service", "api", "--limit", "501"], message: "--limit must be between 1 and 500"),
        Refused(arguments: ["releases", "--service", "a/b"], message: "--service a/b is not a service name"),
        Refused(arguments: ["events", "--limit", "1001"], message: "--limit must be between 0 and 1000"),
        Refused(arguments: ["events", "--service", "../etc"], message: "--service ../etc is not a service name"),
        Refused(arguments: ["rollout", "wait", "--serial", "1"], message: "--service"),
        Refused(arguments: ["rollout", "wait", "--service", "api"], message: "--serial"),
        Refused(arguments: ["rollout", "wait", "--service", "api", "--serial", "0"], message: "--serial must be between 1 and"),
        Refused(arguments: ["rollout", "wait", "--service", "api", "--serial", "1", "--timeout", "0s"], message: "--timeout 0s must be a duration"),
        Refused(arguments: ["rollout", "wait", "--service", "api", "--serial", "1", "--timeout", "8d"], message: "1 s to 7 days"),
        Refused(
            arguments: ["rollout", "wait", "--service", "api", "--serial", "1", "--timeout", "soon"],
            message: "--timeout soon must be a duration"
        ),
        // A bare number is seconds: 604,801 s is a second over 7 days (read as milliseconds it was 10 minutes).
        Refused(arguments: ["rollout", "wait", "--service", "api", "--serial", "1", "--timeout", "604801"], message: "1 s to 7 days"),
        Refused(arguments: ["rollout", "wait", "--service", "api", "--serial", "1", "--timeout=-5"], message: "must be a duration"),
        Refused(
            arguments: ["rollout", "wait", "--service", "api", "--serial", "1", "--timeout", "99999999999999999999"],
            message: "must be a duration"
        ),
        Refused(
            arguments: ["rollout", "wait", "--service", "api", "--serial", "1", "--log-lines", "51"],
            message: "--log-lines must be between 0 and 50"
        ),
    ]

    @Test(arguments: refused)
    func refusedCommandLines(_ row: Refused) {
        do {
            _ = try ControllerCommand.parseAsRoot(row.arguments)
            Issue.record("\(row.arguments) parsed")
        } catch {
            let message = ControllerCommand.message(for: error)
            #expect(message.contains(row.message), "\(message)")
        }
    }

    @Test func acceptedCommandLines() throws {
        let show = try #require(try ControllerCommand.parseAsRoot(["agents", "show", "web 1/eu", "--json"]) as? AgentsShowCommand)
        #expect(show.name == "web 1/eu" && show.json && show.logLines == 50)
        let wait = try #require(
            try ControllerCommand.parseAsRoot(["rollout", "wait", "--service", "api", "--serial", "7", "--timeout", "15m", "--json"])
                as? RolloutWaitCommand
        )
        #expect(wait.serial == 7 && wait.timeout == "15m" && wait.connection.json)
        // `--timeout 3600` is an hour, as `serve`'s bare timeouts are seconds; PM2's milliseconds stay in ecosystem files.
        #expect(
            try ControllerCommand.parseAsRoot(["rollout", "wait", "--service", "api", "--serial", "7", "--timeout", "3600"]) is RolloutWaitCommand
        )
        let durations: [(String, Int64?)] = [
            ("3600", 3_600_000), ("90s", 90_000), ("15m", 900_000), ("2h", 7_200_000), ("500ms", 500), ("0", 0),
            ("", nil), ("-5", nil), ("1.5", nil), ("99999999999999999999", nil), ("10 s", nil),
        ]
        for (text, milliseconds) in durations {
            #expect(CommandLineDuration.milliseconds(text) == milliseconds, "\(text.debugDescription)")
        }
        let events = try #require(try ControllerCommand.parseAsRoot(["events", "--service", "api", "--follow", "--limit", "0"]) as? EventsCommand)
        #expect(events.follow && events.limit == 0 && events.service == "api")
        let releases = try #require(try ControllerCommand.parseAsRoot(["releases", "--service", "api"]) as? ReleasesCommand)
        #expect(releases.limit == 50 && !releases.json)
    }
}
