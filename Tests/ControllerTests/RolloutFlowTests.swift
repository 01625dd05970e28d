import Foundation
import Shared
import Synchronization
import TestSupport
import Testing

@testable import Controller

/// Staged rollouts driven by synthetic status reports through the real router and a real SQLite store.
@Suite struct RolloutFlowTests {
    /// Three agents, `waves:34,100`, a release that crashes at boot: the first wave's agent rolls back, the rollout
    /// halts, the other two never receive that serial; then a good release reaches all three.
    @Test func crashingReleaseHaltsAtFirstWaveThenGoodReleaseReachesAll() async throws {
        try await RolloutHarness.with { harness in
            try await harness.withClient { api in
                let agents = [try await api.enroll("agent-c"), try await api.enroll("agent-a"), try await api.enroll("agent-b")]
                let (a, b, c) = (agents[1], agents[2], agents[0])
                try await api.mustPublish(serial: 1, version: "1.0.0")
                #expect(try await api.desiredSerials([a, b, c]) == [1, 1, 1])
                for agent in [a, b, c] { try await api.reportHealthy(agent, serial: 1) }
                #expect(try await api.rollout()["state"].string == "completed")

                // v2 crashes at boot. Order is by name: agent-a alone is the first wave.
                let published = try await api.mustPublish(serial: 2, version: "2.0.0", query: "strategy=waves:34,100&waveStableSeconds=3")
                #expect(published["rollout"]["state"].string == "rolling")
                #expect(published["rollout"]["waveCount"].int == 2)
                #expect(published["rollout"]["waves"][0]["agents"].array.map { $0["name"].string } == ["agent-a"])
                #expect(try await api.desiredSerials([a, b, c]) == [2, 1, 1])

                try await api.reportRolledBack(a, failed: 2, runs: 1)
                let halted = try await api.rollout()
                #expect(halted["state"].string == "halted")
                #expect(halted["counts"]["failed"].int == 1)
                #expect(halted["failures"][0]["agentName"].string == "agent-a")
                #expect(halted["failures"][0]["reason"].string == "crashed at boot")
                #expect(halted["reason"].string?.contains("agent-a (rolled-back): crashed at boot") == true)

                // Time passes, the others keep reporting v1: nothing advances, they never see serial 2.
                for _ in 0..<3 {
                    harness.clock.advance(seconds: 10)
                    for agent in [b, c] { try await api.reportHealthy(agent, serial: 1) }
                    await api.tick()
                    #expect(try await api.desiredSerials([b, c]) == [1, 1])
                }
                #expect(try await api.rollout()["state"].string == "halted")
                let kinds = try await api.events().compactMap { $0["kind"].string }
                #expect(Array(kinds.prefix(3)) == ["halted", "rolled-back", "published"])

                // v3 is good: same strategy, reaches everyone wave by wave.
                let v3 = try await api.mustPublish(serial: 3, version: "3.0.0", query: "strategy=waves:34,100&waveStableSeconds=3")
                #expect(v3["rollout"]["stableSerial"].int == 1)
                #expect(try await api.desiredSerials([a, b, c]) == [3, 1, 1])
                let rollouts = try await api.call(.get, "/v1/rollouts?service=web", token: harness.viewerToken)
                #expect(rollouts.json["rollouts"].array.map { $0["state"].string } == ["rolling", "superseded", "completed"])

                try await api.reportHealthy(a, serial: 3, failures: [ReleaseFailure(serial: 2, reason: "crashed at boot", kind: "rolled-back")])
                await api.tick()
                #expect(try await api.rollout()["wave"].int == 1, "not stable for 3 s yet")
                harness.clock.advance(seconds: 3)
                await api.tick()
                let second = try await api.rollout()
                #expect(second["wave"].int == 2)
                #expect(second["state"].string == "rolling")
                #expect(try await api.desiredSerials([a, b, c]) == [3, 3, 3])

                for agent in [b, c] { try await api.reportHealthy(agent, serial: 3) }
                harness.clock.advance(seconds: 3)
                await api.tick()
                let done = try await api.rollout()
                #expect(done["state"].string == "completed")
                #expect(done["counts"]["healthy"].int == 3)

                // An agent enrolling now gets the completed serial.
                let late = try await api.enroll("agent-d")
                #expect(try await api.desiredSerial(late) == 3)
            }
        }
    }

    /// Five agents (a…e) on serial 1, then serial 2 rolled out in waves of 20, 40 and 100 %: a healthy on it, the
    /// second wave (a, b) reached.
    static func fiveAgentsAtTheSecondWave(_ api: RolloutClient) async throws -> [RolloutAgent] {
        var agents: [RolloutAgent] = []
        for name in ["a", "b", "c", "d", "e"] { agents.append(try await api.enroll(name)) }
        try await api.mustPublish(serial: 1, version: "1.0.0")
        for agent in agents { try await api.reportHealthy(agent, serial: 1) }
        try await api.mustPublish(serial: 2, version: "2.0.0", query: "strategy=waves:20,40,100&waveStableSeconds=0")
        try await api.reportHealthy(agents[0], serial: 2)
        await api.tick()
        #expect(try await api.desiredSerials(agents) == [2, 2, 1, 1, 1])
        return agents
    }

    /// Agents enrolling during a rollout are not part of it: they receive the stable serial until it completes.
    /// An agent removed from a rolling or paused rollout leaves the waves of fewer agents, which can be larger: five at
    /// 20/40/100 % are waves of 1, 2 and 5, four are 1 and 4. Before, the reached second wave became the whole fleet:
    /// every agent got serial 2 while the rollout was paused, its 40 % gate skipped. The rollout now stays where it
    /// reaches no more agents than it still reached, and advances from there when resumed.
    @Test func removingAMemberNeverReachesMoreAgents() async throws {
        try await RolloutHarness.with { harness in
            try await harness.withClient { api in
                let agents = try await Self.fiveAgentsAtTheSecondWave(api)
                #expect(try await api.act("pause").status == 200)
                #expect(try await api.call(.delete, "/v1/agents/c", token: harness.operatorToken).status == 200)
                let left = [agents[0], agents[1], agents[3], agents[4]]
                #expect(try await api.desiredSerials(left) == [2, 1, 1, 1], "paused: no agent beyond those still reached gets serial 2")
                // Resumed, it advances from there, wave by wave.
                #expect(try await api.act("resume").status == 200)
                await api.tick()
                #expect(try await api.desiredSerials(left) == [2, 2, 2, 2])
            }
        }
    }

    /// A removal steps the rollout back to a smaller wave; an agent of the wave it left that runs the serial unhealthy
    /// still holds it: before, only the reached agents were judged, and the next tick sent the serial to every agent
    /// while that one was unhealthy on it.
    @Test func anAgentBeyondTheReachedWavesRunningTheSerialUnhealthyHoldsTheRollout() async throws {
        try await RolloutHarness.with { harness in
            try await harness.withClient { api in
                let agents = try await Self.fiveAgentsAtTheSecondWave(api)
                // b installs serial 2, which runs unhealthy (its gate has not passed: it is still installing it).
                try await api.report(
                    agents[1],
                    ServiceStatus(
                        service: "web",
                        serial: 2,
                        version: "v2",
                        targetSerial: 2,
                        phase: .running,
                        message: "serial 2 is running, health unknown",
                        health: .unhealthy,
                        failures: [],
                        processes: []
                    )
                )
                // e, never reached, is removed: four agents, waves of 1 and 4; the rollout steps back to wave 0 (a).
                #expect(try await api.call(.delete, "/v1/agents/e", token: harness.operatorToken).status == 200)
                let left = Array(agents.prefix(4))
                for _ in 0..<3 { await api.tick() }
                #expect(try await api.desiredSerials(left) == [2, 2, 1, 1], "b, unhealthy on serial 2, holds the rollout")
                // Healthy, it no longer does.
                try await api.reportHealthy(agents[1], serial: 2)
                await api.tick()
                #expect(try await api.desiredSerials(left) == [2, 2, 2, 2])
            }
        }
    }

    /// A one-agent service published with `maxFailures=1`: its only agent rolls back. The failure is tolerated, but a
    /// rollout on which no agent is healthy halts instead of completing; before, it completed and its failed serial
    /// became the stable one the next rollout hands to agents it has not reached.
    @Test func aRolloutWithNoHealthyAgentHaltsInsteadOfCompleting() async throws {
        try await RolloutHarness.with { harness in
            try await harness.withClient { api in
                let agent = try await api.enroll("a")
                try await api.mustPublish(serial: 1, version: "1.0.0")
                try await api.reportHealthy(agent, serial: 1)
                try await api.mustPublish(serial: 2, version: "2.0.0", query: "strategy=canary:1&maxFailures=1&waveStableSeconds=0")
                try await api.reportRolledBack(agent, failed: 2, runs: 1)
                await api.tick()
                let halted = try await api.rollout()
                #expect(halted["state"].string == "halted")
                #expect(halted["reason"].string?.contains("and no agent reached is healthy on it") == true, "\(halted["reason"].string ?? "")")
                let next = try await api.mustPublish(serial: 3, version: "3.0.0", query: "strategy=canary:1")
                #expect(next["rollout"]["stableSerial"].int == 1)
            }
        }
    }

    /// A release awaiting approval (signed by one release key of the two needed) reaches no agent, and neither does it
    /// stop the rollout under way: serial 2 goes on (a healthy report advances it, a pause without a serial pauses it)
    /// until serial 3 is approved, which supersedes it then. The publish used to supersede it at once: its fleet stayed
    /// split, reached agents on serial 2 and the others on serial 1, for as long as the approval took (for ever without
    /// one), on one release key's word.
    @Test func aReleaseAwaitingApprovalLeavesTheRolloutUnderWayGoing() async throws {
        try await RolloutHarness.with(releaseThreshold: 2) { harness in
            try await harness.withClient { api in
                let agents = [try await api.enroll("a"), try await api.enroll("b"), try await api.enroll("c")]
                try await api.mustPublish(serial: 1, version: "1.0.0")
                try await api.mustPublish(serial: 2, version: "2.0.0", query: "strategy=one-at-a-time&waveStableSeconds=0")
                #expect(try await api.desiredSerials(agents) == [2, 1, 1])
                let awaiting = try await api.mustPublish(serial: 3, version: "3.0.0", query: "strategy=one-at-a-time", signedOnce: true)
                #expect(awaiting["rollout"]["state"].string == "awaiting-approval", "\(awaiting)")
                #expect(try await api.rollout(serial: 2)["state"].string == "rolling")
                #expect(try await api.desiredSerials(agents) == [2, 1, 1])

                try await api.reportHealthy(agents[0], serial: 2)
                let advanced = try await api.rollout(serial: 2)
                #expect(advanced["wave"].int == 2, "\(advanced)")
                #expect(try await api.desiredSerials(agents) == [2, 2, 1])
                let paused = try await api.act("pause")
                #expect(paused.status == 200 && paused.json["serial"].int == 2, "\(paused.json)")
                #expect(try await api.act("resume").status == 200)
                try await api.reportHealthy(agents[1], serial: 2)
                #expect(try await api.desiredSerials(agents) == [2, 2, 2])
                #expect(try await api.rollout(serial: 2)["state"].string == "rolling", "c has not reported serial 2 healthy")
                // Listed beside the release awaiting approval.
                let listed = try await api.call(.get, "/v1/rollouts", token: harness.viewerToken).json["rollouts"].array
                #expect(listed.map { $0["serial"].int } == [3, 2], "\(listed)")

                let approved = try await api.approve(serial: 3)
                #expect(approved.status == 200, "\(approved.json)")
                #expect(approved.json["rollout"]["state"].string == "rolling", "\(approved.json)")
                #expect(approved.json["rollout"]["stableSerial"].int == 1, "serial 2 did not complete")
                let replaced = try await api.rollout(serial: 2)
                #expect(replaced["state"].string == "superseded", "\(replaced)")
                #expect(replaced["reason"].string?.contains("superseded by serial 3 (3.0.0)") == true, "\(replaced)")
                // The first wave of serial 3 is agent a; b keeps serial 2, which it runs (never lower); c, which has not
                // reported serial 2, receives the stable serial.
                let desired = try await api.desiredSerials(agents)
                #expect(desired == [3, 2, 1], "\(desired)")
            }
        }
    }

    /// A release awaiting approval that is rejected (aborted by its serial), then another that replaces the next one:
    /// neither ever started, and the rollout under way still decides what agents receive and takes the pause. Chosen
    /// as the newest rollout not awaiting approval, the aborted one and then the superseded one governed: agents the
    /// rollout had not reached got the stable serial for ever, and a pause without a serial hit a final rollout.
    @Test func aRejectedReleaseAwaitingApprovalLeavesTheRolloutUnderWayGoverning() async throws {
        try await RolloutHarness.with(releaseThreshold: 2) { harness in
            try await harness.withClient { api in
                let agents = [try await api.enroll("a"), try await api.enroll("b")]
                try await api.mustPublish(serial: 1, version: "1.0.0")
                try await api.mustPublish(serial: 2, version: "2.0.0", query: "strategy=one-at-a-time&waveStableSeconds=0")
                try await api.mustPublish(serial: 3, version: "3.0.0", signedOnce: true)
                let rejected = try await api.act("abort?serial=3")
                #expect(rejected.status == 200 && rejected.json["state"].string == "aborted", "\(rejected.json)")
                try await api.reportHealthy(agents[0], serial: 2)
                #expect(try await api.desiredSerials(agents) == [2, 2], "serial 2's rollout reached b")
                try await api.mustPublish(serial: 4, version: "4.0.0", signedOnce: true)
                #expect(try await api.rollout(serial: 2)["state"].string == "rolling")
                let paused = try await api.act("pause")
                #expect(paused.status == 200 && paused.json["serial"].int == 2, "\(paused.json)")
                #expect(try await api.act("resume").status == 200)
                try await api.reportHealthy(agents[1], serial: 2)
                #expect(try await api.rollout(serial: 2)["state"].string == "completed")
            }
        }
    }

    /// The stable serial of a rollout that awaited approval is the one of its approval: serial 2 completed meanwhile,
    /// so agents serial 3 has not reached receive serial 2, not serial 1 (the stable serial as the publish saw it).
    @Test func anApprovalStartsFromTheStableSerialAsItIsThen() async throws {
        try await RolloutHarness.with(releaseThreshold: 2) { harness in
            try await harness.withClient { api in
                let agents = [try await api.enroll("a"), try await api.enroll("b")]
                try await api.mustPublish(serial: 1, version: "1.0.0")
                try await api.mustPublish(serial: 2, version: "2.0.0", query: "strategy=one-at-a-time&waveStableSeconds=0")
                let awaiting = try await api.mustPublish(serial: 3, version: "3.0.0", query: "strategy=one-at-a-time", signedOnce: true)
                #expect(awaiting["rollout"]["stableSerial"].int == 1)
                try await api.reportHealthy(agents[0], serial: 2)
                try await api.reportHealthy(agents[1], serial: 2)
                #expect(try await api.rollout(serial: 2)["state"].string == "completed")
                #expect(try await api.desiredSerials(agents) == [2, 2])

                let approved = try await api.approve(serial: 3)
                #expect(approved.status == 200, "\(approved.json)")
                #expect(approved.json["rollout"]["stableSerial"].int == 2, "\(approved.json)")
                #expect(try await api.rollout(serial: 2)["state"].string == "completed", "a completed rollout stays so")
                #expect(try await api.desiredSerials(agents) == [3, 2])
            }
        }
    }

    @Test func lateAgentsReceiveTheStableSerialUntilCompletion() async throws {
        try await RolloutHarness.with { harness in
            try await harness.withClient { api in
                let a = try await api.enroll("a")
                try await api.mustPublish(serial: 1, version: "1.0.0")
                try await api.mustPublish(serial: 2, version: "2.0.0", query: "strategy=one-at-a-time&waveStableSeconds=0")
                let late = try await api.enroll("b")
                #expect(try await api.desiredSerials([a, late]) == [2, 1])
                try await api.reportHealthy(a, serial: 2)
                #expect(try await api.rollout()["state"].string == "completed", "waveStableSeconds=0: the report itself completes it")
                #expect(try await api.desiredSerials([a, late]) == [2, 2])
            }
        }
    }

    /// Sixty agents report healthy at once: the rollout completes when the last report is answered, and the reports
    /// share evaluation rounds instead of each evaluating the whole rollout (issue 12: O(fleet) per report).
    @Test func reportsArrivingTogetherShareEvaluations() async throws {
        try await RolloutHarness.with { harness in
            try await harness.withClient { api in
                var agents: [RolloutAgent] = []
                for index in 0..<60 { agents.append(try await api.enroll("agent-\(index)")) }
                // One wave of all sixty, complete once every one of them is healthy.
                let published = try await api.mustPublish(serial: 1, version: "1.0.0", query: "strategy=waves:100&waveStableSeconds=0")
                #expect(published["rollout"]["state"].string == "rolling")
                let before = harness.app.core.rollouts.rounds.finished
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for agent in agents { group.addTask { try await api.reportHealthy(agent, serial: 1) } }
                    try await group.waitForAll()
                }
                let rollout = try await api.rollout()
                #expect(rollout["state"].string == "completed", "the last report's round completes it: \(rollout)")
                let rounds = harness.app.core.rollouts.rounds.finished - before
                #expect(rounds >= 1 && rounds < 60, "\(rounds) evaluation rounds for 60 reports")
            }
        }
    }

    /// Reports of one service arriving while rounds of another commit transitions: a commit empties the copy the reports
    /// update, and a report that resumed then must not put back the snapshot its read returned (that dropped the reports
    /// taken in since, and the rollout they complete stayed rolling until the timer read the store).
    @Test func reportsArrivingWhileAnotherRolloutAdvancesAllCount() async throws {
        try await RolloutHarness.with { harness in
            try await harness.withClient { api in
                var web: [RolloutAgent] = []
                var other: [RolloutAgent] = []
                for index in 0..<60 { web.append(try await api.enroll("web-\(index)")) }
                for index in 0..<40 { other.append(try await api.enroll("api-\(index)", services: ["api"])) }
                try await api.mustPublish(serial: 1, version: "1.0.0", query: "strategy=waves:100&waveStableSeconds=0")
                try await api.mustPublish(service: "api", serial: 1, version: "1.0.0", query: "strategy=one-at-a-time&waveStableSeconds=0")
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for agent in web { group.addTask { try await api.reportHealthy(agent, serial: 1) } }
                    for _ in 0..<3 {
                        for agent in other { group.addTask { try await api.reportHealthy(agent, serial: 1, service: "api") } }
                    }
                    try await group.waitForAll()
                }
                let rollout = try await api.rollout()
                #expect(rollout["state"].string == "completed", "every web report was taken in before it was answered: \(rollout)")
            }
        }
    }

    /// The interleaving behind the test above's one flaky run, forced: a round holds before it evaluates `api`; an
    /// `api` report waits for that round, and the last `web` report, taken in meanwhile, waits for the next. The held
    /// round advances `api` (a commit empties the copy the `web` report updated) and evaluates `web` against the
    /// snapshot it started with. The next round must read the copy again: when it skipped an empty copy, the `web`
    /// report was answered with its rollout left rolling.
    @Test func aRoundAfterACommitReadsTheReportsItAnswersAgain() async throws {
        try await RolloutHarness.with { harness in
            try await harness.withClient { api in
                let web = [try await api.enroll("web-0"), try await api.enroll("web-1")]
                let other = [try await api.enroll("api-0", services: ["api"]), try await api.enroll("api-1", services: ["api"])]
                try await api.mustPublish(serial: 1, version: "1.0.0", query: "strategy=waves:100&waveStableSeconds=0")
                try await api.mustPublish(service: "api", serial: 1, version: "1.0.0", query: "strategy=one-at-a-time&waveStableSeconds=0")
                try await api.reportHealthy(web[0], serial: 1)
                let coordinator = harness.app.core.rollouts
                let held = Mutex(false)
                let released = Mutex(false)
                await coordinator.setRoundWillEvaluate { service in
                    guard service == "api", !held.withLock({ $0 }) else { return }
                    held.withLock { $0 = true }
                    while !released.withLock({ $0 }) { try? await Task.sleep(for: .milliseconds(5)) }
                }
                let apiReport = Task { try await api.reportHealthy(other[0], serial: 1, service: "api") }
                try await eventually("a round held before it evaluates api", interval: .milliseconds(5)) { held.withLock { $0 } ? true : nil }
                let webReport = Task { try await api.reportHealthy(web[1], serial: 1) }
                try await eventually("both reports waiting for a round", interval: .milliseconds(5)) {
                    coordinator.rounds.waiting == 2 ? true : nil
                }
                released.withLock { $0 = true }
                try await apiReport.value
                try await webReport.value
                await coordinator.setRoundWillEvaluate(nil)
                #expect(try await api.rollout("api")["wave"].int == 2, "the held round advanced api to its second wave")
                let rollout = try await api.rollout()
                #expect(rollout["state"].string == "completed", "the last web report was answered after a round that saw it: \(rollout)")
            }
        }
    }

    /// A first release, and one agent of the first wave cannot download it yet (a 503 from the artifact store): it
    /// reports `failed` with the serial as target while it tries again. That is no failure of the release: the rollout
    /// waits, and goes on once the agent runs the serial. Counted as one, it halted for good (`maxFailures` 0), and
    /// only a new publish moved it.
    @Test func aDownloadTriedAgainDoesNotHaltTheRollout() async throws {
        try await RolloutHarness.with { harness in
            try await harness.withClient { api in
                let agents = [try await api.enroll("agent-a"), try await api.enroll("agent-b"), try await api.enroll("agent-c")]
                try await api.mustPublish(serial: 1, version: "1.0.0", query: "strategy=waves:34,100&waveStableSeconds=0")
                let retrying = ServiceStatus(
                    service: "web",
                    serial: nil,
                    version: nil,
                    targetSerial: 1,
                    phase: .failed,
                    message: "serial 1 (1.0.0) not installed yet: the artifact store answered 503",
                    health: .unknown,
                    failures: [],
                    processes: []
                )
                try await api.report(agents[0], retrying)
                await api.tick()
                let waiting = try await api.rollout()
                #expect(waiting["state"].string == "rolling" && waiting["counts"]["failed"].int == 0, "\(waiting)")
                try await api.reportHealthy(agents[0], serial: 1)
                await api.tick()
                #expect(try await api.rollout()["wave"].int == 2)
                for agent in agents.dropFirst() { try await api.reportHealthy(agent, serial: 1) }
                #expect(try await api.rollout()["state"].string == "completed")
            }
        }
    }

    /// An agent keeps reporting a failure it had (the failures list travels with every report until a new release
    /// installs): the failure is one event, however many reports carry it, and reports with no failure in between do
    /// not make the next one that carries it look new. A second failure is a second event.
    /// The rollout a publish answers with reads the statuses of the agents it lists only (reading every status of a
    /// 10,000-agent service was most of a publish): it must be the document `GET /v1/rollouts` gives right after —
    /// waves, listed agents with their statuses, counts — with more agents than a wave lists.
    @Test func thePublishAnswersWithTheRolloutAsListedAfter() async throws {
        try await RolloutHarness.with { harness in
            try await harness.withClient { api in
                var agents: [RolloutAgent] = []
                for index in 0..<230 { agents.append(try await api.enroll(String(format: "agent-%03d", index))) }
                try await api.mustPublish(serial: 1, version: "1.0.0")
                for agent in agents { try await api.reportHealthy(agent, serial: 1) }
                let published = try await api.mustPublish(serial: 2, version: "2.0.0", query: "strategy=waves:50,100")
                let listed = try await api.rollout()
                #expect(published["rollout"].value == listed.value)
                #expect(listed["waves"][0]["agents"].array.count == 100)
                #expect(listed["waves"][0]["unlistedAgents"].int == 15)
                #expect(listed["waves"][1]["agents"].array.first?["serial"].int == 1)
                #expect(listed["counts"]["pending"].int == 230)
            }
        }
    }

    @Test func aReportedFailureIsOneEvent() async throws {
        try await RolloutHarness.with { harness in
            try await harness.withClient { api in
                let agent = try await api.enroll("agent-a")
                try await api.mustPublish(serial: 1, version: "1.0.0")
                try await api.reportHealthy(agent, serial: 1)
                try await api.mustPublish(serial: 2, version: "2.0.0")
                let crashed = ReleaseFailure(serial: 2, reason: "crashed at boot", kind: "rolled-back")
                let steps: [(String, @Sendable () async throws -> Void)] = [
                    ("the rollback", { try await api.reportRolledBack(agent, failed: 2, runs: 1) }),
                    ("the rollback again", { try await api.reportRolledBack(agent, failed: 2, runs: 1) }),
                    ("serial 1 healthy, carrying the failure", { try await api.reportHealthy(agent, serial: 1, failures: [crashed]) }),
                    ("serial 1 healthy, carrying it again", { try await api.reportHealthy(agent, serial: 1, failures: [crashed]) }),
                ]
                for (step, send) in steps {
                    try await send()
                    let rolledBack = try await api.events().filter { $0["kind"].string == "rolled-back" }
                    #expect(rolledBack.count == 1, "after \(step): \(rolledBack)")
                }
                try await api.mustPublish(serial: 3, version: "3.0.0")
                try await api.reportRolledBack(agent, failed: 3, runs: 1, reason: "port in use")
                let messages = try await api.events().filter { $0["kind"].string == "rolled-back" }.compactMap { $0["message"].string }
                #expect(
                    messages == [
                        "agent agent-a rolled back serial 3 of web: port in use", "agent agent-a rolled back serial 2 of web: crashed at boot",
                    ]
                )
            }
        }
    }

    /// A rollback whose event cannot be written is not acknowledged (the agent sends the report again), and is one
    /// event once it can: the event is committed with the report. When the event was written after the report, the
    /// report was acknowledged, and its resend found the failure already stored and wrote no event at all.
    @Test func aFailureWhoseEventCannotBeWrittenIsSentAgainAndRecorded() async throws {
        try await RolloutHarness.with { harness in
            try await harness.withClient { api in
                let agent = try await api.enroll("agent-a")
                try await api.mustPublish(serial: 1, version: "1.0.0")
                try await api.reportHealthy(agent, serial: 1)
                try await api.mustPublish(serial: 2, version: "2.0.0")
                let report = StatusReport(
                    agentVersion: "test",
                    hostname: "agent-a.test",
                    processManager: "builtin",
                    services: [RolloutClient.rolledBack(failed: 2, runs: 1)]
                )
                func send() async throws -> RolloutAnswer {
                    try await api.call(.post, "/v1/agents/\(agent.id)/status", token: agent.token, body: Array(report.json.encoded()))
                }
                try await harness.store.readDB.raw("ALTER TABLE events RENAME TO events_gone").run()
                let refused = try await send()
                #expect((500..<600).contains(refused.status), "a report whose event was not stored is not acknowledged: \(refused.status)")
                try await harness.store.readDB.raw("ALTER TABLE events_gone RENAME TO events").run()
                #expect(try await send().status == 204)
                let rolledBack = try await api.events().filter { $0["kind"].string == "rolled-back" }
                #expect(rolledBack.compactMap { $0["message"].string } == ["agent agent-a rolled back serial 2 of web: crashed at boot"])
                #expect(try await send().status == 204)
                #expect(try await api.events().filter { $0["kind"].string == "rolled-back" }.count == 1, "a resend is not a new failure")
            }
        }
    }

    /// A member terminated mid-rollout (it never reports again) holds its wave; removed (`agents remove`, or for its
    /// silence), it is no longer a member, and the rollout completes with the agents left. Before, the removed agent
    /// stayed a member without a status and the rollout waited for it for ever.
    @Test func aRemovedMemberNoLongerHoldsTheRollout() async throws {
        try await RolloutHarness.with { harness in
            try await harness.withClient { api in
                let a = try await api.enroll("agent-a")
                _ = try await api.enroll("agent-b")
                try await api.mustPublish(serial: 1, version: "1.0.0", query: "strategy=waves:100&waveStableSeconds=0")
                try await api.reportHealthy(a, serial: 1)
                await api.tick()
                #expect(try await api.rollout()["state"].string == "rolling", "agent-b, terminated, holds the wave")
                let removed = try await api.call(.delete, "/v1/agents/agent-b", token: harness.operatorToken)
                #expect(removed.status == 200)
                #expect(try await api.rollout()["counts"]["agents"].int == 1)
                await api.tick()
                #expect(try await api.rollout()["state"].string == "completed")
            }
        }
    }

    /// Every member removed before one was healthy (an instance refresh replaced the fleet mid-rollout): the rollout
    /// halts. It used to complete, "reached all 0 agents", and its serial became the stable one of every agent
    /// enrolled since, with no wave and no health gate.
    @Test func aRolloutWhoseMembersAreAllRemovedHalts() async throws {
        try await RolloutHarness.with { harness in
            try await harness.withClient { api in
                let old = [try await api.enroll("old-a"), try await api.enroll("old-b")]
                try await api.mustPublish(serial: 1, version: "1.0.0")
                for agent in old { try await api.reportHealthy(agent, serial: 1) }
                try await api.mustPublish(serial: 2, version: "2.0.0", query: "strategy=canary:1&waveStableSeconds=0")
                let replacement = try await api.enroll("new-a")
                #expect(try await api.desiredSerial(replacement) == 1, "not a member: the stable serial")
                for name in ["old-a", "old-b"] {
                    #expect(try await api.call(.delete, "/v1/agents/\(name)", token: harness.operatorToken).status == 200)
                }
                await api.tick()
                let rollout = try await api.rollout()
                #expect(rollout["state"].string == "halted", "\(rollout)")
                #expect(rollout["reason"].string == "every agent of the rollout was removed before one was healthy on serial 2")
                #expect(try await api.desiredSerial(replacement) == 1, "serial 2 showed nothing good: agents enrolled since keep serial 1")
            }
        }
    }

    /// The controller's clock steps back an hour mid-wave (NTP, a restored VM). A healthy timer started before the step
    /// held the wave for that hour; and a status stamped before it counted as fresh for that hour, so an agent that
    /// died just after the step counted as healthy. Now the timer starts again at the step, and such a status is stale
    /// until the agent reports again.
    @Test func aClockSteppedBackHoldsNoWaveAndFreshensNoStatus() async throws {
        try await RolloutHarness.with { harness in
            try await harness.withClient { api in
                let agents = [try await api.enroll("agent-a"), try await api.enroll("agent-b"), try await api.enroll("agent-c")]
                try await api.mustPublish(serial: 1, version: "1.0.0")
                for agent in agents { try await api.reportHealthy(agent, serial: 1) }
                try await api.mustPublish(serial: 2, version: "2.0.0", query: "strategy=waves:34,67,100&waveStableSeconds=5")
                try await api.reportHealthy(agents[0], serial: 2)
                harness.clock.advance(seconds: -3600)
                await api.tick()
                #expect(try await api.rollout()["wave"].int == 1)
                // A status from before the step is not fresh: agent-a must report again before its wave counts it.
                harness.clock.advance(seconds: 6)
                await api.tick()
                #expect(try await api.rollout()["wave"].int == 1, "agent-a's status from before the step still counted")
                try await api.reportHealthy(agents[0], serial: 2)
                harness.clock.advance(seconds: 6)
                try await api.reportHealthy(agents[0], serial: 2)
                await api.tick()
                #expect(try await api.rollout()["wave"].int == 2, "the wave waited for the clock to catch up")
            }
        }
    }

    /// `canary:2` with `maxFailures=1`: one tolerated failure does not hold the canary back while the other canary agent
    /// is healthy; a second failure halts.
    @Test func failuresAboveTheToleranceHalt() async throws {
        try await RolloutHarness.with { harness in
            try await harness.withClient { api in
                var agents: [RolloutAgent] = []
                for name in ["a", "b", "c", "d"] { agents.append(try await api.enroll(name)) }
                try await api.mustPublish(serial: 1, version: "1.0.0")
                try await api.mustPublish(serial: 2, version: "2.0.0", query: "strategy=canary:2&maxFailures=1&waveStableSeconds=5")
                #expect(try await api.desiredSerials(agents) == [2, 2, 1, 1])
                try await api.reportRolledBack(agents[0], failed: 2, runs: 1)
                try await api.reportHealthy(agents[1], serial: 2)
                harness.clock.advance(seconds: 6)
                try await api.reportHealthy(agents[1], serial: 2)
                await api.tick()
                let tolerated = try await api.rollout()
                #expect(tolerated["state"].string == "rolling")
                #expect(tolerated["wave"].int == 2, "one canary agent failed within the tolerance, the other is healthy: the rest follow")
                #expect(try await api.desiredSerials(agents) == [2, 2, 2, 2])
                try await api.reportHealthy(agents[1], serial: 2)
                // A refusal counts as a failure too.
                try await api.report(
                    agents[2],
                    ServiceStatus(
                        service: "web",
                        serial: 1,
                        version: "v1",
                        targetSerial: 1,
                        phase: .running,
                        message: "refused serial 2",
                        health: .healthy,
                        failures: [ReleaseFailure(serial: 2, reason: "release expired", kind: "refused")],
                        processes: []
                    )
                )
                let halted = try await api.rollout()
                #expect(halted["state"].string == "halted")
                #expect(halted["counts"]["failed"].int == 2)
                #expect(halted["counts"]["healthy"].int == 1)
                #expect(halted["counts"]["pending"].int == 1)
                let messages = try await api.events().compactMap { $0["message"].string }
                #expect(messages.contains { $0.contains("agent c refused serial 2 of web: release expired") })
            }
        }
    }

    /// `canary:1` with `maxFailures=1` whose only canary agent fails: the failure is within the tolerance, but nothing
    /// shows the serial works, so the rollout halts and the other agents keep serial 1. It used to advance, handing the
    /// failed serial to every other agent at once.
    @Test(arguments: ["canary:1", "waves:25,100", "one-at-a-time"])
    func aWaveWhoseEveryAgentFailedHalts(strategy: String) async throws {
        try await RolloutHarness.with { harness in
            try await harness.withClient { api in
                var agents: [RolloutAgent] = []
                for name in ["a", "b", "c", "d"] { agents.append(try await api.enroll(name)) }
                try await api.mustPublish(serial: 1, version: "1.0.0")
                try await api.mustPublish(serial: 2, version: "2.0.0", query: "strategy=\(strategy)&maxFailures=1&waveStableSeconds=5")
                #expect(try await api.desiredSerials(agents) == [2, 1, 1, 1])
                try await api.reportRolledBack(agents[0], failed: 2, runs: 1)
                harness.clock.advance(seconds: 6)
                await api.tick()
                let rollout = try await api.rollout()
                #expect(rollout["state"].string == "halted", "\(strategy)")
                #expect(rollout["wave"].int == 1, "\(strategy)")
                #expect(try await api.desiredSerials(agents) == [2, 1, 1, 1], "\(strategy)")
            }
        }
    }

    /// A leader that resumes after a pause (a frozen VM) may have been replaced meanwhile: it reads the health timers
    /// again from the store, where the other leader restarted an agent's timer, instead of advancing on the ones it
    /// kept in memory.
    @Test func aLeaderResumingAfterAPauseReadsTheTimersAgain() async throws {
        try await RolloutHarness.with { harness in
            try await harness.withClient { api in
                let a = try await api.enroll("a")
                let b = try await api.enroll("b")
                try await api.mustPublish(serial: 1, version: "1.0.0")
                try await api.mustPublish(serial: 2, version: "2.0.0", query: "strategy=waves:50,100&waveStableSeconds=30")
                #expect(try await api.desiredSerials([a, b]) == [2, 1])
                try await api.reportHealthy(a, serial: 2)
                // Frozen for 31 s, during which another leader saw agent a unhealthy and restarted its timer.
                let rollout = try #require(try await harness.store.currentRollouts(for: ["web"]).first)
                try await harness.store.saveRolloutHealthTimers(rolloutID: rollout.id, [a.id: harness.clock.now.addingTimeInterval(31)])
                harness.clock.advance(seconds: 31)
                try await api.reportHealthy(a, serial: 2)
                await api.tick()
                #expect(try await api.rollout()["wave"].int == 1, "agent a's timer restarted on the other leader")
                harness.clock.advance(seconds: 1)
                await api.tick()
                #expect(try await api.desiredSerials([a, b]) == [2, 1])
                harness.clock.advance(seconds: 30)
                try await api.reportHealthy(a, serial: 2)
                await api.tick()
                #expect(try await api.rollout()["wave"].int == 2)
                #expect(try await api.desiredSerials([a, b]) == [2, 2])
            }
        }
    }

    /// A status that stops arriving does not count as healthy: the wave waits for a fresh report.
    @Test func staleReportsDoNotAdvance() async throws {
        try await RolloutHarness.with { harness in
            try await harness.withClient { api in
                let a = try await api.enroll("a")
                let b = try await api.enroll("b")
                try await api.mustPublish(serial: 1, version: "1.0.0", query: "strategy=waves:50,100&waveStableSeconds=30")
                try await api.reportHealthy(a, serial: 1)
                harness.clock.advance(seconds: 60)
                await api.tick()
                #expect(try await api.rollout()["wave"].int == 1, "the last report is 60 s old and stale after 45 s")
                try await api.reportHealthy(a, serial: 1)
                await api.tick()
                #expect(try await api.rollout()["wave"].int == 1, "healthy again only since now")
                harness.clock.advance(seconds: 30)
                try await api.reportHealthy(a, serial: 1)
                #expect(try await api.rollout()["wave"].int == 2)
                #expect(try await api.desiredSerial(b) == 1)
            }
        }
    }
}

/// The rollout page of a large fleet lists a bounded number of agents, every failed one first among them, and a bounded
/// number of failures with their evidence; it says how many it left out.
@Suite struct RolloutPageListingTests {
    @Test func theRolloutPageListsABoundedNumberOfAgentsFailedOnesFirst() async throws {
        try await RolloutHarness.with { harness in
            try await harness.withClient { api in
                var agents: [RolloutAgent] = []
                for index in 0..<8 { agents.append(try await api.enroll("agent-\(index)")) }
                try await api.mustPublish(serial: 1, version: "1.0.0")
                for agent in agents { try await api.reportHealthy(agent, serial: 1) }
                try await api.mustPublish(serial: 2, version: "2.0.0", query: "maxFailures=8")
                // The last three in rollout order fail: a listing in rollout order alone would leave them out.
                for agent in agents[5...] { try await api.reportRolledBack(agent, failed: 2, runs: 1) }
                let detail = try #require(try await RolloutDetail.load(service: "web", serial: 2, from: harness.store))
                let renderer = try DetailPageRenderer()
                let bounded = renderer.render(detail, now: Date(), pollInterval: .seconds(15), listing: .init(rows: 5, failures: 2))
                let rows = bounded.components(separatedBy: "data-rollout-agent=\"").dropFirst().map { $0.prefix { $0 != "\"" } }
                #expect(rows.count == 5)
                #expect(rows.filter { ["agent-5", "agent-6", "agent-7"].contains(String($0)) }.count == 3, "every failed agent listed: \(rows)")
                #expect(rows == rows.sorted(), "in rollout order: \(rows)")
                #expect(bounded.contains(#"data-unlisted-agents="3""#))
                #expect(bounded.components(separatedBy: "data-failed-agent=").count - 1 == 2)
                #expect(bounded.contains(#"data-unlisted-failures="1""#))

                let whole = renderer.render(detail, now: Date(), pollInterval: .seconds(15))
                #expect(whole.components(separatedBy: "data-rollout-agent=").count - 1 == 8)
                #expect(whole.components(separatedBy: "data-failed-agent=").count - 1 == 3)
                #expect(!whole.contains("data-unlisted-agents") && !whole.contains("data-unlisted-failures"))
            }
        }
    }
}
