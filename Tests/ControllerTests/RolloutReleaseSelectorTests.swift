import Foundation
import Shared
import Testing

@testable import Controller

/// The selector against snapshots built by hand, as a load can see them.
@Suite struct RolloutReleaseSelectorTests {
    static func rollout(serial: Int64, stable: Int64?, order: [String], wave: Int) -> RolloutRecord {
        RolloutRecord(
            id: serial,
            service: "web",
            serial: serial,
            version: "\(serial).0.0",
            stableSerial: stable,
            strategy: .waves([50, 100]),
            waveStable: .zero,
            maxFailures: 0,
            state: .rolling,
            currentWave: wave,
            agentOrder: order,
            createdAt: Date(),
            updatedAt: Date(),
            reason: ""
        )
    }

    /// A publish of serial 3 committed between the snapshot's two reads: the latest release read is 2, the rollout 3
    /// (reached: agent a). Agent b, running 1 and not reached, gets the rollout's stable serial (1), not serial 2; agent
    /// a needs serial 3, which the snapshot lacks: the selector asks for it.
    @Test func aSnapshotTornByAPublishFollowsTheRollout() throws {
        var snapshot = ServiceSnapshot()
        snapshot.latest["web"] = try StoreTests.record(serial: 2, service: "web")
        snapshot.others[ReleaseKey(service: "web", serial: 1)] = try StoreTests.record(serial: 1, service: "web")
        let rollout = Self.rollout(serial: 3, stable: 1, order: ["a", "b"], wave: 0)
        snapshot.rollouts["web"] = rollout
        snapshot.reached["web"] = Set(rollout.reachedAgents)
        let selector = RolloutReleaseSelector()
        guard case .chosen(let releases) = selector.choose(forAgent: "b", services: ["web"], running: ["web": 1], shared: snapshot, fetched: nil)
        else {
            Issue.record("b's release was not chosen from the snapshot")
            return
        }
        #expect(releases.map(\.serial) == [1])
        guard case .missing(let keys) = selector.choose(forAgent: "a", services: ["web"], running: ["web": 1], shared: snapshot, fetched: nil)
        else {
            Issue.record("a's release (serial 3) was not asked for")
            return
        }
        #expect(keys == [ReleaseKey(service: "web", serial: 3)])
    }
}
