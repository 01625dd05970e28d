import Foundation
import Logging
import Shared
import TestSupport
import Testing

@testable import Agent

/// One hostile (or suspicious) artifact, pushed through the whole pipeline: served over loopback, fetched and
/// verified, extracted next to a live release.
struct HostileArtifact: Sendable, CustomTestStringConvertible {
    /// Where the test runs: `tree` is the watched directory holding the service (`services/api/current` and its
    /// release) and an `outside` directory that hostile entries aim at.
    struct Context: Sendable {
        var tree: String
        var scratch: String
    }

    enum FetchFailure: Sendable { case digestMismatch, sizeMismatch, tooLarge }

    enum Expectation: Sendable {
        /// The fetcher refuses the bytes; nothing is extracted.
        case fetchFails(FetchFailure)
        /// The extractor refuses the archive with this error (and this entry, when given).
        case extractFails(ArchiveError.Kind, entry: String?)
        /// Extracted; the check inspects the new release directory.
        case extracts(@Sendable (String) throws -> Void)
    }

    /// What the release signs, if not the served bytes' own digest and size.
    enum Signed: Sendable {
        case actual, otherDigest
        case size(delta: Int64)
    }

    var name: String
    var signed: Signed = .actual
    var configuration = ArchiveExtractor.Configuration(synchronize: false)
    var expectation: Expectation
    var build: @Sendable (Context) throws -> [UInt8]

    var testDescription: String { name }

    typealias Entry = ArchiveBuilder.Entry

    static func archive(
        _ format: ArchiveBuilder.Format = .tarGzip,
        _ entries: @escaping @Sendable (Context) -> [Entry]
    ) -> @Sendable (Context) throws -> [UInt8] {
        { context in
            let path = "\(context.scratch)/artifact-\(UUID().uuidString)"
            try ArchiveBuilder.write(entries(context), format: format, to: path)
            return Array(try Data(contentsOf: URL(fileURLWithPath: path)))
        }
    }

    static let benign: [Entry] = [.directory("lib"), .file("lib/app.js", "console.log(1)"), .file("package.json", "{}")]

    static let all: [HostileArtifact] = [
        HostileArtifact(
            name: "dot-dot path to the current symlink",
            expectation: .extractFails(.unsafePath, entry: "../../current"),
            build: archive { _ in benign + [.file("../../current", "pwned")] }
        ),
        HostileArtifact(
            name: "dot-dot in the middle of a path",
            expectation: .extractFails(.unsafePath, entry: "lib/../../../../outside/evil.txt"),
            build: archive { _ in benign + [.file("lib/../../../../outside/evil.txt")] }
        ),
        HostileArtifact(
            name: "absolute path",
            expectation: .extractFails(.unsafePath, entry: nil),
            build: archive { context in benign + [.file("\(context.tree)/outside/evil.txt")] }
        ),
        HostileArtifact(
            name: "symlink escaping the tree",
            expectation: .extractFails(.linkEscapes, entry: "escape"),
            build: archive { _ in benign + [.symlink("escape", to: "../../../../outside"), .file("escape/evil.txt")] }
        ),
        HostileArtifact(
            name: "absolute symlink",
            expectation: .extractFails(.linkEscapes, entry: "etc"),
            build: archive { context in benign + [.symlink("etc", to: "\(context.tree)/outside")] }
        ),
        HostileArtifact(
            name: "write through an in-tree symlink",
            expectation: .extractFails(.unsafePath, entry: "lib/up/evil.txt"),
            build: archive { _ in benign + [.symlink("lib/up", to: ".."), .file("lib/up/evil.txt")] }
        ),
        HostileArtifact(
            name: "symlink chain resolving outside",
            expectation: .extractFails(.linkEscapes, entry: "b"),
            build: archive { _ in benign + [.symlink("a", to: "."), .symlink("b", to: "a/..")] }
        ),
        HostileArtifact(
            name: "dangling symlink chain climbing out (a -> ., then a/a/a/../../../ to a file not there yet)",
            expectation: .extractFails(.linkEscapes, entry: "b"),
            build: archive { _ in benign + [.symlink("a", to: "."), .symlink("b", to: "a/a/a/a/../../../../outside/not-yet")] }
        ),
        HostileArtifact(
            name: "npm's and pnpm's links (climbs at the start only) extract, through a link to a link too",
            expectation: .extracts { release in
                #expect(FileManager.default.contents(atPath: "\(release)/node_modules/.bin/tool") == Data("x".utf8))
                #expect(FileManager.default.contents(atPath: "\(release)/current/.bin/tool") == Data("x".utf8))
            },
            build: archive { _ in
                benign + [
                    .file("node_modules/tool/bin/tool.js"), .symlink("node_modules/.bin/tool", to: "../tool/bin/tool.js"),
                    .symlink("current", to: "./node_modules"),
                ]
            }
        ),
        HostileArtifact(
            name: "a climb after a name, even one that stays inside",
            expectation: .extractFails(.linkEscapes, entry: "lib/c"),
            build: archive { _ in benign + [.symlink("lib/c", to: "../lib/../lib/app.js")] }
        ),
        // libarchive reports a zip entry whose bytes do not match its CRC as a warning, then the end of the entry: taken
        // as success, the damaged bytes were installed (the artifact's digest proves only that it is what was signed).
        HostileArtifact(
            name: "zip entry whose bytes do not match its CRC",
            expectation: .extractFails(.corrupt, entry: "lib/data.txt"),
            build: { context in
                var bytes = try archive(.zipStored) { _ in benign + [.file("lib/data.txt", "payload-with-a-checksum")] }(context)
                let marker = Array("payload-with-a-checksum".utf8)
                guard let start = (0...(bytes.count - marker.count)).first(where: { bytes[$0..<($0 + marker.count)].elementsEqual(marker) }) else {
                    throw ArchiveBuilder.Failure(description: "the stored entry's bytes are not in the zip")
                }
                bytes[start] ^= 0x20
                return bytes
            }
        ),
        HostileArtifact(
            name: "hardlink escaping the tree",
            expectation: .extractFails(.linkEscapes, entry: "keep"),
            build: archive { _ in benign + [.hardlink("keep", to: "../../../../outside/keep.txt")] }
        ),
        HostileArtifact(
            name: "absolute hardlink",
            expectation: .extractFails(.linkEscapes, entry: "passwd"),
            build: archive { context in benign + [.hardlink("passwd", to: "\(context.tree)/outside/keep.txt")] }
        ),
        HostileArtifact(
            name: "hardlink to a symlink",
            expectation: .extractFails(.linkEscapes, entry: "h"),
            build: archive { _ in benign + [.symlink("s", to: "lib/app.js"), .hardlink("h", to: "s")] }
        ),
        HostileArtifact(
            name: "character device",
            expectation: .extractFails(.unsupportedEntryType, entry: "dev/null"),
            build: archive { _ in benign + [Entry(path: "dev/null", kind: .characterDevice, mode: 0o666)] }
        ),
        HostileArtifact(
            name: "block device",
            expectation: .extractFails(.unsupportedEntryType, entry: "sda"),
            build: archive { _ in benign + [Entry(path: "sda", kind: .blockDevice, mode: 0o660)] }
        ),
        HostileArtifact(
            name: "fifo",
            expectation: .extractFails(.unsupportedEntryType, entry: "pipe"),
            build: archive { _ in benign + [Entry(path: "pipe", kind: .fifo, mode: 0o644)] }
        ),
        HostileArtifact(
            name: "entry-count bomb",
            configuration: .init(maxEntries: 50, synchronize: false),
            expectation: .extractFails(.tooManyEntries, entry: nil),
            build: archive { _ in (0..<60).map { Entry.file("f\($0)") } }
        ),
        HostileArtifact(
            // Each entry's missing parents are made for it: two deep paths were two entries and 400 directories.
            name: "directory bomb (deep paths, few entries)",
            configuration: .init(maxEntries: 50, synchronize: false),
            expectation: .extractFails(.tooManyEntries, entry: nil),
            build: archive { _ in
                let deep = Array(repeating: "a", count: 200).joined(separator: "/")
                return [Entry.file("x1/\(deep)/f"), Entry.file("x2/\(deep)/f")]
            }
        ),
        HostileArtifact(
            // Directories listed after their contents (`find -depth`, some zip tools) count once, when a path made them.
            name: "directories listed after their contents, at the entry limit",
            configuration: .init(maxEntries: 4, synchronize: false),
            expectation: .extracts { release in
                #expect(FileManager.default.contents(atPath: "\(release)/d/a/f") == Data("x".utf8))
                #expect(FileManager.default.contents(atPath: "\(release)/d/g") == Data("x".utf8))
            },
            build: archive { _ in [Entry.file("d/a/f"), Entry.directory("d/a"), Entry.file("d/g"), Entry.directory("d")] }
        ),
        HostileArtifact(
            name: "size bomb (one huge entry)",
            configuration: .init(maxTotalBytes: 1 << 20, synchronize: false),
            expectation: .extractFails(.tooLarge, entry: "zeros.bin"),
            build: archive { _ in benign + [Entry(path: "zeros.bin", kind: .zeros(8 << 20), mode: 0o644)] }
        ),
        HostileArtifact(
            name: "size bomb (many entries)",
            configuration: .init(maxTotalBytes: 1 << 20, synchronize: false),
            expectation: .extractFails(.tooLarge, entry: "part10"),
            build: archive { _ in (0..<12).map { Entry(path: "part\($0)", kind: .zeros(100_000), mode: 0o644) } }
        ),
        // libarchive takes a pax header's size as it is, up to Int64.max: adding it to the bytes already extracted
        // overflowed (a trap that ended the agent), before the limit was compared.
        HostileArtifact(
            name: "pax realsize of Int64.max after a written byte",
            expectation: .extractFails(.tooLarge, entry: "b"),
            build: { _ in
                ArchiveBuilder.rawTar([
                    .init(path: "a", data: Array("x".utf8)),
                    .init(path: "b", pax: [("SCHILY.realsize", "9223372036854775807")]),
                ])
            }
        ),
        HostileArtifact(
            name: "pax GNU.sparse.realsize past Int64.max after a written byte",
            expectation: .extractFails(.tooLarge, entry: "b"),
            build: { _ in
                ArchiveBuilder.rawTar([
                    .init(path: "a", data: Array("x".utf8)),
                    .init(path: "b", pax: [("GNU.sparse.realsize", "99999999999999999999999")]),
                ])
            }
        ),
        // The data's own size: libarchive refuses the header itself.
        HostileArtifact(
            name: "pax size of Int64.max after a written byte",
            expectation: .extractFails(.corrupt, entry: nil),
            build: { _ in
                ArchiveBuilder.rawTar([
                    .init(path: "a", data: Array("x".utf8)),
                    .init(path: "b", pax: [("size", "9223372036854775807")]),
                ])
            }
        ),
        HostileArtifact(
            name: "pax realsize that is negative",
            expectation: .extracts { release in
                #expect(FileManager.default.contents(atPath: "\(release)/b") == Data("yy".utf8))
            },
            build: { _ in
                ArchiveBuilder.rawTar([
                    .init(path: "a", data: Array("x".utf8)),
                    .init(path: "b", pax: [("SCHILY.realsize", "-9223372036854775808")], data: Array("yy".utf8)),
                ])
            }
        ),
        HostileArtifact(
            name: "zip bomb lying about its size",
            configuration: .init(maxTotalBytes: 1 << 20, synchronize: false),
            expectation: .extractFails(.tooLarge, entry: "bomb.bin"),
            build: { context in try lyingZip(context) }
        ),
        HostileArtifact(
            name: "truncated gzip",
            expectation: .extractFails(.corrupt, entry: nil),
            build: { context in
                let bytes = try archive { _ in
                    [Entry(path: "random.bin", kind: .file((0..<400_000).map { _ in UInt8.random(in: 0...255) }), mode: 0o644)]
                }(context)
                return Array(bytes.prefix(bytes.count / 2))
            }
        ),
        HostileArtifact(name: "digest mismatch", signed: .otherDigest, expectation: .fetchFails(.digestMismatch), build: archive { _ in benign }),
        HostileArtifact(
            name: "size mismatch (server sends less than signed)",
            signed: .size(delta: 100),
            expectation: .fetchFails(.sizeMismatch),
            build: archive { _ in benign }
        ),
        HostileArtifact(
            name: "size mismatch (server sends more than signed)",
            signed: .size(delta: -100),
            expectation: .fetchFails(.tooLarge),
            build: archive { _ in benign }
        ),
        HostileArtifact(
            name: "zip with dot-dot",
            expectation: .extractFails(.unsafePath, entry: "../../current"),
            build: archive(.zip) { _ in benign + [.file("../../current")] }
        ),
        HostileArtifact(
            name: "zip with an absolute path",
            expectation: .extractFails(.unsafePath, entry: nil),
            build: archive(.zip) { context in benign + [.file("\(context.tree)/outside/evil.txt")] }
        ),
        HostileArtifact(name: "empty tar", expectation: .extractFails(.empty, entry: nil), build: archive(.tar) { _ in [] }),
        HostileArtifact(name: "zero-byte file", expectation: .extractFails(.empty, entry: nil), build: { _ in [] }),
        HostileArtifact(
            name: "not an archive",
            expectation: .extractFails(.unreadable, entry: nil),
            build: { _ in Array("#!/bin/sh\nrm -rf /\n".utf8) + [UInt8](repeating: 0x41, count: 4096) }
        ),
        HostileArtifact(
            name: "setuid, setgid, sticky and world-writable bits",
            expectation: .extracts { (release: String) throws in
                #expect(try mode(of: "\(release)/bin/suid") == 0o755)
                #expect(try mode(of: "\(release)/bin/sgid") == 0o775)
                #expect(try mode(of: "\(release)/open.txt") == 0o664)
                #expect(try mode(of: "\(release)/tmp") == 0o775)
                #expect(try mode(of: "\(release)/readonly") == 0o755)
            },
            build: archive { _ in
                [
                    .directory("bin"),
                    .file("bin/suid", "#!/bin/sh", mode: 0o4755),
                    .file("bin/sgid", "#!/bin/sh", mode: 0o2775),
                    .file("open.txt", mode: 0o666),
                    .directory("tmp", mode: 0o1777),
                    .directory("readonly", mode: 0o555),
                    .file("readonly/inside.txt", mode: 0o444),
                ]
            }
        ),
    ]

    static func mode(of path: String) throws -> mode_t {
        var info = stat()
        guard lstat(path, &info) == 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        return info.st_mode & 0o7777
    }

    /// A zip whose headers claim 1000 bytes for an entry that inflates to 8 MiB.
    static func lyingZip(_ context: Context) throws -> [UInt8] {
        let path = "\(context.scratch)/bomb-\(UUID().uuidString).zip"
        try ArchiveBuilder.write([Entry(path: "bomb.bin", kind: .zeros(8 << 20), mode: 0o644)], format: .zip, to: path)
        var bytes = Array(try Data(contentsOf: URL(fileURLWithPath: path)))
        func patch(_ offset: Int) {
            for (i, byte) in [UInt8(0xe8), 0x03, 0, 0].enumerated() { bytes[offset + i] = byte }
        }
        for index in 0..<(bytes.count - 4) where bytes[index] == 0x50 && bytes[index + 1] == 0x4b {
            if bytes[index + 2] == 3, bytes[index + 3] == 4 { patch(index + 22) }  // local header: uncompressed size
            if bytes[index + 2] == 1, bytes[index + 3] == 2 { patch(index + 24) }  // central directory: uncompressed size
        }
        return bytes
    }
}

@Suite("Hostile artifacts through fetch and extract")
struct ArchiveExtractorHostileArtifactTests {
    static let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

    @Test(arguments: HostileArtifact.all)
    func hostileArtifactIsRefusedAndNothingOutsideStagingChanges(_ artifact: HostileArtifact) async throws {
        try await TestPaths.withTemporaryDirectory("ferry-hostile") { root in
            let tree = root.appendingPathComponent("tree").path
            let scratch = root.appendingPathComponent("scratch").path
            let state = root.appendingPathComponent("state").path
            let service = "\(tree)/services/api"
            for directory in [scratch, state, "\(tree)/outside", "\(service)/releases/1-old"] {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            }
            try Data("keep".utf8).write(to: URL(fileURLWithPath: "\(tree)/outside/keep.txt"))
            try Data("old release".utf8).write(to: URL(fileURLWithPath: "\(service)/releases/1-old/index.js"))
            try FileManager.default.createSymbolicLink(atPath: "\(service)/current", withDestinationPath: "releases/1-old")
            let destination = "\(service)/releases/2-new"

            let bytes = try artifact.build(HostileArtifact.Context(tree: tree, scratch: scratch))
            let before = try TreeSnapshot.take(tree)

            let digest: SHA256Digest
            var size = Int64(bytes.count)
            switch artifact.signed {
            case .actual: digest = SHA256.hash(bytes)
            case .otherDigest: digest = SHA256.hash(bytes + [0])
            case .size(let delta):
                digest = SHA256.hash(bytes)
                size += delta
            }

            try await TestFileServer.with { server in
                server.publish(bytes, at: ArtifactReference.controllerPath(for: digest))
                let fetcher = ArtifactFetcher(
                    configuration: .init(stateDirectory: state),
                    client: HTTPClient(),
                    controllerURL: server.baseURL,
                    token: "t",
                    logger: Self.logger
                )
                let extractor = ArchiveExtractor(configuration: artifact.configuration, logger: Self.logger)
                let reference = ArtifactReference(url: ArtifactReference.controllerPath(for: digest), sha256: digest, size: size)

                switch artifact.expectation {
                case .fetchFails(let failure):
                    let error = await #expect(throws: ArtifactFetchError.self) { try await fetcher.fetch(reference) }
                    switch (failure, error) {
                    case (.digestMismatch, .digestMismatch(_, let expected, let actual)?):
                        #expect(expected == digest)
                        #expect(actual == SHA256.hash(bytes))
                    case (.sizeMismatch, .sizeMismatch(_, _, let expected, let received)?):
                        #expect(expected == size)
                        #expect(received == Int64(bytes.count))
                    case (.tooLarge, .tooLarge(_, _, let expected)?):
                        #expect(expected == size)
                    default:
                        Issue.record("expected \(failure), got \(String(describing: error))")
                    }
                    let cached = try FileManager.default.contentsOfDirectory(atPath: "\(state)/artifacts")
                    #expect(cached.isEmpty, "a refused artifact leaves nothing in the cache")

                case .extractFails(let kind, let entry):
                    let fetched = try await fetcher.fetch(reference)
                    let error = await #expect(throws: ArchiveError.self) { try await extractor.extract(fetched.path, into: destination) }
                    #expect(error?.kind == kind, "got \(String(describing: error))")
                    if let entry { #expect(error?.entry == entry, "got \(String(describing: error))") }

                case .extracts(let check):
                    let fetched = try await fetcher.fetch(reference)
                    let summary = try await extractor.extract(fetched.path, into: destination)
                    #expect(summary.path == destination)
                    try check(destination)
                }
            }

            var after = try TreeSnapshot.take(tree)
            if case .extracts = artifact.expectation {
                after = after.filter { !$0.key.hasPrefix("services/api/releases/2-new") }
            } else {
                #expect(!FileManager.default.fileExists(atPath: destination))
            }
            #expect(after == before, "nothing outside the staging directory may change")
            #expect(try FileManager.default.destinationOfSymbolicLink(atPath: "\(service)/current") == "releases/1-old")
            let leftovers = try FileManager.default.contentsOfDirectory(atPath: "\(service)/releases").filter { $0.contains(".staging-") }
            #expect(leftovers.isEmpty)
        }
    }

    @Test func tableCoversEveryRequiredKindOfHostileArtifact() {
        #expect(HostileArtifact.all.count >= 14)
    }
}
