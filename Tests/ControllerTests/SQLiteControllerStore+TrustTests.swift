import Foundation
import Shared
import TestSupport
import Testing

@testable import Controller

/// Trust roots and approvals in the store: migration 5 of an older SQLite database, and on both backends the
/// next-version check and the compare-and-set of an approval.
@Suite struct SQLiteControllerStoreTrustTests {
    static func rootRecord(version: Int64, signer: SigningKey) throws -> TrustRootRecord {
        let envelope = try TestRoots.root(version: version, rootKeys: [signer], releaseKeys: [signer], signers: [signer])
        return TrustRootRecord(
            version: version,
            envelope: envelope,
            sha256: SHA256.hash(envelope.payload).hex,
            expiresAt: Date().addingTimeInterval(86_400),
            publishedBy: "alice",
            publishedAt: Date()
        )
    }

    /// A database of schema 3 with a release is opened by this version: the release met its threshold when it was
    /// published, so it stays served (0 signatures required), and agents report no trust root yet.
    @Test func migrationFiveKeepsOlderReleasesServed() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-migration") { directory in
            let path = directory.appendingPathComponent("ferry.sqlite").path
            var script = [SchemaMigrations.versionTable]
            for migration in SchemaMigrations.all where migration.version <= 3 {
                script += migration.statements
                script.append("INSERT INTO ferry_schema VALUES (\(migration.version), 'old', 0)")
            }
            let record = try StoreTests.record(serial: 5)
            let envelopeText = String(decoding: record.envelope.encoded(), as: UTF8.self).replacingOccurrences(of: "'", with: "''")
            script.append(
                """
                INSERT INTO releases (service, serial, version, artifact_sha256, artifact_size, envelope, published_by, created_at)
                VALUES ('api', 5, '\(record.version)', '\(record.artifactSHA256)', 1, '\(envelopeText)', 'alice', 1000)
                """
            )
            script.append(
                "INSERT INTO agents (id, name, hostname, services, token_hash, enrolled_at) VALUES ('agt_1', 'web-1', 'h', '[\"api\"]', 'x', 1)"
            )
            let sqlFile = directory.appendingPathComponent("v3.sql")
            try script.map { $0 + ";\n" }.joined().write(to: sqlFile, atomically: true, encoding: .utf8)
            let python = try await CommandRunner.run(
                CommandRunner.Request(
                    executable: "/usr/bin/env",
                    arguments: [
                        "python3", "-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.executescript(open(sys.argv[2]).read()); c.commit()",
                        path, sqlFile.path,
                    ],
                    environment: ProcessInfo.processInfo.environment,
                    timeout: .seconds(30)
                )
            )
            try #require(python.termination == .exited(0), "\(String(decoding: python.standardError, as: UTF8.self))")

            let store = try await StoreTests.open(directory)
            let release = try #require(try await store.releases(service: "api", limit: 1).first)
            #expect(release.signedBy == [] && release.signaturesRequired == 0 && !release.isAwaitingApproval)
            #expect(release.envelope == record.envelope)
            let agent = try #require(try await store.agent(id: "agt_1"))
            #expect(agent.trustRootVersion == nil && agent.trustRootProblem == nil)
            #expect(try await store.trustRoots().isEmpty)
            #expect(try await store.latestTrustRootVersion() == nil)
            try await store.close()
        }
    }

    @Test(arguments: StoreBackendKind.available)
    func rootsAreStoredOneVersionAtATime(_ kind: StoreBackendKind) async throws {
        try await TestStore.with(kind) { store, _ in
            let key = try SigningKey.generate()
            // The first stored root may be any version (a fleet pinned from flags may start its chain at 2).
            try await store.insertTrustRoot(try Self.rootRecord(version: 2, signer: key))
            await #expect(throws: StoreError.staleRootVersion(version: 2, latest: 2)) {
                try await store.insertTrustRoot(try Self.rootRecord(version: 2, signer: key))
            }
            await #expect(throws: StoreError.staleRootVersion(version: 4, latest: 2)) {
                try await store.insertTrustRoot(try Self.rootRecord(version: 4, signer: key))
            }
            let third = try Self.rootRecord(version: 3, signer: key)
            try await store.insertTrustRoot(third)
            let roots = try await store.trustRoots()
            #expect(roots.map(\.version) == [2, 3])
            #expect(roots.last?.envelope == third.envelope && roots.last?.sha256 == third.sha256)
            #expect(try await store.latestTrustRootVersion() == 3)
            try await store.close()
        }
    }

    /// Two approvals decided from the same stored signers: one is written, the other finds the release changed.
    @Test(arguments: StoreBackendKind.available)
    func approvalsAreCompareAndSet(_ kind: StoreBackendKind) async throws {
        try await TestStore.with(kind) { store, _ in
            var record = try StoreTests.record(serial: 1)
            record.signedBy = ["k1"]
            record.signaturesRequired = 2
            let plan = RolloutPlan(parameters: RolloutParameters(), agentOrder: ["agt_1"])
            let published = try await store.insertRelease(record, rollout: RolloutStateMachine.publish(record, plan: plan))
            #expect(published.rollout.state == .awaitingApproval)

            func approval(by key: String) throws -> ReleaseApproval {
                var machine = RolloutStateMachine(published.rollout)
                guard
                    case .persist(let transition) = try machine.approved(
                        by: "bob",
                        newKeys: [key],
                        signedBy: ["k1", key],
                        required: 2,
                        agentOrder: published.rollout.agentOrder,
                        at: Date()
                    )
                else { throw FixtureError("no transition") }
                return ReleaseApproval(
                    service: "api",
                    serial: 1,
                    envelope: record.envelope,
                    signedBy: ["k1", key],
                    previousSignedBy: ["k1"],
                    signaturesRequired: 2,
                    transition: transition
                )
            }
            #expect(try await store.recordApproval(try approval(by: "k2")))
            #expect(try await !store.recordApproval(try approval(by: "k3")))
            let stored = try #require(try await store.releases(service: "api", limit: 1).first)
            #expect(stored.signedBy == ["k1", "k2"])
            #expect(try await store.currentRollouts(for: ["api"]).first?.state == .completed)
            #expect(try await store.events(service: "api", limit: 10).filter { $0.kind == .approved }.count == 1)
            try await store.close()
        }
    }
}
