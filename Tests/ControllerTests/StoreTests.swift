import Foundation
import Shared
import TestSupport
import Testing

@testable import Controller

@Suite struct StoreTests {
    static func open(_ directory: URL) async throws -> SQLiteControllerStore {
        try await SQLiteControllerStore.open(.init(path: directory.appendingPathComponent("ferry.sqlite").path), logger: ControllerFixture.logger)
    }

    static func record(serial: Int64, service: String = "api") throws -> ReleaseRecord {
        let digest = SHA256.hash([1])
        let release = ControllerFixture.release(
            service: service,
            serial: serial,
            artifact: ArtifactReference(url: ArtifactReference.controllerPath(for: digest), sha256: digest, size: 1)
        )
        let envelope = try Envelope.sign(payload: release.payload(), payloadType: Release.payloadType, with: [SigningKey.generate()])
        return ReleaseRecord(
            service: service,
            serial: serial,
            version: release.version,
            artifactSHA256: digest.hex,
            artifactSize: 1,
            envelope: envelope,
            publishedBy: "alice",
            createdAt: Date()
        )
    }

    @Test func migrationsAreRecordedAndReopeningKeepsData() async throws {
        try await TestPaths.withTemporaryDirectory { directory in
            let store = try await Self.open(directory)
            try await store.createToken(hash: Token.digest("fyt_a"), name: "alice", role: .operator, at: Date())
            try await store.insertRelease(try Self.record(serial: 1))
            try await store.close()
            let reopened = try await Self.open(directory)
            let principal = try await reopened.principal(forTokenHash: Token.digest("fyt_a"))
            #expect(principal?.role == .operator && principal?.name == "alice" && principal?.agentID == nil)
            #expect(try await reopened.latestSerial(service: "api") == 1)
            try await reopened.close()
        }
    }

    @Test func aDatabaseFromANewerFerryIsRefused() async throws {
        try await TestPaths.withTemporaryDirectory { directory in
            let store = try await Self.open(directory)
            try await store.close()
            // Pretend a newer binary migrated the file.
            let sqlite = try await CommandRunner.run(
                CommandRunner.Request(
                    executable: "/usr/bin/env",
                    arguments: [
                        "python3", "-c",
                        "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute(\"INSERT INTO ferry_schema VALUES (99, 'future', 0)\"); c.commit()",
                        directory.appendingPathComponent("ferry.sqlite").path,
                    ],
                    environment: ProcessInfo.processInfo.environment,
                    timeout: .seconds(30)
                )
            )
            try #require(sqlite.termination == .exited(0), "\(String(decoding: sqlite.standardError, as: UTF8.self))")
            await #expect(
                throws: StoreError.schemaTooNew(
                    path: directory.appendingPathComponent("ferry.sqlite").path,
                    found: 99,
                    known: SchemaMigrations.latestVersion
                )
            ) {
                _ = try await Self.open(directory)
            }
        }
    }

    @Test func racingPublishersGetOneSuccessPerSerial() async throws {
        try await TestPaths.withTemporaryDirectory { directory in
            let store = try await Self.open(directory)
            let records = try (0..<20).map { _ in try Self.record(serial: 1) }
            let outcomes = await withTaskGroup(of: Bool.self) { group in
                for record in records {
                    group.addTask {
                        do {
                            try await store.insertRelease(record)
                            return true
                        } catch {
                            return false
                        }
                    }
                }
                var results: [Bool] = []
                for await result in group { results.append(result) }
                return results
            }
            #expect(outcomes.filter { $0 }.count == 1)
            await #expect(throws: StoreError.staleSerial(service: "api", serial: 1, latest: 1)) { try await store.insertRelease(records[0]) }
            try await store.insertRelease(try Self.record(serial: 2))
            try await store.insertRelease(try Self.record(serial: 1, service: "web"))
            #expect(try await store.latestReleases(for: ["api", "web", "none"]).map { "\($0.service)/\($0.serial)" } == ["api/2", "web/1"])
            try await store.close()
        }
    }

    @Test func statusOfAnUnknownAgentIsRefused() async throws {
        try await TestPaths.withTemporaryDirectory { directory in
            let store = try await Self.open(directory)
            let report = StatusReport(agentVersion: "1", hostname: "h", processManager: "pm2", services: [])
            await #expect(throws: StoreError.unknownAgent("agt_nope")) {
                try await store.recordStatus(report, agentID: "agt_nope", receivedAt: Date(), historyLimit: 5)
            }
            try await store.close()
        }
    }
}
