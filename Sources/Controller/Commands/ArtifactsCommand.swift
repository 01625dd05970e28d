import ArgumentParser
import Foundation
import Shared

/// `ferry-controller artifacts`: the controller's stored artifacts (pruning old ones).
struct ArtifactsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "artifacts",
        abstract: "Manage the artifacts the controller stores.",
        subcommands: [ArtifactsPruneCommand.self]
    )
}

/// `ferry-controller artifacts prune [--keep N] [--min-age DURATION] [--dry-run] [--json]`: `POST /v1/artifacts/prune`.
struct ArtifactsPruneCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prune",
        abstract: "Remove stored artifacts no recent or running release needs.",
        discussion: """
            Kept: the artifacts of the newest --keep releases of every service (awaiting approval or not), of every \
            release an agent runs or a rollout tells agents to run, and any artifact stored less than --min-age ago \
            (an upload whose publish has not come yet). Every other artifact is removed from this controller's data \
            directory and, with a shared PostgreSQL database, from the database; other controllers' own copies stay \
            until a prune through each (docs/ha.md). Publishing a release whose artifact was removed uploads it again \
            (`publish`); re-signing one (`rollback`) is refused until it is uploaded. Needs an operator token.
            """
    )

    @OptionGroup var controller: ControllerOptions

    @Option(name: .long, help: "Keep the artifacts of this many newest releases of each service (1 to 1000).")
    var keep: Int = 5

    @Option(
        name: .customLong("min-age"),
        help: "Keep artifacts stored more recently than this, like 24h, 30m, 90s or 0 (a bare number is seconds; at most 8760h)."
    )
    var minAge: String = "24h"

    @Flag(name: .customLong("dry-run"), help: "Print what would be removed without removing anything.")
    var dryRun = false

    @Flag(name: .long, help: "Print the controller's answer as JSON (see docs/controller.md for the fields).")
    var json = false

    func validate() throws {
        let range = ArtifactStore.RetentionPolicy.keepReleasesRange
        guard range.contains(keep) else { throw ValidationError("--keep must be between \(range.lowerBound) and \(range.upperBound), got \(keep)") }
        _ = try minimumAgeSeconds()
    }

    /// `--min-age` in whole seconds.
    func minimumAgeSeconds() throws -> Int64 {
        let range = ArtifactStore.RetentionPolicy.minimumAgeSecondsRange
        guard let milliseconds = CommandLineDuration.milliseconds(minAge), milliseconds % 1000 == 0,
            range.contains(milliseconds / 1000)
        else {
            throw ValidationError("--min-age \(minAge) must be whole seconds like 24h, 30m, 90s or 0, at most 8760h (365 days)")
        }
        return milliseconds / 1000
    }

    func run() async throws {
        let request = JSONValue.object([
            "keepReleases": .integer(Int64(keep)), "minAgeSeconds": .integer(try minimumAgeSeconds()), "dryRun": .bool(dryRun),
        ])
        let answer = try await controller.client().postJSON("/v1/artifacts/prune", body: Data(request.encoded()), expecting: [200])
        if json {
            Console.print(String(decoding: answer.encoded(), as: UTF8.self))
            return
        }
        for line in Self.lines(answer) { Console.print(line) }
    }

    /// The human-readable report of a prune answer: one line per artifact, then the total.
    static func lines(_ answer: JSONValue) -> [String] {
        let fields = answer.object ?? [:]
        let dryRun = fields["dryRun"] == .bool(true)
        let removed = FleetDocument.array(fields["removed"]).compactMap(\.object)
        var lines = removed.map { artifact in
            "\(dryRun ? "would remove" : "removed") \(FleetDocument.text(artifact["sha256"])) \(FleetDocument.size(artifact["size"]))"
        }
        let kept = FleetDocument.text(fields["kept"])
        let freed = FleetDocument.size(fields["bytesFreed"])
        lines.append(
            dryRun
                ? "would remove \(removed.count) artifact(s), \(freed); \(kept) kept (dry run: nothing removed)"
                : "removed \(removed.count) artifact(s), \(freed) freed; \(kept) kept"
        )
        return lines
    }
}
