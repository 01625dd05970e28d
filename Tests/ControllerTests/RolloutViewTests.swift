import Foundation
import Testing

@testable import Controller

/// Which wave each agent of a rollout is in, as the rollout document, the fleet view and the dashboard show it: the
/// first wave whose cumulative size covers the agent's place in the rollout order.
@Suite struct RolloutViewTests {
    static let strategies = ["all", "one-at-a-time", "waves:10,50,100", "waves:1,2,100", "canary:3"]

    /// A rolling rollout of serial 2 of `web` over `agents` agents (`agt_0`, ...), at `currentWave`.
    static func rollout(_ strategy: String, agents: Int, currentWave: Int) throws -> RolloutRecord {
        RolloutRecord(
            id: 1,
            service: "web",
            serial: 2,
            version: "2.0.0",
            stableSerial: 1,
            strategy: try RolloutStrategy.parse(strategy),
            waveStable: .seconds(60),
            maxFailures: 0,
            state: .rolling,
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
}
