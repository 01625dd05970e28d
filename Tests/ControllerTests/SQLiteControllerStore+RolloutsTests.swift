import Foundation
import Shared
import TestSupport
import Testing

@testable import Controller

/// Rollouts in the store (SQLite and PostgreSQL): it writes what a `RolloutStateMachine` decided, only from the state the decision was
/// made from, and a publish supersedes the previous rollout in its own transaction.
@Suite struct SQLiteControllerStoreRolloutsTests {
    static let wavesPlan = RolloutPlan(
        parameters: RolloutParameters(strategy: .waves([50, 100]), waveStable: .seconds(10)),
        agentOrder: ["agt_a", "agt_b"]
    )

    static func publish(_ store: SQLControllerStore, serial: Int64, plan: RolloutPlan) async throws -> PublishedRollout {
        let record = try StoreTests.record(serial: serial, service: "web")
        return try await store.insertRelease(record, rollout: RolloutStateMachine.publish(record, plan: plan))
    }

    /// Two decisions made from the same read (an operator's pause and another replica's abort): the first is written
    /// with its event, the second is refused by the compare-and-set and leaves no trace.
    @Test(arguments: StoreBackendKind.available)
    func onlyTheFirstOfTwoDecisionsFromTheSameStateIsWritten(_ kind: StoreBackendKind) async throws {
        try await TestStore.with(kind) { store, _ in
            _ = try await Self.publish(store, serial: 1, plan: RolloutPlan(parameters: RolloutParameters(), agentOrder: ["agt_a", "agt_b"]))
            _ = try await Self.publish(store, serial: 2, plan: Self.wavesPlan)
            let read = try #require(try await store.currentRollouts(for: ["web"]).first)
            #expect(read.state == .rolling && read.serial == 2)

            var pausing = RolloutStateMachine(read)
            var aborting = RolloutStateMachine(read)
            guard case .persist(let pause) = try pausing.requested(.pause, by: "alice", at: Date()),
                case .persist(let abort) = try aborting.requested(.abort, by: "bob", at: Date())
            else {
                Issue.record("pause and abort both apply to a rolling rollout")
                return
            }
            #expect(try await store.updateRollout(pause))
            #expect(try await store.updateRollout(abort) == false)

            let stored = try #require(try await store.currentRollouts(for: ["web"]).first)
            #expect(stored.state == .paused && stored.reason == "paused by alice" && stored.currentWave == 0)
            #expect(try await store.events(service: "web", limit: 10).map(\.kind) == [.paused, .published, .published])
            // Writing the same transition again: the stored state moved on, so nothing happens.
            #expect(try await store.updateRollout(pause) == false)
            try await store.close()
        }
    }

    /// A publish supersedes an open (here paused) rollout in its transaction, with the event after its own
    /// `published`; a rollout that completed is left as it is.
    @Test(arguments: StoreBackendKind.available)
    func aPublishSupersedesOnlyAnOpenRollout(_ kind: StoreBackendKind) async throws {
        try await TestStore.with(kind) { store, _ in
            _ = try await Self.publish(store, serial: 1, plan: RolloutPlan(parameters: RolloutParameters(), agentOrder: ["agt_a", "agt_b"]))
            _ = try await Self.publish(store, serial: 2, plan: Self.wavesPlan)
            var machine = RolloutStateMachine(try #require(try await store.currentRollouts(for: ["web"]).first))
            guard case .persist(let pause) = try machine.requested(.pause, by: "alice", at: Date()) else {
                Issue.record("pause applies to a rolling rollout")
                return
            }
            #expect(try await store.updateRollout(pause))

            let third = try await Self.publish(store, serial: 3, plan: RolloutPlan(parameters: RolloutParameters(), agentOrder: ["agt_a", "agt_b"]))
            #expect(third.superseded?.serial == 2 && third.superseded?.state == .paused)
            #expect(third.rollout.state == .completed && third.rollout.stableSerial == 1)
            let rollouts = try await store.rollouts(service: "web", limit: 10)
            #expect(rollouts.map(\.state) == [.completed, .superseded, .completed])
            #expect(rollouts[1].reason == "superseded by serial 3 (1.0.0)")
            let events = try await store.events(service: "web", limit: 10)
            #expect(events.map(\.kind) == [.superseded, .published, .paused, .published, .published])
            #expect(events[0].serial == 2 && events[0].message == "the paused rollout of serial 2 (1.0.0) was superseded by serial 3 (1.0.0)")

            let fourth = try await Self.publish(store, serial: 4, plan: Self.wavesPlan)
            #expect(fourth.superseded == nil, "a completed rollout is not superseded")
            #expect(fourth.rollout.stableSerial == 3)
            #expect(try await store.rollouts(service: "web", limit: 10).map(\.state) == [.rolling, .completed, .superseded, .completed])
            try await store.close()
        }
    }
}
