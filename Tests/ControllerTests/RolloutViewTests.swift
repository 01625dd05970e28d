import Foundation
import Shared
import Testing

@testable import Controller

/// Which wave each agent of a rollout is in, as the rollout document, the fleet view and the dashboard show it: the
/// first wave whose cumulative size covers the agent's place in the rollout order.
@Suite struct RolloutViewTests {
    static let strategies = ["all", "one-at-a-time", "waves:10,50,100", "waves:1,2,100", "canary:3"]

    /// A rolling rollout of serial 2 of `web` over `agents` agents (`agt_0`, ...), at `currentWave`.
    static func rollout(_ strategy: String, agents: Int, currentWave: Int, state: RolloutState = .rolling) throws -> RolloutRecord {
        RolloutRecord(
            id: 1,
            service: "web",
            serial: 2,
            version: "2.0.0",
            stableSerial: 1,
            strategy: try RolloutStrategy.parse(strategy),
            waveStable: .seconds(60),
            maxFailures: 0,
            state: state,
            currentWave: currentWave,
            agentOrder: (0..<agents).map { "agt_\($0)" },
            createdAt: Date(timeIntervalSince1970: 1_700_000_000),
            updatedAt: Date(timeIntervalSince1970: 1_700_000_000),
            reason: ""
        )
    }

    /// A one-at-a-time rollout of 500 agents has 500 waves: its dashboard card lists 12 of them around the current
    /// one and counts the rest (it listed all 500, on a page refreshed every few seconds for as long as the rollout is
    /// the service's latest).
    @Test(arguments: [(0, 0..<12), (1, 0..<12), (250, 248..<260), (499, 488..<500)])
    func aCardListsTheWavesAroundTheCurrentOne(_ current: Int, _ expected: Range<Int>) throws {
        let rollout = try Self.rollout("one-at-a-time", agents: 500, currentWave: current)
        let card = DashboardRenderer.card(RolloutView(rollout, names: [:], statuses: [:]), now: Date())
        let waves = try #require(card["waves"] as? [[String: Any]])
        #expect(waves.compactMap { $0["number"] as? Int } == expected.map { $0 + 1 })
        #expect(card["earlierWaves"] as? Int == expected.lowerBound && card["laterWaves"] as? Int == 500 - expected.upperBound)
        #expect(card["waveCount"] as? Int == 500)
        #expect(DashboardRenderer.listedWaveRange(count: 3, current: 2) == 0..<3)
    }

    @Test(arguments: strategies, [0, 1, 7, 250])
    func eachAgentIsInTheFirstWaveCoveringItsPlace(_ strategyText: String, _ agentCount: Int) throws {
        let rollout = try Self.rollout(strategyText, agents: agentCount, currentWave: 0)
        let order = rollout.agentOrder
        let view = RolloutView(rollout, names: [:], statuses: [:])
        let sizes = rollout.waveSizes
        for (index, agent) in view.agents.enumerated() {
            #expect(agent.wave == (sizes.firstIndex { index < $0 } ?? max(0, sizes.count - 1)), "\(strategyText), agent \(index)")
        }
        let groups = view.agentsByWave
        #expect(groups.count == sizes.count)
        #expect(groups.flatMap { $0.map(\.id) } == order, "every agent once, in rollout order")
        for (wave, members) in groups.enumerated() {
            #expect(members.count == sizes[wave] - (wave == 0 ? 0 : sizes[wave - 1]), "\(strategyText), wave \(wave + 1)")
        }
    }

    /// A release awaiting approval reaches no wave (its agents keep the stable serial): the document said wave 1 of 2,
    /// reached, while no agent received it. Every wave of a completed rollout is reached, the current one of a rolling one.
    @Test(arguments: [
        (RolloutState.awaitingApproval, 0, [false, false]), (.rolling, 0, [true, false]), (.paused, 1, [true, true]),
        (.completed, 0, [true, true]),
    ])
    func aWaveIsReachedOnlyOnceItsAgentsAreGivenTheSerial(_ state: RolloutState, _ currentWave: Int, _ reached: [Bool]) throws {
        let rollout = try Self.rollout("waves:50,100", agents: 4, currentWave: currentWave, state: state)
        let document = RolloutView(rollout, names: [:], statuses: [:]).json
        guard case .array(let waves)? = document.object?["waves"] else { return #expect(Bool(false), "waves") }
        #expect(waves.map { $0.object?["reached"] } == reached.map { .bool($0) }, "\(state)")
        #expect(document.object?["wave"] == .integer(state == .awaitingApproval ? 0 : Int64(currentWave + 1)), "\(state)")
    }

    /// Agents that report a serial above the rollout's are counted as `newer`: how `rollout wait` on an `all` rollout
    /// (which stays `completed` in the store) learns that it can no longer end with every agent on its serial.
    @Test func agentsOnANewerSerialAreCounted() throws {
        let rollout = try Self.rollout("all", agents: 4, currentWave: 0, state: .completed)
        func status(_ serial: Int64) -> ServiceStatus { .running(serial: serial) }
        let view = RolloutView(rollout, names: [:], statuses: ["agt_0": status(2), "agt_1": status(3), "agt_2": status(1)])
        #expect(view.counts == .init(agents: 4, updated: 1, healthy: 1, failed: 0, pending: 3, newer: 1))
        let counts = view.json.object?["counts"]?.object
        #expect(counts?["newer"] == .integer(1))
        if case .failed(let message) = RolloutWaitVerdict.decide(view.json) {
            #expect(message.contains("a newer release reached 1 agent(s)"), "\(message)")
        } else {
            Issue.record("rollout wait on an all rollout overtaken by a newer release fails")
        }
    }

    /// `rollout status` in text lists at most 100 agents per wave and 100 failures, as the document does, and says how
    /// many more there are: a halt of 150 agents printed 100 `failed:` lines and nothing else.
    @Test func theTextSaysHowManyAgentsAndFailuresItLeavesOut() throws {
        let rollout = try Self.rollout("all", agents: 150, currentWave: 0, state: .halted)
        let failed = ServiceStatus(
            service: "web",
            serial: 1,
            version: "1.0.0",
            targetSerial: 2,
            phase: .rolledBack,
            message: "health check failed",
            health: .unhealthy,
            // As an agent reports a rollback: the phase, and the failure of the serial (which is what counts).
            failures: [ReleaseFailure(serial: 2, reason: "health check failed", kind: "rolled-back")],
            processes: []
        )
        let statuses = Dictionary(uniqueKeysWithValues: rollout.agentOrder.map { ($0, failed) })
        let text = RolloutText.describe(RolloutView(rollout, names: [:], statuses: statuses).json)
        #expect(text.split(separator: "\n").filter { $0.hasPrefix("  failed: ") }.count == 100)
        #expect(text.contains("wave 1 [reached]: ") && text.contains(", and 50 more agent(s)"), "\(text.prefix(300))")
        // Pointed at the document that lists every agent with its standing: the fleet's failing phase leaves out an agent
        // that refused the serial (its phase is unchanged) and counts one whose download failed (pending here).
        #expect(
            text.contains("and 50 more failed agent(s), not listed here: GET /v1/rollouts/web/2 lists every agent of the rollout"),
            "\(text.suffix(300))"
        )
    }
}
