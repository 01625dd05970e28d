import ArgumentParser
import Testing

@testable import Controller

/// `ferry-controller rollout ...` parsing and its connection options (the binary itself runs in `RolloutLiveTests`).
@Suite struct RolloutCommandTests {
    @Test func parsesActionsAndStatus() throws {
        let pause = try #require(
            try ControllerCommand.parseAsRoot(["rollout", "pause", "--service", "web", "--controller", "http://127.0.0.1:9", "--token", "t"])
                as? RolloutPauseCommand
        )
        #expect(pause.service == "web")
        let client = try pause.connection.client(environment: [:])
        #expect(client.baseURL == "http://127.0.0.1:9")
        #expect(client.token == "t")

        let status = try #require(try ControllerCommand.parseAsRoot(["rollout", "status", "--json"]) as? RolloutStatusCommand)
        #expect(status.service == nil)
        #expect(status.connection.json)
        // Environment twins when the flags are absent; a trailing slash is dropped.
        let fromEnvironment = try status.connection.client(environment: ["FERRY_CONTROLLER_URL": "https://ferry.example/", "FERRY_TOKEN": "env"])
        #expect(fromEnvironment.baseURL == "https://ferry.example")
        #expect(fromEnvironment.token == "env")
        #expect(try ControllerCommand.parseAsRoot(["rollout", "abort", "--service", "api"]) is RolloutAbortCommand)
        #expect(try ControllerCommand.parseAsRoot(["rollout", "resume", "--service", "api"]) is RolloutResumeCommand)
    }

    /// Hostile command lines and environments, each with the message it must give.
    static let hostile: [(arguments: [String], environment: [String: String], message: String)] = [
        (["rollout", "pause"], [:], "Missing expected argument '--service <service>'"),
        (["rollout", "status", "--service", "Web!"], [:], "--service Web! is not a service name"),
        (["rollout", "status"], [:], "give the controller's URL with --controller URL or FERRY_CONTROLLER_URL"),
        (["rollout", "status", "--controller", "ftp://x"], ["FERRY_TOKEN": "t"], "--controller ftp://x is not an http:// or https:// URL"),
        (
            ["rollout", "status"], ["FERRY_CONTROLLER_URL": "http://127.0.0.1:9"],
            "give an API token with --token-file FILE, --token TOKEN, FERRY_TOKEN_FILE or FERRY_TOKEN"
        ),
        (["rollout", "status"], ["FERRY_CONTROLLER_URL": "http://127.0.0.1:9", "FERRY_TOKEN": ""], "give an API token"),
        (
            ["rollout", "status"], ["FERRY_CONTROLLER_URL": "http://127.0.0.1:9", "FERRY_TOKEN": " \r\n"],
            "the API token given with FERRY_TOKEN is empty"
        ),
        (
            ["rollout", "status", "--token", ""], ["FERRY_CONTROLLER_URL": "http://127.0.0.1:9", "FERRY_TOKEN": "t"],
            "the API token given with --token is empty"
        ),
        (["rollout", "status", "--token", "\t"], ["FERRY_CONTROLLER_URL": "http://127.0.0.1:9"], "the API token given with --token is empty"),
    ]

    @Test(arguments: hostile)
    func refusesBadInvocations(arguments: [String], environment: [String: String], message: String) {
        do {
            let command = try ControllerCommand.parseAsRoot(arguments)
            guard let status = command as? RolloutStatusCommand else {
                Issue.record("\(arguments) parsed as \(type(of: command))")
                return
            }
            _ = try status.connection.client(environment: environment)
            Issue.record("\(arguments) was accepted")
        } catch {
            #expect(ControllerCommand.message(for: error).contains(message), "\(ControllerCommand.message(for: error))")
        }
    }
}
