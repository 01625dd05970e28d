import ArgumentParser
import Foundation
import Shared

/// `ferry-controller plan`: what publishing would change on each agent, without publishing anything.
struct PlanCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Show, per agent, what publishing a release would change, without publishing anything.",
        discussion: """
            Takes the same release flags as `publish`, composes the release exactly as `publish` would (same \
            validation, same warnings), and compares it with the release each agent of the service runs now: version, \
            artifact size, apps added or removed, PM2 options changed, instance count, and environment variables \
            added, removed or changed — names only, never values. Nothing is uploaded, signed or published.
            """
    )

    @OptionGroup var controller: ControllerOptions
    @OptionGroup var release: ReleaseOptions

    @Flag(name: .long, help: "Print {service, serial, version, agents: [{name, serial, diff}]} as JSON.")
    var json = false

    func run() async throws {
        let client = try controller.client()
        var input = try await release.composeInput()
        let publisher = ReleasePublisher(client: client)
        input.serial = try await publisher.nextSerial(of: input.service)
        let draft = try ReleaseComposer.composePrintingWarnings(input)
        let candidate = draft.release
        if !json {
            Console.print("plan for service \(candidate.service): serial \(candidate.serial), version \(candidate.version) (nothing is published)")
        }
        try await Self.printPlan(for: candidate, client: client, json: json)
    }

    /// Prints, per agent of the candidate's service, what installing `candidate` would change compared with the release
    /// the agent runs now (env names only, never values), as text or (`json`) as one JSON document. Shared with
    /// `approve`.
    static func printPlan(for candidate: Release, client: OperatorClient, json: Bool = false) async throws {
        let publisher = ReleasePublisher(client: client)
        var bySerial: [Int64: Release] = [:]
        for entry in try await publisher.releases(of: candidate.service) {
            if let release = try? RollbackCommand.release(from: entry).release { bySerial[release.serial] = release }
        }
        let fleet = try await FleetDocument.fetchAll(client, query: "service=\(FleetQuery.escape(candidate.service))")
        var agents: [(name: String, serial: Int64?)] = []
        for agent in FleetDocument.agents(fleet) {
            for case .object(let status) in FleetDocument.array(agent["services"]) where FleetDocument.text(status["service"]) == candidate.service {
                var serial: Int64?
                if case .integer(let n)? = status["serial"] { serial = n }
                agents.append((FleetDocument.text(agent["name"]), serial))
            }
        }

        if json {
            let entries: [JSONValue] = agents.sorted(by: { $0.name < $1.name }).map { agent in
                let current = agent.serial.flatMap { bySerial[$0] }
                return .object([
                    "name": .string(agent.name), "serial": agent.serial.map { .integer($0) } ?? .null,
                    "version": current.map { .string($0.version) } ?? .null,
                    "diff": ReleaseDiff(from: current, to: candidate).json,
                ])
            }
            let document = JSONValue.object([
                "service": .string(candidate.service), "serial": .integer(candidate.serial), "version": .string(candidate.version),
                "agents": .array(entries), "firstInstall": ReleaseDiff(from: nil, to: candidate).json,
            ])
            Console.print(String(decoding: document.encoded(), as: UTF8.self))
            return
        }
        if agents.isEmpty {
            Console.print("no agent runs service \(candidate.service) yet; the first agent to enroll gets:")
            for line in ReleaseDiff(from: nil, to: candidate).lines() { Console.print(line) }
            return
        }
        for agent in agents.sorted(by: { $0.name < $1.name }) {
            let current = agent.serial.flatMap { bySerial[$0] }
            let header =
                agent.serial.map { "\(agent.name) (now serial \($0)\(current.map { ", version \($0.version)" } ?? ""))" }
                ?? "\(agent.name) (nothing installed yet)"
            Console.print("")
            Console.print(header + ":")
            if agent.serial != nil, current == nil {
                Console.print("  the release this agent runs is no longer listed by the controller; compared with nothing")
            }
            for line in ReleaseDiff(from: current, to: candidate).lines() { Console.print(line) }
        }
    }
}
