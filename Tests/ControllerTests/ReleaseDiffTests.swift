import Foundation
import Shared
import Testing

@testable import Controller

@Suite("plan: what a publish would change")
struct ReleaseDiffTests {
    static let digestA = SHA256.hash(Array("a".utf8))
    static let digestB = SHA256.hash(Array("b".utf8))

    static func release(
        version: String = "1.0.0",
        digest: SHA256Digest = digestA,
        size: Int64 = 2048,
        env: [String: String] = ["NODE_ENV": "production", "SECRET": "hunter2"],
        apps: [PM2App] = [PM2App(name: "api", script: "server.js", options: ["instances": .integer(2), "env": .object(["PORT": .string("3000")])])]
    ) -> Release {
        Release(
            service: "api",
            serial: 1,
            version: version,
            createdAt: Date(),
            expiresAt: Date().addingTimeInterval(3600),
            artifact: ArtifactReference(url: ArtifactReference.controllerPath(for: digest), sha256: digest, size: size),
            env: env,
            pm2: PM2Config(apps: apps)
        )
    }

    @Test func envChangesAreNamedNeverShown() {
        let before = Self.release()
        let after = Self.release(version: "1.1.0", env: ["NODE_ENV": "production", "SECRET": "correct horse", "NEW_FLAG": "1"])
        let diff = ReleaseDiff(from: before, to: after)
        #expect(diff.envAdded == ["NEW_FLAG"])
        #expect(diff.envChanged == ["SECRET"])
        #expect(diff.envRemoved == [])
        let text = diff.lines().joined(separator: "\n")
        #expect(text.contains("release env changed: SECRET"))
        #expect(!text.contains("hunter2") && !text.contains("correct horse"), "values never printed: \(text)")
    }

    @Test func instanceCountAndScriptChangesSayTheyCostARestart() throws {
        let before = Self.release()
        let after = Self.release(
            version: "2.0.0",
            digest: Self.digestB,
            size: 4 << 20,
            apps: [PM2App(name: "api", script: "dist/server.js", options: ["instances": .string("max"), "max_memory_restart": .string("300M")])]
        )
        let diff = ReleaseDiff(from: before, to: after)
        #expect(diff.artifactChanged)
        let app = try #require(diff.apps.first)
        #expect(app.options == ["script", "max_memory_restart"])
        #expect(app.instances?.from == "2" && app.instances?.to == "max")
        #expect(app.envRemoved == ["PORT"])
        #expect(app.restartReason == "script, instance count changed: delete + start (a restart)")
        let text = diff.lines().joined(separator: "\n")
        #expect(text.contains("artifact: 2.0 KiB -> 4.0 MiB"))
        #expect(text.contains("version: 1.0.0 -> 2.0.0"))
    }

    @Test func appsAddedAndRemoved() {
        let before = Self.release(apps: [PM2App(name: "api", script: "a.js"), PM2App(name: "worker", script: "w.js")])
        let after = Self.release(apps: [PM2App(name: "api", script: "a.js"), PM2App(name: "cron", script: "c.js")])
        let diff = ReleaseDiff(from: before, to: after)
        #expect(diff.apps.map(\.name) == ["cron", "worker"])
        #expect(diff.apps.map(\.kind) == ["added", "removed"])
    }

    @Test func anAgentWithNothingInstalledGetsEverything() {
        let diff = ReleaseDiff(from: nil, to: Self.release())
        #expect(diff.versionFrom == nil)
        #expect(diff.apps.map(\.kind) == ["added"])
        #expect(diff.lines().first == "  version: (nothing installed) -> 1.0.0")
    }

    @Test func sameContentSaysSo() {
        let diff = ReleaseDiff(from: Self.release(), to: Self.release(version: "1.0.1"))
        #expect(diff.lines().last == "  (no change besides the version)")
    }
}
