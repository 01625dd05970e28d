import ArgumentParser
import Foundation
import Shared

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// `ferry-controller rollout status|pause|resume|abort`: watch and steer staged rollouts.
struct RolloutCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rollout",
        abstract: "Show, pause, resume or abort the staged rollout of a service.",
        discussion: """
            A release published with --strategy one-at-a-time, waves:P1,...,100 or canary:N reaches the service's \
            agents wave by wave; a wave advances once every agent in it reported the new serial healthy for the \
            wave-stable time, and more failed or rolled-back agents than --max-failures halt it. Agents not reached \
            keep the previous (stable) release. Abort cannot move agents that already installed the new serial back \
            (agents never go to a lower serial): publish the previous version again with `ferry-controller rollback`.
            """,
        subcommands: [RolloutStatusCommand.self, RolloutPauseCommand.self, RolloutResumeCommand.self, RolloutAbortCommand.self]
    )
}

/// `--controller`, `--token` (and their environment twins) and `--json`, for the rollout commands.
struct RolloutConnectionOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("The controller's URL (or FERRY_CONTROLLER_URL).", valueName: "URL"))
    var controller: String?

    @Option(name: .long, help: ArgumentHelp("An API token (or FERRY_TOKEN); operator for actions, viewer is enough for status.", valueName: "TOKEN"))
    var token: String?

    @Flag(name: .long, help: "Print the controller's JSON answer instead of text.")
    var json = false

    /// The controller URL and token from the flags or the environment.
    func endpoint(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> RolloutEndpoint {
        guard let url = controller ?? environment["FERRY_CONTROLLER_URL"].flatMap({ $0.isEmpty ? nil : $0 }) else {
            throw ValidationError("give the controller's URL with --controller URL or FERRY_CONTROLLER_URL")
        }
        guard url.hasPrefix("http://") || url.hasPrefix("https://"), URL(string: url)?.host != nil else {
            throw ValidationError("--controller \(url) is not an http:// or https:// URL")
        }
        guard let token = token ?? environment["FERRY_TOKEN"].flatMap({ $0.isEmpty ? nil : $0 }) else {
            throw ValidationError("give an API token with --token TOKEN or FERRY_TOKEN")
        }
        return RolloutEndpoint(
            baseURL: url.hasSuffix("/") ? String(url.dropLast()) : url,
            token: token.trimmingCharacters(in: .whitespacesAndNewlines)
        )
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
        let endpoint = try connection.endpoint()
        let path = service.map { "/v1/rollouts?service=\($0)&limit=1" } ?? "/v1/rollouts"
        let answer = try await endpoint.send("GET", path)
        if connection.json {
            print(String(decoding: answer.encoded(), as: UTF8.self))
            return
        }
        guard case .object(let fields) = answer, case .array(let rollouts)? = fields["rollouts"] else {
            throw CLIError("the controller's answer has no rollouts list")
        }
        guard !rollouts.isEmpty else {
            print(service.map { "service \($0) has no rollout" } ?? "no rollouts")
            return
        }
        print(rollouts.map(RolloutText.describe(_:)).joined(separator: "\n\n"))
    }
}

/// `ferry-controller rollout pause --service S`.
struct RolloutPauseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "pause", abstract: "Stop advancing a rolling rollout.")
    @OptionGroup var connection: RolloutConnectionOptions
    @Option(name: .long, help: "The service.") var service: String
    func run() async throws { try await RolloutText.act(.pause, service: service, connection: connection) }
}

/// `ferry-controller rollout resume --service S`.
struct RolloutResumeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "resume", abstract: "Continue a paused rollout.")
    @OptionGroup var connection: RolloutConnectionOptions
    @Option(name: .long, help: "The service.") var service: String
    func run() async throws { try await RolloutText.act(.resume, service: service, connection: connection) }
}

/// `ferry-controller rollout abort --service S`.
struct RolloutAbortCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "abort",
        abstract: "Give up a rollout: agents that did not install the new serial stay on the previous one."
    )
    @OptionGroup var connection: RolloutConnectionOptions
    @Option(name: .long, help: "The service.") var service: String
    func run() async throws { try await RolloutText.act(.abort, service: service, connection: connection) }
}

/// The controller's address and token for the rollout commands, and the one HTTP call they make.
struct RolloutEndpoint: Sendable {
    let baseURL: String
    let token: String

    /// `method path`; the JSON answer of a 2xx, otherwise a `CLIError` with the controller's error code and message.
    func send(_ method: String, _ path: String) async throws -> JSONValue {
        guard let url = URL(string: baseURL + path) else { throw CLIError("\(baseURL + path) is not a valid URL") }
        var request = URLRequest(url: url, timeoutInterval: 60)
        request.httpMethod = method
        request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization")
        request.setValue("ferry-controller/\(FerryVersion.current)", forHTTPHeaderField: "User-Agent")
        let session = URLSession(configuration: .ephemeral)
        defer { session.finishTasksAndInvalidate() }
        let data: Data
        let response: URLResponse
        do {
            (data, response) = try await session.data(for: request)
        } catch {
            throw CLIError("\(method) \(baseURL + path): \(error.localizedDescription)")
        }
        let status = (response as? HTTPURLResponse)?.statusCode ?? 0
        let body = try? JSONValue.parse(Array(data))
        guard (200..<300).contains(status) else {
            if case .object(let fields)? = body, case .string(let code)? = fields["error"], case .string(let message)? = fields["message"] {
                throw CLIError("the controller refused (HTTP \(status) \(code)): \(message)")
            }
            throw CLIError("\(method) \(baseURL + path): HTTP \(status)")
        }
        guard let body else { throw CLIError("\(method) \(baseURL + path): the answer is not JSON") }
        return body
    }
}

/// Text rendering of rollout documents for the terminal.
enum RolloutText {
    static func act(_ action: RolloutAction, service: String, connection: RolloutConnectionOptions) async throws {
        guard Release.isValidServiceName(service) else { throw ValidationError("--service \(service) is not a service name") }
        let answer = try await connection.endpoint().send("POST", "/v1/services/\(service)/rollout/\(action.rawValue)")
        print(connection.json ? String(decoding: answer.encoded(), as: UTF8.self) : describe(answer))
    }

    /// A few lines: headline, counts, reason, then one line per wave with its agents.
    static func describe(_ rollout: JSONValue) -> String {
        func string(_ key: String, in value: JSONValue = rollout) -> String {
            guard case .object(let fields) = value else { return "" }
            switch fields[key] {
            case .string(let text)?: return text
            case .integer(let number)?: return String(number)
            case .bool(let flag)?: return flag ? "yes" : "no"
            default: return "-"
            }
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
            lines.append("  wave \(string("wave", in: wave)) [\(reached)]: " + agents.joined(separator: ", "))
        }
        for failure in array("failures") {
            let name = string("agentName", in: failure) == "-" ? string("agentId", in: failure) : string("agentName", in: failure)
            lines.append("  failed: \(name) (\(string("kind", in: failure))): \(string("reason", in: failure))")
        }
        return lines.joined(separator: "\n")
    }
}
