import CArchive
import Foundation
import Shared
import TestSupport
import Testing

@testable import Controller

/// `publish` and `plan` refuse, before anything is uploaded, an artifact every agent would refuse to extract
/// (`ArchiveEntryRules` and the agent's limits), naming each entry and why.
@Suite("publish and plan: artifacts agents refuse")
struct ArtifactTreeAgentRulesTests {
    /// An archive no agent extracts, the one entry the error must name (`nil`: the archive as a whole) and part of
    /// the reason it must give.
    struct Hostile: Sendable, CustomTestStringConvertible {
        var name: String
        var configuration = ArtifactTree.Configuration()
        var entries: [Item]
        var refused: String?
        var reason: String

        var testDescription: String { name }
    }

    static let benign: [Item] = [.directory("lib"), .file("lib/app.js", "console.log(1)"), .file("package.json", "{}")]

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
            entries: benign + (0..<5).map { Item.file("f\($0)") },
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
            entries: (0..<4).map { Item.file("part\($0)", String(repeating: "x", count: 400)) },
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
            try Item.writeTarGzip(hostile.entries, to: path)
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
            try Item.writeTarGzip(
                Self.benign + [
                    .directory("venv/bin"), .symlink("venv/bin/python", to: "/usr/bin/python3"), .fifo("run/pipe"),
                    .file("../escape"), .hardlink("keep", to: "../keep"),
                ],
                to: path
            )
            let (refusals, count, message) = try Self.refusal(path)
            #expect(count == 4)
            #expect(refusals.map(\.entry) == ["venv/bin/python", "run/pipe", "../escape", "keep"])
            let line = "venv/bin/python: symbolic link to \"/usr/bin/python3\": absolute symbolic link target"
            #expect(message.contains("\n  \(line) — agents refuse links that could leave the release directory\n"))
        }
    }

    @Test func aLongListIsCutWithACount() throws {
        try TestPaths.withTemporaryDirectorySync("ferry-artifact-rules") { directory in
            let path = directory.appendingPathComponent("artifact.tar.gz").path
            try Item.writeTarGzip(Self.benign + (0..<25).map { Item.fifo("pipe\($0)") }, to: path)
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
            try Item.writeTarGzip(Self.benign + [.fifo("evil\u{1B}[2J\nok: fine")], to: path)
            let (_, _, message) = try Self.refusal(path)
            #expect(!message.contains("\u{1B}"))
            #expect(message.contains("evil\\u001b[2J\\u000aok: fine: a FIFO"))
        }
    }

    /// npm's and pnpm's links, a link to a link, directories listed after their contents at the entry limit: agents
    /// extract all of it, so it is read, links and all.
    @Test func aNormalTreeWithInTreeLinksIsAccepted() throws {
        try TestPaths.withTemporaryDirectorySync("ferry-artifact-rules") { directory in
            let path = directory.appendingPathComponent("artifact.tar.gz").path
            try Item.writeTarGzip(
                [
                    .directory("./"), .file("node_modules/tool/bin/tool.js", "#!/usr/bin/env node\n", mode: 0o755),
                    .symlink("node_modules/.bin/tool", to: "../tool/bin/tool.js"), .symlink("current", to: "./node_modules"),
                    .directory("node_modules/tool/bin"), .directory("node_modules"), .hardlink("tool.js", to: "node_modules/tool/bin/tool.js"),
                ],
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
            try Item.writeTarGzip(
                [.file("server.js", "require('http')"), .directory("venv/bin"), .symlink("venv/bin/python", to: "/usr/bin/python3")],
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

    /// One entry of a test archive, written with libarchive, including what no well-behaved tool writes.
    struct Item: Sendable {
        enum Kind: Sendable {
            case file([UInt8])
            case directory
            case symlink(String)
            case hardlink(String)
            case fifo
            case characterDevice
            case blockDevice
        }

        var path: String
        var kind: Kind
        var mode: UInt32 = 0o644

        static func file(_ path: String, _ text: String = "x", mode: UInt32 = 0o644) -> Item {
            Item(path: path, kind: .file(Array(text.utf8)), mode: mode)
        }

        static func directory(_ path: String) -> Item { Item(path: path, kind: .directory, mode: 0o755) }
        static func symlink(_ path: String, to target: String) -> Item { Item(path: path, kind: .symlink(target), mode: 0o777) }
        static func hardlink(_ path: String, to target: String) -> Item { Item(path: path, kind: .hardlink(target)) }
        static func fifo(_ path: String) -> Item { Item(path: path, kind: .fifo) }
        static func characterDevice(_ path: String) -> Item { Item(path: path, kind: .characterDevice, mode: 0o666) }
        static func blockDevice(_ path: String) -> Item { Item(path: path, kind: .blockDevice, mode: 0o660) }

        /// Writes `items` in order as a gzip'd pax tar at `path`.
        static func writeTarGzip(_ items: [Item], to path: String) throws {
            guard let archive = archive_write_new() else { throw HarnessError("archive_write_new failed") }
            defer { archive_write_free(archive) }
            archive_write_set_format_pax_restricted(archive)
            archive_write_add_filter_gzip(archive)
            try check(archive, archive_write_open_filename(archive, path))
            for item in items {
                guard let entry = archive_entry_new() else { throw HarnessError("archive_entry_new failed") }
                defer { archive_entry_free(entry) }
                archive_entry_set_pathname(entry, item.path)
                archive_entry_set_perm(entry, mode_t(item.mode))
                archive_entry_set_mtime(entry, 1_700_000_000, 0)
                var data: [UInt8] = []
                switch item.kind {
                case .file(let bytes):
                    archive_entry_set_filetype(entry, FERRY_AE_IFREG)
                    archive_entry_set_size(entry, la_int64_t(bytes.count))
                    data = bytes
                case .directory:
                    archive_entry_set_filetype(entry, FERRY_AE_IFDIR)
                case .symlink(let target):
                    archive_entry_set_filetype(entry, FERRY_AE_IFLNK)
                    archive_entry_set_symlink(entry, target)
                case .hardlink(let target):
                    archive_entry_set_filetype(entry, FERRY_AE_IFREG)
                    archive_entry_set_hardlink(entry, target)
                    archive_entry_set_size(entry, 0)
                case .fifo:
                    archive_entry_set_filetype(entry, FERRY_AE_IFIFO)
                case .characterDevice:
                    archive_entry_set_filetype(entry, FERRY_AE_IFCHR)
                    archive_entry_set_rdevmajor(entry, 1)
                    archive_entry_set_rdevminor(entry, 3)
                case .blockDevice:
                    archive_entry_set_filetype(entry, FERRY_AE_IFBLK)
                    archive_entry_set_rdevmajor(entry, 8)
                    archive_entry_set_rdevminor(entry, 0)
                }
                try check(archive, archive_write_header(archive, entry))
                if !data.isEmpty, archive_write_data(archive, data, data.count) != data.count {
                    throw HarnessError(archive_error_string(archive).map { String(cString: $0) } ?? "archive_write_data failed")
                }
            }
            try check(archive, archive_write_close(archive))
        }

        private static func check(_ archive: OpaquePointer, _ status: Int32) throws {
            guard status >= ARCHIVE_WARN else {
                throw HarnessError(archive_error_string(archive).map { String(cString: $0) } ?? "libarchive error \(status)")
            }
        }
    }
}
