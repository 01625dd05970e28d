import Foundation
import Logging
import Shared
import TestSupport
import Testing

@testable import Agent

@Suite("ArchiveExtractor")
struct ArchiveExtractorTests {
    static let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
    static let extractor = ArchiveExtractor(configuration: .init(synchronize: false), logger: logger)

    /// How a real tool packs the sample tree. The archive's name never reveals its format.
    enum Packer: String, CaseIterable, Sendable {
        case tar, tarGzip, tarZstd, zip

        func pack(_ source: String, into archive: String) async throws {
            switch self {
            case .tar: try await run("/bin/tar", ["-C", source, "-cf", archive, "."])
            case .tarGzip: try await run("/bin/tar", ["-C", source, "-czf", archive, "."])
            case .tarZstd:
                try await run("/bin/tar", ["-C", source, "-cf", archive + ".tmp", "."])
                try await run(zstd, ["-q", "-f", archive + ".tmp", "-o", archive])
                try FileManager.default.removeItem(atPath: archive + ".tmp")
            case .zip:
                // zip insists on a .zip suffix; the extractor gets the file without it.
                try await run("/usr/bin/zip", ["-q", "-r", "-y", archive + ".zip", "."], in: source)
                try FileManager.default.moveItem(atPath: archive + ".zip", toPath: archive)
            }
        }

        var zstd: String { "/usr/bin/zstd" }
    }

    /// A small application tree: nested directories, an executable, an empty directory, an in-tree symbolic link
    /// (with `..`) and, for tar, a hard link.
    static func makeSample(at root: String, hardlink: Bool) throws {
        let files: [(String, String, Int)] = [
            ("package.json", "{\"name\":\"api\"}", 0o644),
            ("bin/start.sh", "#!/bin/sh\nexec node server.js\n", 0o755),
            ("lib/util/strings.js", String(repeating: "module.exports = 1;\n", count: 500), 0o644),
            ("node_modules/left-pad/index.js", "module.exports = (s) => s;\n", 0o644),
        ]
        for (path, text, mode) in files {
            let full = "\(root)/\(path)"
            try FileManager.default.createDirectory(atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try Data(text.utf8).write(to: URL(fileURLWithPath: full))
            chmod(full, mode_t(mode))
        }
        try FileManager.default.createDirectory(atPath: "\(root)/logs", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: "\(root)/node_modules/.bin", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: "\(root)/node_modules/.bin/left-pad", withDestinationPath: "../left-pad/index.js")
        if hardlink { link("\(root)/package.json", "\(root)/package.copy.json") }
        // Directory modes set, not left to the umask: libarchive's `archive_write_disk_new` sets the process's umask to
        // 0 for a moment to read it, and a directory created then by a test running alongside came out 0777.
        for directory in ["", "bin", "lib", "lib/util", "node_modules", "node_modules/left-pad", "node_modules/.bin", "logs"] {
            chmod(directory.isEmpty ? root : "\(root)/\(directory)", 0o755)
        }
    }

    @Test(arguments: Packer.allCases)
    func extractsRealArchivesInEveryFormat(_ packer: Packer) async throws {
        if packer == .tarZstd {
            try #require(FileManager.default.isExecutableFile(atPath: packer.zstd), "the zstd CLI (Debian package zstd) is needed")
        }
        try await TestPaths.withTemporaryDirectory("ferry-extract") { root in
            let source = root.appendingPathComponent("source").path
            try Self.makeSample(at: source, hardlink: packer != .zip)
            let archive = root.appendingPathComponent("artifact").path  // no extension: detected by content
            try await packer.pack(source, into: archive)
            let destination = root.appendingPathComponent("release").path

            let summary = try await Self.extractor.extract(archive, into: destination)

            #expect(summary.path == destination)
            let extracted = try TreeSnapshot.take(destination, inodes: false)
            let packed = try TreeSnapshot.take(source, inodes: false)
            let differences = Set(extracted.keys).union(packed.keys).sorted().filter { extracted[$0] != packed[$0] }
                .map { "\($0): extracted \(extracted[$0] ?? "nothing"), packed \(packed[$0] ?? "nothing")" }
            #expect(differences.isEmpty, "\(differences)")
            #expect(summary.entries == (packer == .zip ? 12 : 13))
            #expect(try String(contentsOfFile: "\(destination)/node_modules/.bin/left-pad", encoding: .utf8) == "module.exports = (s) => s;\n")
            if packer != .zip {
                var original = stat()
                var copy = stat()
                #expect(lstat("\(destination)/package.json", &original) == 0 && lstat("\(destination)/package.copy.json", &copy) == 0)
                #expect(original.st_ino == copy.st_ino, "hard links stay hard links")
            }
            let siblings = try FileManager.default.contentsOfDirectory(atPath: root.path)
            #expect(!siblings.contains { $0.contains(ArchiveExtractor.stagingMarker) })
        }
    }

    @Test func synchronizedExtractionWorks() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-extract") { root in
            let archive = root.appendingPathComponent("a.tgz").path
            try ArchiveBuilder.write([.file("a.txt", "hello")], format: .tarGzip, to: archive)
            let extractor = ArchiveExtractor(logger: Self.logger)
            #expect(extractor.configuration.synchronize)
            let summary = try await extractor.extract(archive, into: root.appendingPathComponent("out").path)
            #expect(summary.entries == 1 && summary.bytes == 5)
        }
    }

    @Test func existingDestinationIsNeverExtractedOver() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-extract") { root in
            let archive = root.appendingPathComponent("a.tgz").path
            try ArchiveBuilder.write([.file("new.txt")], format: .tarGzip, to: archive)
            let destination = root.appendingPathComponent("release").path
            try FileManager.default.createDirectory(atPath: destination, withIntermediateDirectories: true)
            let error = await #expect(throws: ArchiveError.self) { try await Self.extractor.extract(archive, into: destination) }
            #expect(error?.kind == .destinationExists)
            #expect(try FileManager.default.contentsOfDirectory(atPath: destination).isEmpty)
            #expect(try FileManager.default.contentsOfDirectory(atPath: root.path).sorted() == ["a.tgz", "release"])
        }
    }

    @Test func missingParentIsAFileSystemError() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-extract") { root in
            let archive = root.appendingPathComponent("a.tgz").path
            try ArchiveBuilder.write([.file("a.txt")], format: .tarGzip, to: archive)
            let error = await #expect(throws: ArchiveError.self) {
                try await Self.extractor.extract(archive, into: root.appendingPathComponent("missing/release").path)
            }
            guard case .fileSystem(let path, let operation, _) = error else {
                Issue.record("expected fileSystem, got \(String(describing: error))")
                return
            }
            #expect(path.hasSuffix("/missing"))
            #expect(operation == "realpath")
        }
    }

    @Test func destinationUnderASymlinkedParentIsResolved() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-extract") { root in
            let archive = root.appendingPathComponent("a.tgz").path
            try ArchiveBuilder.write([.directory("d"), .file("d/a.txt", "x")], format: .tarGzip, to: archive)
            try FileManager.default.createDirectory(atPath: root.appendingPathComponent("real").path, withIntermediateDirectories: true)
            try FileManager.default.createSymbolicLink(atPath: root.appendingPathComponent("alias").path, withDestinationPath: "real")
            let summary = try await Self.extractor.extract(archive, into: root.appendingPathComponent("alias/release").path)
            #expect(summary.path.hasSuffix("/real/release"))
            #expect(FileManager.default.fileExists(atPath: root.appendingPathComponent("real/release/d/a.txt").path))
        }
    }

    @Test func pausePointHoldsUntilCancelledAndTheStagingDirectoryIsRemoved() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-extract") { root in
            let archive = root.appendingPathComponent("a.tgz").path
            try ArchiveBuilder.write((0..<10).map { .file("f\($0).txt") }, format: .tarGzip, to: archive)
            let extractor = ArchiveExtractor(configuration: .init(synchronize: false, pauseAfterEntries: 3), logger: Self.logger)
            let destination = root.appendingPathComponent("release").path
            let task = Task { try await extractor.extract(archive, into: destination) }
            var staging: String?
            try await waitUntil {
                staging = try FileManager.default.contentsOfDirectory(atPath: root.path).first { $0.contains(ArchiveExtractor.stagingMarker) }
                guard let staging else { return false }
                return try FileManager.default.contentsOfDirectory(atPath: root.appendingPathComponent(staging).path).count == 3
            }
            task.cancel()
            let result = await task.result
            guard case .failure(let error) = result, case .cancelled? = error as? ArchiveError else {
                Issue.record("expected cancelled, got \(result)")
                return
            }
            #expect(try FileManager.default.contentsOfDirectory(atPath: root.path) == ["a.tgz"])
        }
    }

    @Test func stagingLeftoversOfAKilledExtractionAreRemoved() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-extract") { root in
            let releases = root.path
            let leftover = "\(releases)/7-abc\(ArchiveExtractor.stagingMarker)0123456789abcdef"
            try FileManager.default.createDirectory(atPath: "\(leftover)/ro", withIntermediateDirectories: true)
            try Data("x".utf8).write(to: URL(fileURLWithPath: "\(leftover)/ro/file"))
            chmod("\(leftover)/ro", 0o555)
            try FileManager.default.createDirectory(atPath: "\(releases)/6-def", withIntermediateDirectories: true)
            let removed = try ArchiveExtractor.removeStagingLeftovers(in: releases)
            #expect(removed == [leftover])
            #expect(try FileManager.default.contentsOfDirectory(atPath: releases) == ["6-def"])
        }
    }
}

/// Runs a tool to build a test archive; throws with its stderr when it fails.
func run(_ executable: String, _ arguments: [String], in directory: String? = nil) async throws {
    try await TestPaths.withTemporaryDirectory("ferry-tool") { scratch in
        let stderrURL = scratch.appendingPathComponent("stderr")
        try Data().write(to: stderrURL)
        let status = try await runProcess(executable, arguments, in: directory, stderr: try FileHandle(forWritingTo: stderrURL))
        guard status == 0 else {
            let stderr = try String(contentsOf: stderrURL, encoding: .utf8)
            throw ToolFailed(description: "\(executable) \(arguments.joined(separator: " ")) exited \(status): \(stderr)")
        }
    }
}

/// Runs a child process to completion without blocking a thread of the cooperative pool (a test HTTP server in
/// the same process needs those threads to answer the child).
func runProcess(
    _ executable: String,
    _ arguments: [String],
    in directory: String? = nil,
    stdout: FileHandle? = nil,
    stderr: FileHandle? = nil
) async throws -> Int32 {
    let process = try SpawnedProcess(
        executable: executable,
        arguments: arguments,
        workingDirectory: directory,
        standardOutput: stdout.map { ProcessSpawner.Stream.descriptor($0.fileDescriptor) } ?? .descriptor(STDOUT_FILENO),
        standardError: stderr.map { ProcessSpawner.Stream.descriptor($0.fileDescriptor) } ?? .descriptor(STDERR_FILENO)
    )
    // The blocking wait runs on a thread of its own, never on the cooperative pool.
    return try await DedicatedThread.run(name: "runProcess wait") { process.terminationStatus }
}

struct ToolFailed: Error, CustomStringConvertible {
    var description: String
}
