import Foundation
import Logging
import Shared
import Supervisor
import TestSupport
import Testing

@testable import Agent

/// The agent rotates the log files PM2 writes for Ferry's apps (PM2 never does): by size, as the builtin supervisor
/// rotates its own, then `pm2 reloadLogs`.
@Suite struct PM2LogRotationTests {
    /// One directory before a pass: each entry a file (its size) or something else at a path, and what must be there
    /// after. `log` is the live file's path.
    struct Case: Sendable, CustomTestStringConvertible {
        enum Entry: Sendable, Equatable {
            case file(Int)
            case directory
            case link(String)
        }

        var name: String
        var keep = 2
        var before: [String: Entry]
        var after: [String: Entry]
        var renamed = false
        var emptied = false
        var failed = false

        var testDescription: String { name }
    }

    static let limit: Int64 = 1000

    static let cases: [Case] = [
        Case(name: "under the limit: untouched", before: ["out.log": .file(1000)], after: ["out.log": .file(1000)]),
        Case(name: "past the limit: renamed to .1", before: ["out.log": .file(1001)], after: ["out.log.1": .file(1001)], renamed: true),
        Case(
            name: "older files shift up and the oldest goes",
            before: ["out.log": .file(1500), "out.log.1": .file(11), "out.log.2": .file(22)],
            after: ["out.log.1": .file(1500), "out.log.2": .file(11)],
            renamed: true
        ),
        Case(
            name: "a gap in the older files",
            keep: 3,
            before: ["out.log": .file(1500), "out.log.2": .file(22)],
            after: ["out.log.1": .file(1500), "out.log.3": .file(22)],
            renamed: true
        ),
        Case(name: "keep 0: emptied in place", keep: 0, before: ["out.log": .file(5000)], after: ["out.log": .file(0)], emptied: true),
        Case(
            name: "a link to a large file: not a log PM2 writes, untouched",
            before: ["big": .file(5000), "out.log": .link("big")],
            after: ["big": .file(5000), "out.log": .link("big")]
        ),
        Case(name: "a directory at the path: untouched", before: ["out.log": .directory], after: ["out.log": .directory]),
        Case(name: "no file: nothing to do", before: [:], after: [:]),
        Case(
            name: "the oldest cannot be removed (a directory): a failure, the live file untouched",
            before: ["out.log": .file(2000), "out.log.2": .directory, "out.log.2/x": .file(1)],
            after: ["out.log": .file(2000), "out.log.2": .directory, "out.log.2/x": .file(1)],
            failed: true
        ),
    ]

    @Test(arguments: cases)
    func aPassRotatesWhatIsPastTheLimit(_ row: Case) throws {
        try TestPaths.withTemporaryDirectorySync("ferry-pm2-logs") { directory in
            let root = directory.path
            for (name, entry) in row.before.sorted(by: { $0.key < $1.key }) {
                let path = "\(root)/\(name)"
                switch entry {
                case .file(let size): try Data(repeating: UInt8(ascii: "x"), count: size).write(to: URL(fileURLWithPath: path))
                case .directory: try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
                case .link(let target): try FileManager.default.createSymbolicLink(atPath: path, withDestinationPath: "\(root)/\(target)")
                }
            }
            let live = "\(root)/out.log"
            let outcome = PM2LogRotation.rotate([live], rotation: LogRotation(maximumFileBytes: Self.limit, keptFiles: row.keep))
            #expect(outcome.renamed == (row.renamed ? [live] : []))
            #expect(outcome.emptied == (row.emptied ? [live] : []))
            #expect(outcome.failures.isEmpty == !row.failed, "\(outcome.failures)")
            #expect(try Self.snapshot(root) == row.after)
        }
    }

    static func snapshot(_ root: String) throws -> [String: Case.Entry] {
        var entries: [String: Case.Entry] = [:]
        let enumerator = FileManager.default.enumerator(atPath: root)
        while let name = enumerator?.nextObject() as? String {
            let path = "\(root)/\(name)"
            let attributes = try FileManager.default.attributesOfItem(atPath: path)
            switch attributes[.type] as? FileAttributeType {
            case .typeSymbolicLink:
                let target = try FileManager.default.destinationOfSymbolicLink(atPath: path)
                entries[name] = .link(String(target.dropFirst(root.count + 1)))
            case .typeDirectory: entries[name] = .directory
            default: entries[name] = .file((attributes[.size] as? Int) ?? -1)
            }
        }
        return entries
    }

    /// Real PM2: an app that logs without pause. Past the limit its file is renamed and PM2 reopens a new one (`pm2
    /// reloadLogs`): the new file grows, the renamed one stops growing, and no line is lost across the two.
    @Test("against real PM2: a log past the limit is rotated and PM2 writes on to a new file")
    func realPM2ReopensARotatedLog() async throws {
        let pm2 = try #require(try Backend.pm2.pm2Binary())
        let root = try TestPaths.makeTemporaryDirectory("ferry-pm2-logrotate")
        defer { try? FileManager.default.removeItem(at: root) }
        let script = root.appendingPathComponent("chatty.js").path
        // A numbered line every 5 ms, about 60 bytes each.
        try Data("let n = 0; setInterval(() => console.log(`line ${n++} ${'x'.repeat(48)}`), 5);\n".utf8)
            .write(to: URL(fileURLWithPath: script))
        let app = AppSpec.pm2TestApp("chatty", script: script, cwd: root.path)
        let ecosystem = root.appendingPathComponent("ecosystem.json").path
        try Data(EcosystemWriter.render(apps: [app], namespace: "ferry-test")).write(to: URL(fileURLWithPath: ecosystem))
        let manager = try PM2ProcessManager(
            configuration: .init(
                executable: pm2,
                pm2Home: root.appendingPathComponent("pm2home").path,
                namespace: "ferry-test",
                logRotation: LogRotation(maximumFileBytes: 16 << 10, keptFiles: 2),
                logCheckInterval: .zero
            ),
            logger: Logger(label: "test.pm2")
        )
        do {
            try await manager.start(app, ecosystem: ecosystem)
            let log = try #require(try await manager.processes().first?.outLogPath)
            // Past the limit, then one table read rotates it.
            try await Self.waitUntil { Self.size(log) > 16 << 10 }
            _ = try await manager.processes()
            #expect(FileManager.default.fileExists(atPath: log + ".1"))
            // PM2 reopened: a new file appears and grows while the rotated one stays as it is.
            try await Self.waitUntil { Self.size(log) > 600 }
            let rotated = Self.size(log + ".1")
            try await Task.sleep(for: .milliseconds(300))
            #expect(Self.size(log + ".1") == rotated, "PM2 still writes to the rotated file")
            // Every line number from the first of .1 to the last of the live file, once.
            let numbers = try [log + ".1", log].flatMap { path in
                try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").compactMap { line in
                    line.split(separator: " ").dropFirst().first.flatMap { Int($0) }
                }
            }
            #expect(numbers.count > 100)
            #expect(numbers == Array((numbers.first ?? 0)..<((numbers.first ?? 0) + numbers.count)), "a line lost or repeated")
        } catch {
            await PM2ProcessManagerTests.killDaemon(manager)
            throw error
        }
        await PM2ProcessManagerTests.killDaemon(manager)
    }

    static func size(_ path: String) -> Int64 {
        var info = stat()
        return stat(path, &info) == 0 ? Int64(info.st_size) : -1
    }

    static func waitUntil(_ condition: () -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(30)
        while !condition() {
            guard ContinuousClock.now < deadline else { throw HarnessError("condition not met within 30 s") }
            try await Task.sleep(for: .milliseconds(50))
        }
    }
}
