import ArgumentParser
import Foundation
import Shared

/// `ferry-controller rollout status|pause|resume|abort`: watch and steer staged rollouts.
struct RolloutCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rollout",
        abstract: "Show, wait for, pause, resume or abort the rollout of a service.",
        discussion: """
            A release published with --strategy one-at-a-time, waves:P1,...,100 or canary:N reaches the service's \
            agents wave by wave; a wave advances once every agent in it reported the new serial healthy for the \
            wave-stable time, and more failed or rolled-back agents than --max-failures halt it. Agents not reached \
            keep the previous (stable) release. Abort cannot move agents that already installed the new serial back \
            (agents never go to a lower serial): publish the previous version again with `ferry-controller rollback`.
            """,
        subcommands: [
            RolloutStatusCommand.self, RolloutWaitCommand.self, RolloutPauseCommand.self, RolloutResumeCommand.self, RolloutAbortCommand.self,
        ]
    )
}

/// `--controller`, `--token` (and their environment twins) and `--json`, for the rollout commands.
struct RolloutConnectionOptions: ParsableArguments {
    @OptionGroup var controller: ControllerOptions

    @Flag(name: .long, help: "Print the controller's JSON answer instead of text.")
    var json = false

    /// A client for the controller the flags or the environment name.
    func client(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> OperatorClient {
        try controller.client(environment: environment)
    }
}

/// `ferry-controller rollout status [--service S]`.
struct RolloutStatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show the latest rollout of a service (or of every service): state, wave, counts, agents."
    )

    @OptionGroup var connection: RolloutConnectionOptions

    @Option(name: .long, help: "The service (default: every service).")
    var service: String?

    func validate() throws {
        if let service, !Release.isValidServiceName(service) { throw ValidationError("--service \(service) is not a service name") }
    }

    func run() async throws {
        let path = service.map { "/v1/rollouts?service=\($0)&limit=1" } ?? "/v1/rollouts"
        let answer = try await connection.client().getJSON(path)
        if connection.json {
            Console.print(String(decoding: answer.encoded(), as: UTF8.self))
            return
        }
        guard case .object(let fields) = answer, case .array(let rollouts)? = fields["rollouts"] else {
            throw CLIError("the controller's answer has no rollouts list")
        }
        guard !rollouts.isEmpty else {
            Console.print(service.map { "service \($0) has no rollout" } ?? "no rollouts")
            return
        }
        Console.print(rollouts.map(RolloutText.describe(_:)).joined(separator: "\n\n"))
    }
}

/// `ferry-controller rollout pause --service S`.
struct RolloutPauseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "pause", abstract: "Stop advancing a rolling rollout.")
    @OptionGroup var connection: RolloutConnectionOptions
    @Option(name: .long, help: "The service.") var service: String
    @Option(name: .long, help: RolloutText.serialHelp) var serial: Int64?
    func run() async throws { try await RolloutText.act(.pause, service: service, serial: serial, connection: connection) }
}

/// `ferry-controller rollout resume --service S`.
struct RolloutResumeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "resume", abstract: "Continue a paused rollout.")
    @OptionGroup var connection: RolloutConnectionOptions
    @Option(name: .long, help: "The service.") var service: String
    @Option(name: .long, help: RolloutText.serialHelp) var serial: Int64?
    func run() async throws { try await RolloutText.act(.resume, service: service, serial: serial, connection: connection) }
}

/// `ferry-controller rollout abort --service S`.
struct RolloutAbortCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "abort",
        abstract: "Give up a rollout: agents that did not install the new serial stay on the previous one."
    )
    @OptionGroup var connection: RolloutConnectionOptions
    @Option(name: .long, help: "The service.") var service: String
    @Option(name: .long, help: RolloutText.serialHelp) var serial: Int64?
    func run() async throws { try await RolloutText.act(.abort, service: service, serial: serial, connection: connection) }
}

/// Text rendering of rollout documents for the terminal.
enum RolloutText {
    static let serialHelp = ArgumentHelp(
        "Act only on the rollout of this serial (publish prints it); without it, on the latest, whichever that is when the request arrives (while a newer release awaits approval, the latest that started: name the one awaiting approval by its serial)."
    )

    static func act(_ action: RolloutAction, service: String, serial: Int64?, connection: RolloutConnectionOptions) async throws {
        guard Release.isValidServiceName(service) else { throw ValidationError("--service \(service) is not a service name") }
        if let serial, !(1...Release.maximumSerial).contains(serial) {
            throw ValidationError("--serial must be between 1 and \(Release.maximumSerial)")
        }
        let query = serial.map { "?serial=\($0)" } ?? ""
        let answer = try await connection.client().postJSON(
            "/v1/services/\(service)/rollout/\(action.rawValue)\(query)",
            body: Data(),
            expecting: [200]
        )
        // A controller older than `?serial=` ignores it and acts on the latest rollout: say so, loudly.
        if let serial, case .object(let fields) = answer, case .integer(let answered)? = fields["serial"], answered != serial {
            throw CLIError(
                "the controller acted on the rollout of serial \(answered), not \(serial): it does not know --serial (upgrade it); check that rollout"
            )
        }
        Console.print(connection.json ? String(decoding: answer.encoded(), as: UTF8.self) : describe(answer))
    }

    /// A few lines: headline, counts, reason, then one line per wave with its agents.
    static func describe(_ rollout: JSONValue) -> String {
        func string(_ key: String, in value: JSONValue = rollout) -> String {
            guard case .object(let fields) = value else { return "" }
            return FleetDocument.text(fields[key])
        }
        func array(_ key: String, in value: JSONValue = rollout) -> [JSONValue] {
            guard case .object(let fields) = value, case .array(let items)? = fields[key] else { return [] }
            return items
        }
        var counts = JSONValue.object([:])
        if case .object(let fields) = rollout, let value = fields["counts"] { counts = value }
        var lines = [
            "\(string("service")): serial \(string("serial")) (\(string("version"))) \(string("state")), wave \(string("wave"))/"
                + "\(string("waveCount")), strategy \(string("strategy")), stable serial \(string("stableSerial"))",
            "  agents \(string("agents", in: counts)): \(string("updated", in: counts)) updated (\(string("healthy", in: counts)) healthy), "
                + "\(string("failed", in: counts)) failed, \(string("pending", in: counts)) pending",
        ]
        let reason = string("reason")
        if !reason.isEmpty && reason != "-" { lines.append("  \(reason)") }
        for wave in array("waves") {
            let agents = array("agents", in: wave).map { agent in
                let name = string("name", in: agent) == "-" ? string("id", in: agent) : string("name", in: agent)
                return "\(name) \(string("progress", in: agent)) (serial \(string("serial", in: agent)))"
            }
            let reached = string("reached", in: wave) == "yes" ? "reached" : "not reached"
            let unlisted = RolloutWaitVerdict.integer(wave.object?["unlistedAgents"])
            lines.append(
                "  wave \(string("wave", in: wave)) [\(reached)]: " + agents.joined(separator: ", ")
                    + (unlisted > 0 ? ", and \(unlisted) more agent(s)" : "")
            )
        }
        for failure in array("failures") {
            let name = string("agentName", in: failure) == "-" ? string("agentId", in: failure) : string("agentName", in: failure)
            lines.append("  failed: \(name) (\(string("kind", in: failure))): \(string("reason", in: failure))")
        }
        let unlistedFailures = RolloutWaitVerdict.integer(rollout.object?["unlistedFailures"])
        if unlistedFailures > 0 {
            lines.append(
                "  and \(unlistedFailures) more failed agent(s), not listed here: GET /v1/rollouts/\(string("service"))/\(string("serial"))"
                    + " lists every agent of the rollout with its progress (failed ones with their failure)"
            )
        }
        return lines.joined(separator: "\n")
    }
}
