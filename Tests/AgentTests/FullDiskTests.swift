import Foundation
import Logging
import Shared
import TestSupport
import Testing

@testable import Agent

/// The agent on a full disk: its state directory on a small tmpfs the test mounts (skipped, with the reason printed,
/// where it cannot), filled by a real file until the kernel answers ENOSPC.
@Suite("Full disk", .serialized)
struct FullDiskTests {
    static let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

    /// One install step against a full disk: download then extraction, as `Reconciler.unpack` does them.
    struct Case: Sendable, CustomTestStringConvertible {
        enum Stage: Sendable { case download, extraction }

        var name: String
        /// The archive's entries.
        var entries: @Sendable () -> [ArchiveBuilder.Entry]
        /// Free bytes left on the 8 MiB file system before the step.
        var leaving: Int64
        /// Skip the free-space check, so the download meets ENOSPC itself (another writer took the space after it).
        var skipFreeSpaceCheck: Bool
        var failsAt: Stage
        /// Whether the `.part` of the download is still there after the failure.
        var keepsPart: Bool

        var testDescription: String { name }
    }

    /// 3 MB that gzip cannot shrink.
    static let incompressible: @Sendable () -> [ArchiveBuilder.Entry] = {
        var generator = SystemRandomNumberGenerator()
        return [
            .file("VERSION", "2"),
            ArchiveBuilder.Entry(
                path: "blob.bin",
                kind: .file((0..<(3 << 20)).map { _ in UInt8.random(in: 0...255, using: &generator) }),
                mode: 0o644
            ),
        ]
    }

    static let cases: [Case] = [
        Case(
            name: "the download meets ENOSPC: the partial file goes",
            entries: incompressible,
            leaving: 1 << 20,
            skipFreeSpaceCheck: true,
            failsAt: .download,
            keepsPart: false
        ),
        Case(
            name: "the free-space check refuses the download before it starts",
            entries: incompressible,
            leaving: 1 << 20,
            skipFreeSpaceCheck: false,
            failsAt: .download,
            keepsPart: false
        ),
        Case(
            name: "the extraction meets ENOSPC: the staging tree goes",
            // 6 MB of zeros: a few kilobytes to download, more than is free to extract.
            entries: { [.file("VERSION", "2"), .directory("lib"), ArchiveBuilder.Entry(path: "lib/zeros.bin", kind: .zeros(6 << 20), mode: 0o644)] },
            leaving: 3 << 20,
            skipFreeSpaceCheck: false,
            failsAt: .extraction,
            keepsPart: false
        ),
    ]

    @Test(arguments: cases)
    func installStepOnAFullDisk(_ row: Case) async throws {
        try await TestPaths.withTemporaryDirectory("ferry-full-disk") { root in
            let disk = try SmallFileSystem.mount(at: root.appendingPathComponent("state").path, megabytes: 8)
            defer { disk.unmount() }
            let archive = root.appendingPathComponent("artifact.tgz").path
            try ArchiveBuilder.write(row.entries(), format: .tarGzip, to: archive)
            let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: archive)))
            let reference = ArtifactReference(
                url: ArtifactReference.controllerPath(for: SHA256.hash(bytes)),
                sha256: SHA256.hash(bytes),
                size: Int64(bytes.count)
            )
            try await TestFileServer.with { server in
                server.publish(bytes, at: reference.url)
                var configuration = ArtifactFetcher.Configuration(stateDirectory: disk.path, freeSpaceMargin: 0)
                if row.skipFreeSpaceCheck { configuration.freeSpaceOverride = .max }
                let fetcher = ArtifactFetcher(
                    configuration: configuration,
                    client: HTTPClient(),
                    controllerURL: server.baseURL,
                    token: nil,
                    logger: Self.logger
                )
                let extractor = ArchiveExtractor(configuration: .init(synchronize: false, freeSpaceFloor: 0), logger: Self.logger)
                let releases = disk.path + "/releases"
                try FileManager.default.createDirectory(atPath: releases, withIntermediateDirectories: true)
                let destination = releases + "/2-abc"
                try disk.fill(leaving: row.leaving)

                let message: String
                switch row.failsAt {
                case .download:
                    let error = await #expect(throws: ArtifactFetchError.self) { try await fetcher.fetch(reference) }
                    guard case .insufficientSpace(let path, let needed, _)? = error else {
                        Issue.record("expected insufficientSpace, got \(String(describing: error))")
                        return
                    }
                    #expect(path == fetcher.artifactsDirectory)
                    #expect(needed >= reference.size)
                    message = "\(error.map { "\($0)" } ?? "")"
                    #expect(message.hasPrefix("no space left on \(fetcher.artifactsDirectory): need \(DiskSpace.megabytes(needed))"), "\(message)")
                case .extraction:
                    let fetched = try await fetcher.fetch(reference)
                    let error = await #expect(throws: ArchiveError.self) { try await extractor.extract(fetched.path, into: destination) }
                    guard case .noSpace(let path, let needed, let available)? = error else {
                        Issue.record("expected noSpace, got \(String(describing: error))")
                        return
                    }
                    #expect(path == releases)
                    #expect(needed >= 6 << 20, "the whole tree is what is needed, not what was written: \(needed)")
                    #expect(
                        available.map { $0 >= 2 << 20 } == true,
                        "free space is measured once the partial tree is gone: \(String(describing: available))"
                    )
                    message = "\(error.map { "\($0)" } ?? "")"
                    #expect(message.hasPrefix("no space left on \(releases): need 6.3 MB"), "\(message)")
                }
                let part = "\(fetcher.path(for: reference.sha256)).part"
                #expect(FileManager.default.fileExists(atPath: part) == row.keepsPart, "the .part after the failure")
                let left = try FileManager.default.contentsOfDirectory(atPath: releases)
                #expect(left.isEmpty, "no staging or partial release tree: \(left)")

                // Once space is freed, the same steps succeed.
                disk.free()
                let fetched = try await fetcher.fetch(reference)
                let summary = try await extractor.extract(fetched.path, into: destination)
                #expect(summary.entries >= 2)
                #expect(FileManager.default.fileExists(atPath: destination + "/VERSION"))
            }
        }
    }

    /// A tree that would fit only by taking the file system's last free bytes stops at the floor it must leave (2 MiB
    /// here, 64 MiB by default): it used to fill the file system to its last byte, and everything running on it failed
    /// its writes until the partial tree was gone. The error asks for the tree and the floor.
    @Test func anExtractionStopsAtTheFreeSpaceFloor() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-full-disk") { root in
            let disk = try SmallFileSystem.mount(at: root.appendingPathComponent("state").path, megabytes: 8)
            defer { disk.unmount() }
            let archive = root.appendingPathComponent("artifact.tgz").path
            try ArchiveBuilder.write(Self.incompressible(), format: .tarGzip, to: archive)
            let releases = disk.path + "/releases"
            try FileManager.default.createDirectory(atPath: releases, withIntermediateDirectories: true)
            try disk.fill(leaving: 4 << 20)
            let floor: Int64 = 2 << 20
            let extractor = ArchiveExtractor(configuration: .init(synchronize: false, freeSpaceFloor: floor), logger: Self.logger)
            let error = await #expect(throws: ArchiveError.self) { try await extractor.extract(archive, into: releases + "/2-abc") }
            guard case .noSpace(let path, let needed, _)? = error else {
                Issue.record("expected noSpace, got \(String(describing: error))")
                return
            }
            #expect(path == releases)
            #expect(needed >= (3 << 20) + floor, "the tree and the floor: \(needed)")
            #expect(try FileManager.default.contentsOfDirectory(atPath: releases).isEmpty, "no partial tree left")
            // Without the floor the same tree fits.
            let unbounded = ArchiveExtractor(configuration: .init(synchronize: false, freeSpaceFloor: 0), logger: Self.logger)
            #expect(try await unbounded.extract(archive, into: releases + "/2-abc").bytes >= 3 << 20)
        }
    }

    /// The whole agent: a release whose tree does not fit is reported with the no-space error while the running
    /// release keeps serving, and is installed on the next pass after space is freed.
    @Test(
        "a release that does not fit keeps the old one serving, is reported, and installs once space is freed",
        .timeLimit(.minutes(5)),
        arguments: Backend.allCases
    )
    func agentOnAFullDisk(backend: Backend) async throws {
        try await withV1OnASmallDisk(backend: backend) { fleet, mounted, port in
            // v2 downloads in a few kilobytes and extracts to 12 MB: more than the 4 MiB left.
            try mounted.fill(leaving: 4 << 20)
            let archive = fleet.root.appendingPathComponent("web-2.0.0.tgz").path
            let server = try String(
                contentsOf: try fleet.makeArtifact(version: "2.0.0-tree").deletingLastPathComponent()
                    .appendingPathComponent("build-2.0.0-tree/server.js"),
                encoding: .utf8
            )
            try ArchiveBuilder.write(
                [
                    .file("server.js", server), .file("VERSION", "2.0.0"),
                    ArchiveBuilder.Entry(path: "assets.bin", kind: .zeros(12 << 20), mode: 0o644),
                ],
                format: .tarGzip,
                to: archive
            )
            let artifact = try await fleet.controller.upload(URL(fileURLWithPath: archive), token: fleet.operatorToken)
            let (status, body) = try await fleet.controller.publish(
                try fleet.release(serial: 2, version: "2.0.0", artifact: artifact, port: 0),
                token: fleet.operatorToken
            )
            #expect(status == 201, "\(body)")

            let entry = try await eventually("the fleet reports the no-space failure", timeout: .seconds(90)) { () -> JSONValue? in
                let entry = try await fleet.fleetEntry(agent: "edge-1")
                return entry?["message"]?.stringValue?.contains("no space left on") == true ? entry : nil
            }
            let message = entry["message"]?.stringValue ?? ""
            #expect(message.contains("serial 2 (2.0.0) not installed yet: no space left on"), "\(message)")
            #expect(message.contains("need 12.6 MB"), "\(message)")
            #expect(entry["phase"]?.stringValue == "running")
            #expect(entry["serial"]?.intValue == 1)
            #expect(await fleet.appAnswer(port: port)?.hasPrefix("1.0.0") == true, "v1 keeps serving")
            let releases = mounted.path + "/services/web/releases"
            let names = try FileManager.default.contentsOfDirectory(atPath: releases)
            #expect(names.allSatisfy { !$0.contains(".staging-") }, "no staging tree left: \(names)")
            // The passes after it (two seconds apart) do not extract it again, each filling the file system to its last
            // byte: they wait for the space the tree needs.
            let log = try await eventually("the next passes wait for the space", timeout: .seconds(60)) { () -> String? in
                let text = ["agent.err", "agent.out"].map {
                    (try? String(contentsOf: fleet.root.appendingPathComponent("logs/\($0)"), encoding: .utf8)) ?? ""
                }.joined()
                return text.contains("web: serial 2 waits for") ? text : nil
            }
            #expect(log.contains("/services/web/releases to be extracted"), "the wait names where the space is needed")

            mounted.free()
            try await eventually("v2 serving once space is freed", timeout: .seconds(90)) {
                await fleet.appAnswer(port: port)?.hasPrefix("2.0.0") == true ? true : nil
            }
            try await eventually("the fleet shows v2 running") {
                let entry = try await fleet.fleetEntry(agent: "edge-1")
                return entry?["serial"]?.intValue == 2 && entry?["phase"]?.stringValue == "running" ? true : nil
            }
        }
    }

    /// A cached artifact no release keeps (a superseded serial's) fills the disk: the next install collects it before its
    /// download needs the space. Garbage was collected only after an install finished, so the download was refused for
    /// want of the space the agent's own leftover held, on every pass, for ever.
    @Test("an install collects what no release keeps before its download needs the space", .timeLimit(.minutes(5)))
    func anInstallCollectsLeftoversFirst() async throws {
        try await withV1OnASmallDisk(backend: .builtin) { fleet, mounted, port in
            // v2 with a megabyte that gzip cannot shrink: no slack a full disk keeps holds its download.
            let archive = fleet.root.appendingPathComponent("web-2.0.0.tgz").path
            let server = try String(
                contentsOf: try fleet.makeArtifact(version: "2.0.0").deletingLastPathComponent().appendingPathComponent("build-2.0.0/server.js"),
                encoding: .utf8
            )
            var generator = SystemRandomNumberGenerator()
            let blob = (0..<(1 << 20)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            try ArchiveBuilder.write(
                [.file("server.js", server), .file("VERSION", "2.0.0"), ArchiveBuilder.Entry(path: "blob.bin", kind: .file(blob), mode: 0o644)],
                format: .tarGzip,
                to: archive
            )
            let artifact = try await fleet.controller.upload(URL(fileURLWithPath: archive), token: fleet.operatorToken)
            // v1's verdict in (it collects garbage too), before the disk fills.
            try await eventually("v1 healthy", timeout: .seconds(60)) {
                let entry = try await fleet.fleetEntry(agent: "edge-1")
                return entry?["serial"]?.intValue == 1 && entry?["phase"]?.stringValue == "running" ? true : nil
            }
            try await Task.sleep(for: .seconds(1))
            let stray = mounted.path + "/artifacts/" + String(repeating: "ab", count: 32)
            let fd = open(stray, O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
            #expect(fd >= 0)
            let chunk = [UInt8](repeating: 0x5A, count: 64 << 10)
            while chunk.withUnsafeBytes({ write(fd, $0.baseAddress, $0.count) }) > 0 {}
            close(fd)
            #expect(mounted.available < 64 << 10, "the stray artifact filled the disk")
            // Nothing but the next install collects it (v1's own collection is over): the test cannot pass without it.
            try await Task.sleep(for: .seconds(3))
            #expect(FileManager.default.fileExists(atPath: stray), "collected before the install")
            let (status, body) = try await fleet.controller.publish(
                try fleet.release(serial: 2, version: "2.0.0", artifact: artifact, port: 0),
                token: fleet.operatorToken
            )
            #expect(status == 201, "\(body)")
            try await eventually("v2 serving", timeout: .seconds(90)) {
                await fleet.appAnswer(port: port)?.hasPrefix("2.0.0") == true ? true : nil
            }
            #expect(!FileManager.default.fileExists(atPath: stray), "the stray artifact was collected")
        }
    }

    /// The chaos loop's first find (seed 14014, cycle 23): the disk fills while a release is in its health gate, so the
    /// save of its verdict fails. The agent runs the new release, and `state.json` must say so once space is back —
    /// before the fix it kept "pending" until some later change, and a restart went back to the old release.
    @Test(
        "a state save that failed on a full disk is made again once space is freed",
        .timeLimit(.minutes(5)),
        arguments: Backend.allCases
    )
    func stateSaveRetried(backend: Backend) async throws {
        try await withV1OnASmallDisk(backend: backend) { fleet, mounted, port in
            // v2 with an 8 s stable window: once it answers, its verdict is at least 8 s away.
            let artifact = try await fleet.controller.upload(try fleet.makeArtifact(version: "2.0.0"), token: fleet.operatorToken)
            let (status, body) = try await fleet.controller.publish(
                try fleet.release(serial: 2, version: "2.0.0", artifact: artifact, port: 0, stable: 8),
                token: fleet.operatorToken
            )
            #expect(status == 201, "\(body)")
            try await eventually("v2 answering, in its health gate", timeout: .seconds(90), interval: .milliseconds(50)) {
                await fleet.appAnswer(port: port)?.hasPrefix("2.0.0") == true ? true : nil
            }
            try mounted.fill()
            let log = fleet.root.appendingPathComponent("logs/agent.err").path
            try await eventually("the verdict's save fails", timeout: .seconds(60)) {
                // (The debug log outgrows SmallFile's limit under PM2: read it whole.)
                let text = (try? Data(contentsOf: URL(fileURLWithPath: log))).map { String(decoding: $0, as: UTF8.self) } ?? ""
                return text.contains("cannot save the agent state") ? true : nil
            }
            let statePath = mounted.path + "/state.json"
            let onDisk = try StateStore(path: statePath).load()["web"]
            #expect(onDisk.pending?.serial == 2, "state.json still has the install pending while the disk is full")

            mounted.free()
            try await eventually("state.json applies serial 2 once space is freed", timeout: .seconds(60)) { () -> Bool? in
                let service = try StateStore(path: statePath).load()["web"]
                return service.applied?.serial == 2 && service.pending == nil ? true : nil
            }
            #expect(await fleet.appAnswer(port: port)?.hasPrefix("2.0.0") == true)
        }
    }

    /// A release that fails its health gate while the disk is full: the rollback cannot write the restored release's
    /// ecosystem file. Before, the apps were applied from the file left behind, which still described the failed release
    /// (here its env, `GREETING=two`), and nothing ever wrote it again: v1's code ran with v2's settings for good. Now
    /// the rollback says so, applies nothing from the wrong file, and once space is freed the next pass puts the file
    /// back and reloads: v1 answers with v1's settings.
    @Test(
        "a rollback that cannot write its files on a full disk puts them back once space is freed",
        .timeLimit(.minutes(5)),
        arguments: Backend.allCases
    )
    func rollbackFilesPutBackAfterAFullDisk(backend: Backend) async throws {
        try await withV1OnASmallDisk(backend: backend) { fleet, mounted, port in
            // v2 answers until the trigger file appears (after the disk is full), then throws: it fails its stable
            // window, whose 60 s are not over before that however slow the machine. (It used to throw 1.5 s after it
            // started: under PM2 the verdict, and the rollback writing the files, could come before the test filled the
            // disk, and the rollback then had nothing to put back.)
            let trigger = fleet.root.appendingPathComponent("crash-v2").path
            let artifact = try await fleet.controller.upload(
                try fleet.makeArtifact(version: "2.0.0", crashOnceExists: trigger),
                token: fleet.operatorToken
            )
            let (status, body) = try await fleet.controller.publish(
                try fleet.release(
                    serial: 2,
                    version: "2.0.0",
                    artifact: artifact,
                    port: 0,
                    deadline: 120,
                    stable: 60,
                    appOptions: ["env": .object(["GREETING": .string("two")])]
                ),
                token: fleet.operatorToken
            )
            #expect(status == 201, "\(body)")
            try await eventually("v2 answering, in its health gate", timeout: .seconds(90), interval: .milliseconds(50)) {
                await fleet.appAnswer(port: port)?.hasPrefix("2.0.0 two") == true ? true : nil
            }
            try mounted.fill()
            try Data().write(to: URL(fileURLWithPath: trigger))
            let log = fleet.root.appendingPathComponent("logs/agent.err").path
            try await eventually("the rollback cannot put back v1's files", timeout: .seconds(90)) {
                let text = (try? Data(contentsOf: URL(fileURLWithPath: log))).map { String(decoding: $0, as: UTF8.self) } ?? ""
                return text.contains("could not be put back") ? true : nil
            }
            mounted.free()
            try await eventually("v1 answers with v1's settings once space is freed", timeout: .seconds(90)) { () -> Bool? in
                guard let answer = await fleet.appAnswer(port: port) else { return nil }
                return answer.hasPrefix("1.0.0 ") && !answer.contains("two") ? true : nil
            }
            let ecosystem = try String(contentsOfFile: mounted.path + "/services/web/ecosystem.json", encoding: .utf8)
            #expect(!ecosystem.contains("GREETING"), "the ecosystem file is v1's again")
            try await eventually("the fleet shows v2 rolled back to v1") {
                let entry = try await fleet.fleetEntry(agent: "edge-1")
                return entry?["serial"]?.intValue == 1 && entry?["phase"]?.stringValue == "rolled-back" ? true : nil
            }
        }
    }

    /// Runs `body` once v1 of `web` answers on `port`, from an agent (`edge-1`, long-polls of 2 s, no free-space margin)
    /// whose state directory is a 16 MiB tmpfs. Unmounts it and removes the fleet's directory afterwards — also when
    /// `body` throws, so a failing test leaves no mount behind (the fleet cannot remove a directory holding one).
    private func withV1OnASmallDisk(backend: Backend, _ body: (FleetFixture, SmallFileSystem, Int) async throws -> Void) async throws {
        _ = try backend.pm2Binary()
        var disk: SmallFileSystem?
        var root: URL?
        defer {
            disk?.unmount()
            if let root { try? FileManager.default.removeItem(at: root) }
        }
        try await FleetFixture.with { fleet in
            root = fleet.root
            let mounted = try SmallFileSystem.mount(at: fleet.root.appendingPathComponent("edge-1/state").path, megabytes: 16)
            disk = mounted
            try await fleet.startController()
            let port = try freeLoopbackPort()
            try await fleet.publish(serial: 1, version: "1.0.0", port: 0)
            let config = try await fleet.enrollAgent(name: "edge-1", longPollSeconds: 2, backend: backend, instanceEnv: ["PORT": "\(port)"])
            _ = try fleet.startAgent(config: config, label: "agent", environment: ["FERRY_TEST_FREE_SPACE_MARGIN": "0"])
            try await eventually("v1 serving", timeout: .seconds(90)) { await fleet.appAnswer(port: port)?.hasPrefix("1.0.0") == true ? true : nil }
            try await body(fleet, mounted, port)
        }
    }
}
