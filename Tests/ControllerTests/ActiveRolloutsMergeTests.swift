import Foundation
import Shared
import Testing

@testable import Controller

/// `ActiveRollouts.keepNewerStatuses`: a copy read from the store while reports updated the previous copy keeps those
/// reports (the newer status of each member wins), and nothing of another rollout or a non-member leaks in.
@Suite struct ActiveRolloutsMergeTests {
    static let rollout = RolloutStateMachineTests.rollout(.rolling)

    static func status(_ agent: String, serial: Int64, at seconds: Double) -> ServiceStatusRecord {
        ServiceStatusRecord(
            agentID: agent,
            status: .running(serial: serial),
            updatedAt: Date(timeIntervalSince1970: seconds)
        )
    }

    static func copy(_ statuses: [ServiceStatusRecord], rolloutID: Int64 = 7) -> ActiveRollouts {
        var record = rollout
        record.id = rolloutID
        return ActiveRollouts(
            byService: [
                "web": .init(
                    record: record,
                    members: Set(record.agentOrder),
                    statuses: Dictionary(uniqueKeysWithValues: statuses.map { ($0.agentID, $0) })
                )
            ],
            generation: 1,
            loadedAt: .now
        )
    }

    /// (what, read from the store, the previous copy, the serial each agent ends with in the merged copy)
    static let cases: [(String, [ServiceStatusRecord], ActiveRollouts, [String: Int64])] = [
        ("a report the read missed is kept", [status("agt_a", serial: 1, at: 10)], copy([status("agt_a", serial: 2, at: 20)]), ["agt_a": 2]),
        ("an older copy never wins", [status("agt_a", serial: 2, at: 20)], copy([status("agt_a", serial: 1, at: 10)]), ["agt_a": 2]),
        ("the same report stays", [status("agt_a", serial: 2, at: 20)], copy([status("agt_a", serial: 2, at: 20)]), ["agt_a": 2]),
        ("a member only the old copy has is added", [], copy([status("agt_b", serial: 2, at: 20)]), ["agt_b": 2]),
        ("a non-member is not added", [], copy([status("agt_x", serial: 2, at: 20)]), [:]),
        (
            "another rollout's copy is ignored", [status("agt_a", serial: 1, at: 10)], copy([status("agt_a", serial: 2, at: 20)], rolloutID: 8),
            ["agt_a": 1]
        ),
    ]

    @Test(arguments: cases)
    func merge(_ what: String, stored: [ServiceStatusRecord], previous: ActiveRollouts, expected: [String: Int64]) {
        var loaded = Self.copy(stored)
        loaded.keepNewerStatuses(of: previous)
        let serials = loaded.byService["web"]?.statuses.mapValues { $0.status.serial ?? -1 }
        #expect(serials == expected, "\(what)")
    }
}
