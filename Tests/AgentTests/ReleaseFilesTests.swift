import Foundation
import Shared
import TestSupport
import Testing

@testable import Agent

@Suite("Release files: current switch, leftovers, garbage collection")
struct ReleaseFilesTests {
    @Test func keepsTheProtectedReleasesAndTheNewestOthers() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-gc") { dir in
            let files = ReleaseFiles(layout: AgentLayout(stateDir: dir.path))
            try files.createDirectories(services: ["web"])
            let releases = files.layout.releasesDir("web")
            for serial in 1...9 {
                try FileManager.default.createDirectory(atPath: "\(releases)/\(serial)-abcdefabcdef", withIntermediateDirectories: true)
            }
            try files.switchCurrent("web", to: "9-abcdefabcdef")
            // 9 is applied, 2 is the previous one (after a rollback, say): both stay whatever their age.
            files.collectReleases("web", protected: ["9-abcdefabcdef", "2-abcdefabcdef"], keep: 3)
            let left = try FileManager.default.contentsOfDirectory(atPath: releases).sorted()
            #expect(left == ["2-abcdefabcdef", "6-abcdefabcdef", "7-abcdefabcdef", "8-abcdefabcdef", "9-abcdefabcdef"])
            #expect(files.currentDirectoryName("web") == "9-abcdefabcdef")
        }
    }

    /// A collected release leaves its name before a file of it is deleted: deleted in place and cut short (the agent
    /// killed, a power loss), a tree kept the release's name, and the same serial offered again was taken as extracted
    /// and activated incomplete. What a collection cut short leaves is no release and goes at the next collection (or
    /// start).
    @Test func aCollectedReleaseLeavesItsNameBeforeAnyOfItIsDeleted() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-gc") { dir in
            let files = ReleaseFiles(layout: AgentLayout(stateDir: dir.path))
            try files.createDirectories(services: ["web"])
            let releases = files.layout.releasesDir("web")
            let manager = FileManager.default
            for serial in 1...3 {
                try manager.createDirectory(atPath: "\(releases)/\(serial)-abcdefabcdef/node_modules/x", withIntermediateDirectories: true)
                try Data("module.exports = 1\n".utf8).write(to: URL(fileURLWithPath: "\(releases)/\(serial)-abcdefabcdef/node_modules/x/index.js"))
            }
            // A collection of serial 0 cut short earlier: what is left is under the staging name, half deleted.
            try manager.createDirectory(atPath: "\(releases)/0-abcdefabcdef.staging-removed/node_modules", withIntermediateDirectories: true)
            // An extraction in progress (a staging name of its own) is no release and no leftover of a collection.
            try manager.createDirectory(atPath: "\(releases)/4-abcdefabcdef.staging-0011223344556677/x", withIntermediateDirectories: true)

            files.collectReleases("web", protected: ["3-abcdefabcdef"], keep: 0)
            let left = try manager.contentsOfDirectory(atPath: releases).sorted()
            #expect(left == ["3-abcdefabcdef", "4-abcdefabcdef.staging-0011223344556677"], "\(left)")
            #expect(!manager.fileExists(atPath: "\(releases)/0-abcdefabcdef.staging-removed"), "the leftover went")
        }
    }

    @Test func collectsArtifactsNotInUseAndStalePartialDownloads() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-gc") { dir in
            let files = ReleaseFiles(layout: AgentLayout(stateDir: dir.path))
            try files.createDirectories(services: ["web"])
            let artifacts = files.layout.artifactsDir
            let keep = String(repeating: "a", count: 64)
            let old = String(repeating: "b", count: 64)
            for name in [keep, old, "\(old).part", "\(keep).part"] {
                try Data("x".utf8).write(to: URL(fileURLWithPath: "\(artifacts)/\(name)"))
            }
            // What the fetcher never writes stays: a volume's lost+found (a directory, with files), an operator's note.
            try FileManager.default.createDirectory(atPath: "\(artifacts)/lost+found/#1234", withIntermediateDirectories: true)
            try Data("x".utf8).write(to: URL(fileURLWithPath: "\(artifacts)/README"))
            files.collectArtifacts(keep: [keep])
            #expect(try FileManager.default.contentsOfDirectory(atPath: artifacts).sorted() == ["README", keep, "\(keep).part", "lost+found"])
            #expect(FileManager.default.fileExists(atPath: "\(artifacts)/lost+found/#1234"))
        }
    }

    /// A service no longer configured keeps its applied release's tree (its apps may still run) but no file that holds
    /// their env: the ecosystem file and single-app files go.
    @Test func anUnconfiguredServiceWithAReleaseKeepsNoFileHoldingItsEnv() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-gc") { dir in
            let files = ReleaseFiles(layout: AgentLayout(stateDir: dir.path))
            try files.createDirectories(services: ["api"])
            let manager = FileManager.default
            try manager.createDirectory(atPath: "\(files.layout.releasesDir("api"))/3-abcdefabcdef", withIntermediateDirectories: true)
            try Data("{}".utf8).write(to: URL(fileURLWithPath: files.layout.ecosystemFile("api")))
            let single = files.layout.singleAppFilesDir("api")
            try manager.createDirectory(atPath: single, withIntermediateDirectories: true)
            try Data("{}".utf8).write(to: URL(fileURLWithPath: "\(single)/my_api.json"))
            files.removeUnconfiguredService("api", keeping: "3-abcdefabcdef")
            #expect(!manager.fileExists(atPath: files.layout.ecosystemFile("api")))
            #expect(try manager.contentsOfDirectory(atPath: single).isEmpty)
            #expect(try manager.contentsOfDirectory(atPath: files.layout.releasesDir("api")) == ["3-abcdefabcdef"])
        }
    }

    /// An unconfigured service's directory leaves its name before any of it is deleted, as a collected release does: a
    /// removal cut short left a half-deleted tree under its release's name, which the same serial, the service
    /// configured again, activated as extracted. What a removal cut short leaves (a hidden staging name) goes at start.
    @Test func anUnconfiguredServiceLeavesItsNameBeforeAnyOfItIsDeleted() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-gc") { dir in
            let files = ReleaseFiles(layout: AgentLayout(stateDir: dir.path))
            try files.createDirectories(services: ["web", "api"])
            let manager = FileManager.default
            try manager.createDirectory(atPath: "\(files.layout.releasesDir("api"))/3-abcdefabcdef/node_modules/x", withIntermediateDirectories: true)
            // A removal of `old` cut short earlier.
            let leftover = "\(files.layout.servicesDir)/.old\(ReleaseFiles.collectedSuffix)"
            try manager.createDirectory(atPath: "\(leftover)/releases/1-abcdefabcdef/node_modules", withIntermediateDirectories: true)
            #expect(files.unconfiguredServices(configured: ["web"]) == ["api"], "a staging name is no service")
            files.removeUnconfiguredService("api", keeping: nil)
            #expect(!manager.fileExists(atPath: files.layout.serviceDir("api")))
            #expect(!manager.fileExists(atPath: "\(files.layout.servicesDir)/.api\(ReleaseFiles.collectedSuffix)"))
            files.removeLeftovers(services: ["web"], keepDigests: [])
            #expect(try manager.contentsOfDirectory(atPath: files.layout.servicesDir) == ["web"])
        }
    }

    /// A `.part` being written by a fetch (`ferry-agent fetch` next to the daemon) holds its lock and is left alone by
    /// both clean-ups; once unlocked, it goes.
    @Test func aPartialDownloadInProgressIsNeverRemoved() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-gc") { dir in
            let files = ReleaseFiles(layout: AgentLayout(stateDir: dir.path))
            try files.createDirectories(services: ["web"])
            let part = "\(files.layout.artifactsDir)/\(String(repeating: "e", count: 64)).part"
            try Data("x".utf8).write(to: URL(fileURLWithPath: part))
            let fd = open(part, O_RDWR | O_CLOEXEC)
            try #require(fd >= 0)
            try #require(flock(fd, LOCK_EX | LOCK_NB) == 0)
            files.collectArtifacts(keep: [])
            files.removeLeftovers(services: ["web"], keepDigests: [])
            #expect(FileManager.default.fileExists(atPath: part), "removed under the fetch writing it")
            close(fd)
            // Unlocked once no descriptor of ours holds it: a process another test spawns meanwhile holds a copy of every
            // descriptor between its fork and its exec (close-on-exec closes it only then), and the lock with it.
            let deadline = ContinuousClock.now + .seconds(10)
            while ContinuousClock.now < deadline {
                let probe = open(part, O_RDONLY | O_CLOEXEC)
                defer { close(probe) }
                if flock(probe, LOCK_EX | LOCK_NB) == 0 { break }
                try await Task.sleep(for: .milliseconds(10))
            }
            files.collectArtifacts(keep: [])
            #expect(!FileManager.default.fileExists(atPath: part))
        }
    }

    @Test func leftoversOfACrashAreRemovedButAResumableDownloadIsKept() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-gc") { dir in
            let files = ReleaseFiles(layout: AgentLayout(stateDir: dir.path))
            try files.createDirectories(services: ["web"])
            let releases = files.layout.releasesDir("web")
            try FileManager.default.createDirectory(atPath: "\(releases)/3-abcdefabcdef.staging-1234", withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: "\(releases)/2-abcdefabcdef", withIntermediateDirectories: true)
            let pending = String(repeating: "c", count: 64)
            let stale = String(repeating: "d", count: 64)
            try Data("x".utf8).write(to: URL(fileURLWithPath: "\(files.layout.artifactsDir)/\(pending).part"))
            try Data("x".utf8).write(to: URL(fileURLWithPath: "\(files.layout.artifactsDir)/\(stale).part"))
            try Data("x".utf8).write(to: URL(fileURLWithPath: "\(dir.path)/state.json.tmp-99-1"))
            // A single-app file pm2 was given (it holds the app's env) and the temporary file of one cut short.
            let single = files.layout.singleAppFilesDir("web")
            try FileManager.default.createDirectory(atPath: single, withIntermediateDirectories: true)
            for name in ["my_api.json", "my_api.json.tmp-99-2"] { try Data("{}".utf8).write(to: URL(fileURLWithPath: "\(single)/\(name)")) }
            files.removeLeftovers(services: ["web"], keepDigests: [pending])
            #expect(try FileManager.default.contentsOfDirectory(atPath: single).isEmpty, "no copy of an app's env outlives its call")
            #expect(try FileManager.default.contentsOfDirectory(atPath: releases) == ["2-abcdefabcdef"])
            #expect(try FileManager.default.contentsOfDirectory(atPath: files.layout.artifactsDir) == ["\(pending).part"])
            #expect(!FileManager.default.fileExists(atPath: "\(dir.path)/state.json.tmp-99-1"))
        }
    }
}
