import Foundation
import Shared
import Synchronization
import TestSupport
import Testing

@testable import Controller

/// Tokens in the store (SQLite and PostgreSQL): migration 3 of an older database, what the store refuses to create, and enrolment
/// consuming uses in its own transaction.
@Suite struct SQLiteControllerStoreTokensTests {
    /// A database written by the previous schema (migrations 1 and 2) with an operator and an enroll token is opened
    /// by this version: both keep working, get public ids, and the old enroll token may enroll for any service.
    @Test(arguments: StoreBackendKind.available)
    func migrationThreeKeepsOlderTokensWorking(_ kind: StoreBackendKind) async throws {
        try await TestStore.withLocation(kind) { location in
            var script = [location.dialect.schemaStatement(SchemaMigrations.versionTable)]
            for migration in SchemaMigrations.all where migration.version <= 2 {
                script += migration.statements(for: location.dialect)
                script.append("INSERT INTO ferry_schema VALUES (\(migration.version), 'old', 0)")
            }
            script.append("INSERT INTO tokens (hash, name, role, created_at) VALUES ('\(Token.digest("fyt_op"))', 'ci', 'operator', 1000)")
            script.append("INSERT INTO tokens (hash, name, role, created_at) VALUES ('\(Token.digest("fyt_en"))', 'fleet', 'enroll', 2000)")
            try await location.execute(script)

            let store = try await location.open()
            let tokens = try await store.tokens()
            #expect(tokens.map(\.name) == ["ci", "fleet"])
            #expect(tokens.allSatisfy { Token.isWellFormedID($0.id) })
            #expect(Set(tokens.map(\.id)).count == 2)
            #expect(tokens.map(\.scope) == [nil, .anyService])
            #expect(tokens.map(\.createdAt) == [StoredTime.date(1000), StoredTime.date(2000)])
            let enroll = try #require(try await store.credential(forTokenHash: Token.digest("fyt_en")))
            #expect(enroll.principal.role == .enroll && enroll.principal.scope == .anyService && enroll.revokedAt == nil)
            #expect(try await store.principal(forTokenHash: Token.digest("fyt_op"))?.role == .operator)
            try await store.close()
        }
    }

    /// What the store refuses to create, whatever the caller: one row per mistake.
    static let invalidTokens: [(String, TokenRecord)] = [
        ("an agent token", TokenRecord(id: "tok_0000000000000001", name: "x", role: .agent, createdAt: Date())),
        ("an enroll token without a scope", TokenRecord(id: "tok_0000000000000002", name: "x", role: .enroll, createdAt: Date())),
        (
            "an enroll scope naming no service",
            TokenRecord(id: "tok_0000000000000003", name: "x", role: .enroll, scope: .services([]), createdAt: Date())
        ),
        ("a scoped operator token", TokenRecord(id: "tok_0000000000000004", name: "x", role: .operator, scope: .anyService, createdAt: Date())),
        ("a viewer token with a use limit", TokenRecord(id: "tok_0000000000000005", name: "x", role: .viewer, createdAt: Date(), maxUses: 3)),
        (
            "a use limit of zero",
            TokenRecord(id: "tok_0000000000000006", name: "x", role: .enroll, scope: .anyService, createdAt: Date(), maxUses: 0)
        ),
        ("a malformed id", TokenRecord(id: "fyt_0000000000000007", name: "x", role: .viewer, createdAt: Date())),
    ]

    @Test(arguments: StoreBackendKind.available)
    func invalidTokensAreRefused(_ kind: StoreBackendKind) async throws {
        try await TestStore.with(kind) { store, _ in
            for (what, record) in Self.invalidTokens {
                await #expect(throws: StoreError.self, "\(what)") { try await store.createToken(record, hash: Token.digest(Token.generate())) }
            }
            #expect(try await store.tokens().isEmpty)
            try await store.close()
        }
    }

    /// A refused enrolment uses nothing of its token; only the operator's replace touches an existing agent.
    @Test(arguments: StoreBackendKind.available)
    func enrolmentConsumesUsesOnlyWhenItSucceeds(_ kind: StoreBackendKind) async throws {
        try await TestStore.with(kind) { store, _ in
            let token = try await store.createToken(
                hash: Token.digest(Token.generate()),
                name: "two",
                role: .enroll,
                scope: .anyService,
                maxUses: 2,
                at: Date()
            )
            func enroll(
                _ name: String,
                _ mode: EnrollmentMode,
                services: [String] = ["api"]
            ) async throws -> (agent: AgentRecord, replaced: Bool, repeated: Bool) {
                try await store.enrollAgent(
                    proposedID: AgentRoutes.newAgentID(),
                    name: name,
                    hostname: name,
                    services: services,
                    tokenHash: Token.digest(Token.generate()),
                    mode: mode,
                    instanceID: nil,
                    at: Date()
                )
            }
            let first = try await enroll("a", .create(consumingToken: token.id))
            #expect(!first.replaced)
            await #expect(throws: StoreError.agentExists(name: "a", id: first.agent.id)) {
                _ = try await enroll("a", .create(consumingToken: token.id), services: ["worker"])
            }
            #expect(try await store.tokens().first?.uses == 1)
            #expect(try await store.agent(id: first.agent.id)?.services == ["api"])
            _ = try await enroll("b", .create(consumingToken: token.id))
            await #expect(throws: StoreError.tokenUnusable(id: token.id, reason: .usedUp(maxUses: 2))) {
                _ = try await enroll("c", .create(consumingToken: token.id))
            }
            #expect(try await store.agents().map(\.name) == ["a", "b"])
            let replaced = try await enroll("a", .replace, services: ["api", "worker"])
            #expect(replaced.replaced && replaced.agent.id == first.agent.id && replaced.agent.services == ["api", "worker"])
            #expect(try await store.removeAgent(name: "a")?.id == first.agent.id)
            #expect(try await store.removeAgent(name: "a") == nil)
            try await store.close()
        }
    }

    /// An agent that chose its token (its digest in the request) and lost the answer enrolls again with the same
    /// digest: the same agent is answered, nothing written, no use consumed — also once the token is used up. A
    /// different digest, other services, or another proven instance is a taken name as before; the digest under another
    /// name is `tokenInUse`.
    @Test(arguments: StoreBackendKind.available)
    func aRepeatedEnrolmentIsAnsweredAgain(_ kind: StoreBackendKind) async throws {
        try await TestStore.with(kind) { store, _ in
            let token = try await store.createToken(
                hash: Token.digest(Token.generate()),
                name: "once",
                role: .enroll,
                scope: .anyService,
                maxUses: 1,
                at: Date()
            )
            let digest = Token.digest(Token.generate())
            func enroll(
                name: String = "a",
                tokenHash: String = digest,
                services: [String] = ["api"],
                instance: String? = "i-0123456789abcdef0"
            ) async throws -> (agent: AgentRecord, replaced: Bool, repeated: Bool) {
                try await store.enrollAgent(
                    proposedID: AgentRoutes.newAgentID(),
                    name: name,
                    hostname: name,
                    services: services,
                    tokenHash: tokenHash,
                    mode: .create(consumingToken: token.id),
                    instanceID: instance,
                    at: Date()
                )
            }
            let first = try await enroll()
            #expect(!first.repeated && !first.replaced)
            for retry in [try await enroll(), try await enroll(instance: nil)] {
                #expect(retry.repeated && !retry.replaced && retry.agent == first.agent)
            }
            #expect(try await store.tokens().first?.uses == 1, "the retries consumed nothing")
            let refusals: [(tokenHash: String, services: [String], instance: String?)] = [
                (Token.digest(Token.generate()), ["api"], nil),
                (digest, ["api", "worker"], nil),
                (digest, ["api"], "i-0fedcba9876543210"),
            ]
            for refusal in refusals {
                // The token's one use is spent: a new enrolment is refused for that, before the name is looked at.
                await #expect(throws: StoreError.tokenUnusable(id: token.id, reason: .usedUp(maxUses: 1))) {
                    _ = try await enroll(tokenHash: refusal.tokenHash, services: refusal.services, instance: refusal.instance)
                }
            }
            // The same digest under another name (an earlier run enrolled as "a" and lost the answer): refused by name.
            await #expect(throws: StoreError.tokenInUse) { _ = try await enroll(name: "b", instance: nil) }
            #expect(try await store.agents().map(\.id) == [first.agent.id])
            try await store.close()
        }
    }

    /// A read that starts after a write committed sees it, however many other reads run meanwhile. With SQLite, reads
    /// that overlapped on one shared connection all read the snapshot the first of them took, so under steady load (the
    /// fleet's polls) an agent's first request right after its enrolment found no token (401) — seen with
    /// `scripts/bench-fleet 10000`. Four tasks read without pause while 300 agents are enrolled one by one, each looked
    /// up by its token the moment its enrolment returns.
    @Test(arguments: StoreBackendKind.available)
    func readAfterCommitSeesTheWriteUnderConcurrentReads(_ kind: StoreBackendKind) async throws {
        try await TestStore.with(kind) { store, _ in
            let missed = try await withThrowingTaskGroup(of: Int.self) { group in
                let done = StopFlag()
                for _ in 0..<4 {
                    group.addTask {
                        while !done.isSet {
                            _ = try await store.credential(forTokenHash: Token.digest(Token.generate()))
                            _ = try await store.agents()
                        }
                        return 0
                    }
                }
                group.addTask {
                    defer { done.set() }
                    var missed = 0
                    for index in 0..<300 {
                        let token = Token.generate()
                        _ = try await store.enrollAgent(
                            proposedID: AgentRoutes.newAgentID(),
                            name: "agent-\(index)",
                            hostname: "agent-\(index)",
                            services: ["api"],
                            tokenHash: Token.digest(token),
                            mode: .create(consumingToken: nil),
                            instanceID: nil,
                            at: Date()
                        )
                        if try await store.credential(forTokenHash: Token.digest(token)) == nil { missed += 1 }
                    }
                    return missed
                }
                return try await group.reduce(0, +)
            }
            #expect(missed == 0, "enrolled agents whose token a read right after the commit did not find")
            try await store.close()
        }
    }
}

/// Tells the readers of a concurrency test to stop.
private final class StopFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    var isSet: Bool { flag.load(ordering: .acquiring) }
    func set() { flag.store(true, ordering: .releasing) }
}
