import Foundation
import Shared
import Testing

@testable import Controller

/// Operator actions on rollouts, restarts, and the refusals of the rollout API.
@Suite struct RolloutControlTests {
    /// Pause stops advancement, resume continues, and a completed rollout refuses both.
    @Test func pauseStopsAdvancementAndResumeContinues() async throws {
        try await RolloutHarness.with { harness in
            try await harness.withClient { api in
                let a = try await api.enroll("a")
                let b = try await api.enroll("b")
                try await api.mustPublish(serial: 1, version: "1.0.0")
                try await api.mustPublish(serial: 2, version: "2.0.0", query: "strategy=one-at-a-time&waveStableSeconds=10")
                let paused = try await api.act("pause")
                #expect(paused.status == 200)
                #expect(paused.json["state"].string == "paused")
                #expect(paused.json["reason"].string == "paused by test-operator")
                #expect(try await api.act("pause").status == 409)

                try await api.reportHealthy(a, serial: 2)
                harness.clock.advance(seconds: 20)
                try await api.reportHealthy(a, serial: 2)
                await api.tick()
                #expect(try await api.rollout()["wave"].int == 1)
                #expect(try await api.desiredSerials([a, b]) == [2, 1])

                let resumed = try await api.act("resume")
                #expect(resumed.status == 200)
                #expect(resumed.json["state"].string == "rolling")
                await api.tick()
                #expect(try await api.rollout()["wave"].int == 2, "a has been healthy for 20 s, paused or not")
                #expect(try await api.desiredSerials([a, b]) == [2, 2])
                try await api.reportHealthy(b, serial: 2)
                harness.clock.advance(seconds: 10)
                await api.tick()
                #expect(try await api.rollout()["state"].string == "completed")

                let refused = try await api.act("resume")
                #expect(refused.status == 409)
                #expect(refused.json["error"].string == "rollout_state_conflict")
                #expect(
                    refused.json["message"].string == "cannot resume the rollout of serial 2 of web: it is completed; it already reached every agent"
                )
                #expect(try await api.act("abort").status == 409)
                let kinds = try await api.events().compactMap { $0["kind"].string }
                #expect(Array(kinds.prefix(5)) == ["completed", "wave-advanced", "resumed", "paused", "published"])
            }
        }
    }

    /// Abort: agents not reached, and reached ones that did not install, stay on the previous serial; an agent that
    /// installed the new serial keeps it (and the message says how to go back).
    /// `?serial=N` acts on the rollout the operator meant: an abort of serial 2 that arrives after serial 3 was
    /// published is refused (2 is superseded), and 3 rolls on. Without a serial, the latest is taken, as before.
    @Test func anActionNamesItsSerial() async throws {
        try await RolloutHarness.with { harness in
            try await harness.withClient { api in
                _ = try await api.enroll("a")
                _ = try await api.enroll("b")
                try await api.mustPublish(serial: 1, version: "1.0.0")
                try await api.mustPublish(serial: 2, version: "2.0.0", query: "strategy=one-at-a-time&waveStableSeconds=5")
                try await api.mustPublish(serial: 3, version: "3.0.0", query: "strategy=one-at-a-time&waveStableSeconds=5")
                let late = try await api.act("abort?serial=2")
                #expect(late.status == 409 && late.json["error"].string == "rollout_state_conflict", "\(late.json)")
                #expect(try await api.rollout()["serial"].int == 3)
                #expect(try await api.rollout()["state"].string == "rolling", "serial 3 is not aborted")
                let paused = try await api.act("pause?serial=3")
                #expect(paused.status == 200 && paused.json["serial"].int == 3 && paused.json["state"].string == "paused", "\(paused.json)")
                let unknown = try await api.act("resume?serial=9")
                #expect(unknown.status == 404 && unknown.json["error"].string == "unknown_rollout", "\(unknown.json)")
                for bad in ["0", "-1", "x", "9007199254740993", "99999999999999999999"] {
                    let refused = try await api.act("resume?serial=\(bad)")
                    #expect(refused.status == 400 && refused.json["error"].string == "invalid_serial", "\(bad): \(refused.json)")
                }
                #expect(try await api.act("resume").json["state"].string == "rolling")
            }
        }
    }

    @Test func abortLeavesEveryoneElseOnThePreviousRelease() async throws {
        try await RolloutHarness.with { harness in
            try await harness.withClient { api in
                let agents = [try await api.enroll("a"), try await api.enroll("b"), try await api.enroll("c")]
                let (a, b, c) = (agents[0], agents[1], agents[2])
                try await api.mustPublish(serial: 1, version: "1.0.0")
                for agent in agents { try await api.reportHealthy(agent, serial: 1) }
                try await api.mustPublish(serial: 2, version: "2.0.0", query: "strategy=waves:67,100")
                #expect(try await api.desiredSerials(agents) == [2, 2, 1])
                try await api.reportHealthy(a, serial: 2)

                let aborted = try await api.act("abort")
                #expect(aborted.status == 200)
                #expect(aborted.json["state"].string == "aborted")
                let reason = aborted.json["reason"].string ?? ""
                #expect(reason.contains("1 agent(s) already run serial 2 and keep it (a)"))
                #expect(reason.contains("ferry-controller rollback --service web"))
                #expect(reason.contains("The other agents stay on serial 1"))
                #expect(try await api.desiredSerials(agents) == [2, 1, 1])

                // b had fetched serial 2 just before the abort and reports it installed: it keeps it (it would refuse 1).
                try await api.reportHealthy(b, serial: 2)
                #expect(try await api.desiredSerials(agents) == [2, 2, 1])
                #expect(try await api.act("resume").status == 409)
                #expect(try await api.act("abort").status == 409)
                harness.clock.advance(seconds: 120)
                await api.tick()
                #expect(try await api.desiredSerial(c) == 1)
                let event = try await api.events(limit: 5).first { $0["kind"].string == "aborted" }
                #expect(event?["message"].string?.contains("aborted by test-operator") == true)
            }
        }
    }

    /// Every controller down for an hour mid-wave: the wave timers start again at the first healthy report after it,
    /// so the wave waits its whole `waveStableSeconds` on what the controller sees. They were continued from before the
    /// outage, and the first report after it advanced the wave on an hour nobody saw (the agent may have crashed and
    /// come back meanwhile). A restart within a status's freshness continues them (`restartMidRolloutResumesAtTheSameWave`).
    @Test func anOutageLongerThanAStatusStaysFreshStartsTheWaveTimersAgain() async throws {
        try await RolloutHarness.with { harness in
            let agents = try await harness.withClient { api in
                let agents = [try await api.enroll("a"), try await api.enroll("b")]
                try await api.mustPublish(serial: 1, version: "1.0.0")
                try await api.mustPublish(serial: 2, version: "2.0.0", query: "strategy=one-at-a-time&waveStableSeconds=300")
                for _ in 0..<10 {
                    try await api.reportHealthy(agents[0], serial: 2)
                    await api.tick()
                    harness.clock.advance(seconds: 20)
                }
                #expect(try await api.rollout()["wave"].int == 1, "200 s of 300")
                return agents
            }

            try await harness.reopen()
            harness.clock.advance(seconds: 3600)
            try await harness.withClient { api in
                try await api.reportHealthy(agents[0], serial: 2)
                await api.tick()
                #expect(try await api.rollout()["wave"].int == 1, "the timer started again at this report")
                for _ in 0..<14 {
                    harness.clock.advance(seconds: 20)
                    try await api.reportHealthy(agents[0], serial: 2)
                    await api.tick()
                }
                #expect(try await api.rollout()["wave"].int == 1, "280 s since the outage")
                harness.clock.advance(seconds: 20)
                try await api.reportHealthy(agents[0], serial: 2)
                await api.tick()
                #expect(try await api.rollout()["wave"].int == 2, "300 s since the outage")
            }
        }
    }

    /// A controller restart mid-rollout: state, wave, desired states and the wave timers survive (the timers are
    /// persisted: the controller that drives rollouts next continues them instead of starting them again).
    @Test func restartMidRolloutResumesAtTheSameWave() async throws {
        try await RolloutHarness.with { harness in
            let agents = try await harness.withClient { api in
                let agents = [try await api.enroll("a"), try await api.enroll("b"), try await api.enroll("c")]
                try await api.mustPublish(serial: 1, version: "1.0.0")
                try await api.mustPublish(serial: 2, version: "2.0.0", query: "strategy=one-at-a-time&waveStableSeconds=30")
                try await api.reportHealthy(agents[0], serial: 2)
                harness.clock.advance(seconds: 30)
                await api.tick()
                #expect(try await api.rollout()["wave"].int == 2)
                for agent in agents.prefix(2) { try await api.reportHealthy(agent, serial: 2) }
                harness.clock.advance(seconds: 20)
                await api.tick()
                #expect(try await api.rollout()["wave"].int == 2)
                return agents
            }

            try await harness.reopen()
            try await harness.withClient { api in
                let rollout = try await api.rollout()
                #expect(rollout["state"].string == "rolling")
                #expect(rollout["wave"].int == 2)
                #expect(try await api.desiredSerials(agents) == [2, 2, 1])
                // b has been healthy for 25 s: the restarted controller knows it from the persisted timer, and still
                // waits the rest of the 30 s.
                harness.clock.advance(seconds: 5)
                for agent in agents.prefix(2) { try await api.reportHealthy(agent, serial: 2) }
                await api.tick()
                #expect(try await api.rollout()["wave"].int == 2)
                #expect(try await api.desiredSerials(agents) == [2, 2, 1])
                // 35 s since b's first healthy report, only 10 s of them seen by this controller: the wave advances.
                harness.clock.advance(seconds: 10)
                for agent in agents.prefix(2) { try await api.reportHealthy(agent, serial: 2) }
                await api.tick()
                #expect(try await api.rollout()["wave"].int == 3)
                #expect(try await api.desiredSerials(agents) == [2, 2, 2])
            }

            // A paused rollout stays paused across a restart.
            try await harness.withClient { api async throws -> Void in #expect(try await api.act("pause").status == 200) }
            try await harness.reopen()
            try await harness.withClient { api async throws -> Void in
                #expect(try await api.rollout()["state"].string == "paused")
                #expect(try await api.act("resume").status == 200)
            }
        }
    }

    /// Refusals of the rollout API: the status code, the error code and a message naming the problem.
    @Test func refusesWhatItCannotDo() async throws {
        try await RolloutHarness.with { harness in
            try await harness.withClient { api in
                _ = try await api.enroll("a", services: ["api"])
                let cases: [(method: String, uri: String, token: String, status: Int, error: String, mentions: String)] = [
                    ("POST", "/v1/services/web/rollout/pause", harness.operatorToken, 404, "unknown_service", "web"),
                    ("POST", "/v1/services/api/rollout/abort", harness.operatorToken, 404, "no_rollout", "api"),
                    ("POST", "/v1/services/Web!/rollout/pause", harness.operatorToken, 400, "invalid_service", "Web!"),
                    ("POST", "/v1/services/api/rollout/pause", harness.viewerToken, 403, "forbidden", "operator"),
                    ("POST", "/v1/services/api/rollout/restart", harness.operatorToken, 404, "not_found", "route"),
                    ("GET", "/v1/rollouts?limit=0", harness.viewerToken, 400, "invalid_limit", "limit"),
                    // A service's history judges every agent of each rollout it lists: at most 100 (it took 1000).
                    ("GET", "/v1/rollouts?service=api&limit=101", harness.viewerToken, 400, "invalid_limit", "at most 100 rollouts"),
                    ("GET", "/v1/events?limit=many", harness.viewerToken, 400, "invalid_limit", "limit"),
                    ("GET", "/v1/events?service=..", harness.viewerToken, 400, "invalid_service", ".."),
                    ("GET", "/v1/rollouts", harness.enrollToken, 403, "forbidden", "viewer"),
                ]
                for item in cases {
                    let answer = try await api.call(item.method == "GET" ? .get : .post, item.uri, token: item.token)
                    #expect(answer.status == item.status, "\(item.uri)")
                    #expect(answer.json["error"].string == item.error, "\(item.uri)")
                    #expect(answer.json["message"].string?.contains(item.mentions) == true, "\(item.uri): \(answer.json)")
                }
            }
        }
    }

    /// Invalid rollout parameters refuse the publish with a 400 naming the parameter, and store nothing.
    @Test(arguments: [
        ("strategy=waves:10,50", "invalid_strategy", "strategy \"waves:10,50\" is invalid: the last wave must be 100 (every agent)"),
        ("strategy=sometimes", "invalid_strategy", "strategy \"sometimes\" is invalid"),
        ("strategy=canary:0", "invalid_strategy", "canary:N needs a whole number of agents from 1 to 100000"),
        ("waveStableSeconds=soon", "invalid_wave_stable_seconds", "waveStableSeconds must be a whole number of seconds"),
        ("maxFailures=-2", "invalid_max_failures", "maxFailures must be a whole number from 0 to 100000"),
        ("strateg=all", "unknown_parameter", "unknown query parameter \"strateg\""),
        ("strategy=all&strategy=all", "repeated_parameter", "query parameter strategy is given more than once"),
    ])
    func refusesInvalidPublishParameters(query: String, error: String, message: String) async throws {
        try await RolloutHarness.with { harness in
            try await harness.withClient { api in
                let answer = try await api.publish(serial: 1, version: "1.0.0", query: query)
                #expect(answer.status == 400)
                #expect(answer.json["error"].string == error)
                #expect(answer.json["message"].string?.contains(message) == true, "\(answer.json)")
                #expect(try await harness.store.latestSerial(service: "web") == nil)
                #expect(try await api.events().isEmpty)
            }
        }
    }

    /// `GET /v1/fleet` carries each service's latest rollout and the newest events.
    @Test func fleetShowsRolloutsAndEvents() async throws {
        try await RolloutHarness.with { harness in
            try await harness.withClient { api in
                let a = try await api.enroll("a")
                _ = try await api.enroll("b")
                try await api.mustPublish(serial: 1, version: "1.0.0")
                try await api.mustPublish(serial: 2, version: "2.0.0", query: "strategy=canary:1")
                try await api.reportRolledBack(a, failed: 2, runs: 1, reason: "exit code 1")
                let fleet = try await api.call(.get, "/v1/fleet", token: harness.viewerToken).json
                let rollout = fleet["rollouts"][0]
                #expect(rollout["serial"].int == 2)
                #expect(rollout["state"].string == "halted")
                #expect(rollout["strategy"].string == "canary:1")
                #expect(rollout["counts"]["agents"].int == 2)
                #expect(rollout["counts"]["failed"].int == 1)
                #expect(rollout["counts"]["pending"].int == 1)
                #expect(rollout["waves"].array.map { $0["reached"].value } == [.bool(true), .bool(false)])
                let kinds = fleet["events"].array.compactMap { $0["kind"].string }
                #expect(kinds == ["halted", "rolled-back", "published", "published"])
                #expect(fleet["events"][1]["agentId"].string == a.id)
            }
        }
    }
}
