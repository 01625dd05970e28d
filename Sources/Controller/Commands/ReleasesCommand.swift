import ArgumentParser
import Foundation
import Shared

/// `ferry-controller releases --service S [--limit N] [--json]`: every release of a service and how its rollout went.
struct ReleasesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "releases",
        abstract: "List the releases of a service: serial, version, artifact, who published and signed it, when, rollout outcome.",
        discussion: """
            Newest first. WHO is the name of the operator token that published the release; KEYS the ids of the keys \
            that signed it (the controller verified them when it was published). ROLLOUT is the strategy it was \
            published with and where its rollout stands: completed, rolling, paused, halted, aborted or superseded \
            (none for releases stored before rollouts existed). Needs an operator token.
            """
    )

    @OptionGroup var controller: ControllerOptions

    @Option(name: .long, help: "The service.")
    var service: String

    @Option(name: .long, help: "Most releases listed (1 to 500).")
    var limit: Int = 50

    @Flag(name: .long, help: "Print {service, releases: [...]} as JSON (see docs/controller.md for the fields).")
    var json = false

    func validate() throws {
        guard Release.isValidServiceName(service) else { throw ValidationError("--service \(service) is not a service name") }
        guard (1...500).contains(limit) else { throw ValidationError("--limit must be between 1 and 500") }
    }

    func run() async throws {
        let answer = try await controller.client().getJSON("/v1/services/\(service)/releases?limit=\(limit)&envelopes=false")
        let releases = FleetDocument.array(answer.object?["releases"]).compactMap(\.object)
        if json {
            let document = JSONValue.object(["service": .string(service), "releases": .array(releases.map { .object(Self.entry($0)) })])
            Console.print(String(decoding: document.encoded(), as: UTF8.self))
            return
        }
        guard !releases.isEmpty else {
            Console.print("service \(service) has no releases")
            return
        }
        let text = FleetDocument.text
        let rows = releases.map { release -> [String] in
            let artifact = release["artifact"]?.object ?? [:]
            let rollout = release["rollout"]?.object
            let keys = FleetDocument.array(release["keyIds"]).map { String(text($0).prefix(12)) }.joined(separator: ",")
            return [
                text(release["serial"]), text(release["version"]), String(text(artifact["sha256"]).prefix(12)), FleetDocument.size(artifact["size"]),
                text(release["publishedBy"]), keys, text(release["createdAt"]),
                rollout.map { "\(text($0["strategy"])) \(text($0["state"]))" } ?? "none",
            ]
        }
        Console.print(TextTable.render(headers: ["SERIAL", "VERSION", "ARTIFACT", "SIZE", "WHO", "KEYS", "PUBLISHED", "ROLLOUT"], rows: rows))
        for release in releases {
            guard let reason = release["rollout"]?.object?["reason"], !text(reason).isEmpty, reason != .null else { continue }
            Console.print("serial \(text(release["serial"])): \(text(reason))")
        }
    }

    /// The stable fields of one listed release (the listing may carry more).
    static func entry(_ release: [String: JSONValue]) -> [String: JSONValue] {
        var entry: [String: JSONValue] = [:]
        for key in ["serial", "version", "artifact", "publishedBy", "keyIds", "createdAt", "rollout"] { entry[key] = release[key] ?? .null }
        return entry
    }
}
