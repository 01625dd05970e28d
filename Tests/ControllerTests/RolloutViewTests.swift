import Foundation
import Testing

@testable import Controller

/// Which wave each agent of a rollout is in, as the rollout document, the fleet view and the dashboard show it: the
/// first wave whose cumulative size covers the agent's place in the rollout order.
@Suite struct RolloutViewTests {
    static let strategies = ["all", "one-at-a-time", "waves:10,50,100", "waves:1,2,100", "canary:3"]

    @Test(arguments: strategies, [0, 1, 7, 250])
    func eachAgentIsInTheFirstWaveCoveringItsPlace(_ strategyText: String, _ agentCount: Int) throws {
        let strategy = try RolloutStrategy.parse(strategyText)
        let order = (0..<agentCount).map { "agt_\($0)" }
        let rollout = RolloutRecord(
            id: 1,
            service: "web",
            serial: 2,
            version: "2.0.0",
            stableSerial: 1,
            strategy: strategy,
            waveStable: .seconds(60),
            maxFailures: 0,
            state: .rolling,
            currentWave: 0,
            agentOrder: order,
            createdAt: Date(timeIntervalSince1970: 1_700_000_000),
            updatedAt: Date(timeIntervalSince1970: 1_700_000_000),
            reason: ""
        )
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
