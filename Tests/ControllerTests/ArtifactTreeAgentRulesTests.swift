import Foundation
import Shared
import TestSupport
import Testing

@testable import Controller

/// `publish` and `plan` refuse, before anything is uploaded, an artifact every agent would refuse to extract
/// (`ArchiveEntryRules` and the agent's limits), naming each entry and why.
@Suite("publish and plan: artifacts agents refuse")
struct ArtifactTreeAgentRulesTests {
    typealias Entry = ArchiveBuilder.Entry

    /// An archive no agent extracts, the one entry the error must name (`nil`: the archive as a whole) and part of
    /// the reason it must give.
    struct Hostile: Sendable, CustomTestStringConvertible {
        var name: String
        var configuration = ArtifactTree.Configuration()
        var entries: [Entry]
        var refused: String?
        var reason: String

        var testDescription: String { name }
    }

    static let benign: [Entry] = [.directory("lib"), .file("lib/app.js", "console.log(1)"), .file("package.json", "{}")]

    static let hostileArtifacts: [Hostile] = [
        Hostile(
            name: "symbolic link to an absolute path (a virtualenv's python)",
            entries: benign + [.directory("venv/bin"), .symlink("venv/bin/python", to: "/usr/bin/python3")],
            refused: "venv/bin/python",
            reason: "symbolic link to \"/usr/bin/python3\": absolute symbolic link target"
        ),
        Hostile(
            name: "symbolic link climbing out of the tree",
            entries: benign + [.symlink("lib/escape", to: "../../outside")],
            refused: "lib/escape",
            reason: "symbolic link leaves the extracted tree"
        ),
        Hostile(
            name: "symbolic link climbing after a name",
            entries: benign + [.symlink("lib/c", to: "../lib/../lib/app.js")],
            refused: "lib/c",
            reason: "\"..\" after a name in a symbolic link target"
        ),
        Hostile(
            name: "symbolic link chain (a -> ., b -> a/..)",
            entries: benign + [.symlink("a", to: "."), .symlink("b", to: "a/..")],
            refused: "b",
            reason: "\"..\" after a name"
        ),
        Hostile(
            name: "absolute entry name",
            entries: benign + [.file("/etc/cron.d/ferry")],
            refused: "/etc/cron.d/ferry",
            reason: "unsafe path (absolute path)"
        ),
        Hostile(
            name: "dot-dot entry name",
            entries: benign + [.file("../../current")],
            refused: "../../current",
            reason: "unsafe path (\"..\" component)"
        ),
        Hostile(
            name: "dot-dot in the middle of an entry name",
            entries: benign + [.file("lib/../../../outside/evil.txt")],
            refused: "lib/../../../outside/evil.txt",
            reason: "\"..\" component"
        ),
        Hostile(
            name: "entry name longer than an agent takes",
            entries: benign + [.file(String(repeating: "n", count: ArchiveEntryRules.maximumPathBytes + 1))],
            refused: String(repeating: "n", count: ArchiveEntryRules.maximumPathBytes + 1),
            reason: "path longer than \(ArchiveEntryRules.maximumPathBytes) bytes"
        ),
        Hostile(
            name: "write through an in-tree symbolic link",
            entries: benign + [.symlink("lib/up", to: ".."), .file("lib/up/evil.txt")],
            refused: "lib/up/evil.txt",
            reason: "passes through the symbolic link \"lib/up\""
        ),
        Hostile(
            name: "entry under a file",
            entries: benign + [.file("package.json/x")],
            refused: "package.json/x",
            reason: "\"package.json\" is not a directory"
        ),
        Hostile(
            name: "hard link climbing out of the tree",
            entries: benign + [.hardlink("keep", to: "../../outside/keep.txt")],
            refused: "keep",
            reason: "hard link to \"../../outside/keep.txt\": \"..\" component"
        ),
        Hostile(
            name: "hard link to an absolute path",
            entries: benign + [.hardlink("passwd", to: "/etc/passwd")],
            refused: "passwd",
            reason: "absolute path"
        ),
        Hostile(
            name: "hard link to a symbolic link",
            entries: benign + [.symlink("s", to: "lib/app.js"), .hardlink("h", to: "s")],
            refused: "h",
            reason: "a hard link must name a regular file extracted before it"
        ),
        Hostile(name: "FIFO", entries: benign + [.fifo("pipe")], refused: "pipe", reason: "a FIFO"),
        Hostile(
            name: "character device",
            entries: benign + [.characterDevice("dev/null")],
            refused: "dev/null",
            reason: "a character device"
        ),
        Hostile(name: "block device", entries: benign + [.blockDevice("sda")], refused: "sda", reason: "a block device"),
        Hostile(
            name: "more entries than agents take",
            configuration: .init(maxEntries: 5),
            entries: benign + (0..<5).map { Entry.file("f\($0)") },
            refused: nil,
            reason: "more than 5 entries"
        ),
        Hostile(
            // Each entry's missing parents are directories the agent makes, and counts.
            name: "directory bomb (one deep path)",
            configuration: .init(maxEntries: 10),
            entries: [.file(Array(repeating: "a", count: 20).joined(separator: "/") + "/f")],
            refused: nil,
            reason: "more than 10 entries"
        ),
        Hostile(
            name: "one entry larger than agents take",
            configuration: .init(maxTotalBytes: 1000),
            entries: benign + [.file("big.bin", String(repeating: "x", count: 5000))],
            refused: "big.bin",
            reason: "more than 1000 bytes"
        ),
        Hostile(
            name: "entries adding up to more than agents take",
            configuration: .init(maxTotalBytes: 1000),
            entries: (0..<4).map { Entry.file("part\($0)", String(repeating: "x", count: 400)) },
            refused: "part2",
            reason: "more than 1000 bytes"
        ),
        Hostile(name: "no entries", entries: [], refused: nil, reason: "the archive has no entries"),
        Hostile(name: "nothing but the root", entries: [.directory("./")], refused: nil, reason: "the archive has no entries"),
    ]

    @Test(arguments: hostileArtifacts)
    func refusesWhatAgentsRefuse(_ hostile: Hostile) throws {
        try TestPaths.withTemporaryDirectorySync("ferry-artifact-rules") { directory in
            let path = directory.appendingPathComponent("artifact.tar.gz").path
            try ArchiveBuilder.write(hostile.entries, format: .tarGzip, to: path)
            let (refusals, count, message) = try Self.refusal(path, configuration: hostile.configuration)
            #expect(count == 1)
            #expect(refusals.map(\.entry) == [hostile.refused])
            #expect(refusals.first?.reason.contains(hostile.reason) == true, "\(refusals)")
            #expect(message.hasPrefix("\(path): every agent would refuse to extract this artifact"))
            if let refused = hostile.refused { #expect(message.contains("\n  \(refused): ")) }
        }
    }

    @Test func everyRefusedEntryIsListedInOneError() throws {
        try TestPaths.withTemporaryDirectorySync("ferry-artifact-rules") { directory in
            let path = directory.appendingPathComponent("artifact.tar.gz").path
            try ArchiveBuilder.write(
                Self.benign + [
                    .directory("venv/bin"), .symlink("venv/bin/python", to: "/usr/bin/python3"), .fifo("run/pipe"),
                    .file("../escape"), .hardlink("keep", to: "../keep"),
                ],
                format: .tarGzip,
                to: path
            )
            let (refusals, count, message) = try Self.refusal(path)
            #expect(count == 4)
            #expect(refusals.map(\.entry) == ["venv/bin/python", "run/pipe", "../escape", "keep"])
            let line = "venv/bin/python: symbolic link to \"/usr/bin/python3\": absolute symbolic link target"
            #expect(message.contains("\n  \(line) — agents refuse links that could leave the release directory\n"))
        }
    }

    /// Past the byte limit the reading stops, as the agent's does: skipping the rest of a compressed archive is
    /// decompressing it, and a bomb of terabytes was read to its end before it was refused.
    @Test func theReadingStopsAtTheByteLimit() throws {
        try TestPaths.withTemporaryDirectorySync("ferry-artifact-rules") { directory in
            let path = directory.appendingPathComponent("artifact.tar.gz").path
            try ArchiveBuilder.write(
                Self.benign + [.file("big.bin", String(repeating: "x", count: 5000)), .fifo("after")],
                format: .tarGzip,
                to: path
            )
            let (refusals, count, _) = try Self.refusal(path, configuration: .init(maxTotalBytes: 1000))
            #expect(refusals.map(\.entry) == ["big.bin"])
            #expect(count == 1, "nothing after the limit is read")
        }
    }

    @Test func aLongListIsCutWithACount() throws {
        try TestPaths.withTemporaryDirectorySync("ferry-artifact-rules") { directory in
            let path = directory.appendingPathComponent("artifact.tar.gz").path
            try ArchiveBuilder.write(Self.benign + (0..<25).map { Entry.fifo("pipe\($0)") }, format: .tarGzip, to: path)
            let (refusals, count, message) = try Self.refusal(path)
            #expect(count == 25)
            #expect(refusals.count == ArtifactTree.refusalListLimit)
            #expect(message.contains("(25 problems)"))
            #expect(message.hasSuffix("\n  and 5 more"))
        }
    }

    @Test func entryNamesCannotSteerTheTerminal() throws {
        try TestPaths.withTemporaryDirectorySync("ferry-artifact-rules") { directory in
            let path = directory.appendingPathComponent("artifact.tar.gz").path
            try ArchiveBuilder.write(Self.benign + [.fifo("evil\u{1B}[2J\nok: fine")], format: .tarGzip, to: path)
            let (_, _, message) = try Self.refusal(path)
            #expect(!message.contains("\u{1B}"))
            #expect(message.contains("evil\\u001b[2J\\u000aok: fine: a FIFO"))
        }
    }

    /// A reason that quotes a path of the archive (the link a later entry passes through) escapes it too.
    @Test func quotedPathsCannotSteerTheTerminal() throws {
        try TestPaths.withTemporaryDirectorySync("ferry-artifact-rules") { directory in
            let path = directory.appendingPathComponent("artifact.tar.gz").path
            try ArchiveBuilder.write(Self.benign + [.directory("real"), .symlink("a\nb", to: "real"), .file("a\nb/x")], format: .tarGzip, to: path)
            let (_, _, message) = try Self.refusal(path)
            #expect(!message.contains("a\nb"), "\(message)")
            #expect(message.contains("a\\u000ab/x: unsafe path (passes through the symbolic link \"a\\u000ab\")"), "\(message)")
        }
    }

    /// npm's and pnpm's links, a link to a link, directories listed after their contents at the entry limit: agents
    /// extract all of it, so it is read, links and all.
    @Test func aNormalTreeWithInTreeLinksIsAccepted() throws {
        try TestPaths.withTemporaryDirectorySync("ferry-artifact-rules") { directory in
            let path = directory.appendingPathComponent("artifact.tar.gz").path
            try ArchiveBuilder.write(
                [
                    .directory("./"), .file("node_modules/tool/bin/tool.js", "#!/usr/bin/env node\n", mode: 0o755),
                    .symlink("node_modules/.bin/tool", to: "../tool/bin/tool.js"), .symlink("current", to: "./node_modules"),
                    .directory("node_modules/tool/bin"), .directory("node_modules"), .hardlink("tool.js", to: "node_modules/tool/bin/tool.js"),
                ],
                format: .tarGzip,
                to: path
            )
            // tool.js, bin/tool.js, .bin/tool, current and the four directories the paths make.
            let tree = try ArtifactTree(archiveAt: path, configuration: .init(maxEntries: 8))
            #expect(tree.entries["node_modules/.bin/tool"]?.kind == .symlink(target: "../tool/bin/tool.js"))
            let resolved = try #require(tree.resolve("current/.bin/tool"))
            #expect(resolved.path == "node_modules/tool/bin/tool.js")
            #expect(resolved.entry.head == Array("#!/usr/bin/env node\n".utf8))
            #expect(resolved.entry.isExecutable)
            #expect(tree.entries["tool.js"] == resolved.entry)

            // One entry fewer than that is refused, as by the agent.
            #expect(throws: ArtifactTree.ReadError.self) { try ArtifactTree(archiveAt: path, configuration: .init(maxEntries: 7)) }
        }
    }

    /// `plan` (and `publish`, through the same `ReleaseOptions.composeInput`) stops on it before it contacts the
    /// controller: port 1 would refuse the connection with another error.
    @Test func planRefusesItBeforeContactingTheController() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-artifact-rules") { directory in
            let artifact = directory.appendingPathComponent("api.tar.gz").path
            try ArchiveBuilder.write(
                [.file("server.js", "require('http')"), .directory("venv/bin"), .symlink("venv/bin/python", to: "/usr/bin/python3")],
                format: .tarGzip,
                to: artifact
            )
            let ecosystem = directory.appendingPathComponent("ecosystem.yaml")
            try Data("apps:\n  - name: api\n    script: server.js\n".utf8).write(to: ecosystem)
            let plan = try PlanCommand.parse([
                "--controller", "http://127.0.0.1:1", "--token", "unused", "--service", "api", "--version", "1.0.0",
                "--artifact", artifact, "--ecosystem", ecosystem.path,
            ])
            do {
                try await plan.run()
                Issue.record("plan accepted an artifact agents refuse")
            } catch let error as ArtifactTree.ReadError {
                #expect("\(error)".contains("\n  venv/bin/python: symbolic link to \"/usr/bin/python3\""))
            }
        }
    }

    /// The refusal `ArtifactTree` reads at `path`: the listed refusals, their count and the error's message.
    static func refusal(
        _ path: String,
        configuration: ArtifactTree.Configuration = .init()
    ) throws -> (refusals: [ArtifactTree.Refusal], count: Int, message: String) {
        do throws(ArtifactTree.ReadError) {
            _ = try ArtifactTree(archiveAt: path, configuration: configuration)
        } catch {
            guard case .refusedByAgents(let reported, let refusals, let count) = error, reported == path else {
                throw HarnessError("expected the agents' refusal of \(path), got: \(error)")
            }
            return (refusals, count, "\(error)")
        }
        throw HarnessError("\(path) was accepted, but agents refuse it")
    }
}
