import Foundation
import TestSupport
import Testing

@testable import Agent

/// The chaos loop (Tests/AgentTests/Chaos, docs/reliability.md) at CI size: 20 cycles of releases and faults against a
/// builtin-supervisor agent and a real-PM2 agent, with zero invariant violations. `scripts/chaos --cycles N` runs the
/// same test with more cycles (FERRY_CHAOS_CYCLES) and writes the results table; every cycle has its own convergence
/// bound, so the test-wide limit only catches a hang (300 minutes: room for `--cycles 200` and more).
@Suite("Chaos loop", .serialized)
struct ChaosLoopTests {
    @Test("faults at random moments of a stream of good, crashing and unhealthy releases: 0 violations", .timeLimit(.minutes(300)))
    func chaosLoop() async throws {
        let configuration = try ChaosLoop.Configuration.fromEnvironment(defaultCycles: 20)
        if ProcessInfo.processInfo.environment["CI"] == "true", !configuration.backends.contains(.pm2) {
            Issue.record("CI must run the chaos loop under real PM2 too: FERRY_TEST_PM2 is not set")
        }
        var loop: ChaosLoop?
        try await FleetFixture.with { fleet in
            let chaos = ChaosLoop(configuration: configuration, fleet: fleet)
            loop = chaos
            try await chaos.setUp()
            try await chaos.run()
            #expect(chaos.report.violations.isEmpty, "violations (seed \(configuration.seed)):\n\(chaos.report.violations.joined(separator: "\n"))")
        }
        // The fixture has stopped every agent, supervisor and PM2 daemon: nothing holds the state disks any more.
        loop?.unmountDisks()
    }
}
