import Foundation
import Shared
import TestSupport
import Testing

/// Staged rollouts with real agents: three `ferry-agent` processes (builtin supervisor), each running the web app on
/// its own port (set in its instance env file), a live controller deciding who gets which serial.
@Suite("Rollouts end to end", .serialized)
struct RolloutEndToEndTests {
    @Test(.timeLimit(.minutes(6)))
    func aCrashingReleaseHaltsAfterTheFirstWaveThenAGoodOneReachesEveryone() async throws {
        try await FleetFixture.with { fleet in try await run(fleet) }
    }

    private func run(_ fleet: FleetFixture) async throws {
        try await fleet.startController()
        let names = ["agent-a", "agent-b", "agent-c"]
        var ports: [String: Int] = [:]
        for name in names {
            let port = try freeLoopbackPort()
            ports[name] = port
            let config = try await fleet.enrollAgent(name: name, instanceEnv: ["PORT": "\(port)"])
            _ = try fleet.startAgent(config: config, label: name)
        }
        func answers(_ version: String) async -> [String] {
            var who: [String] = []
            for name in names where await fleet.appAnswer(port: ports[name]!)?.hasPrefix(version) == true { who.append(name) }
            return who
        }

        try await fleet.publish(serial: 1, version: "1.0.0", port: 0)
        try await eventually("v1 on all three", timeout: .seconds(90)) { await answers("1.0.0").count == 3 ? true : nil }
        // And reported: an app answers before its agent's health gate has passed, and the fleet shows serial 1 only once
        // the agent says so (on a loaded machine, one was still "deploying serial 1" when serial 2's rollout halted).
        try await eventually("all three report serial 1 running", timeout: .seconds(90)) { () -> Bool? in
            for name in names {
                let entry = try await fleet.fleetEntry(agent: name)
                guard entry?["serial"]?.intValue == 1, entry?["phase"]?.stringValue == "running" else { return nil }
            }
            return true
        }

        // v2 crashes at boot, published in waves: only the first wave's agent gets it, rolls back, the rollout halts.
        try await fleet.publish(serial: 2, version: "2.0.0", port: 0, crash: true, query: "strategy=waves:34,100&waveStableSeconds=3")
        let halted = try await eventually("the rollout of serial 2 halted", timeout: .seconds(90)) { () -> JSONValue? in
            let rollouts = try await fleet.controller.get("/v1/rollouts?service=web", token: fleet.viewerToken)
            let rollout = Self.rollouts(rollouts).first { $0["serial"]?.intValue == 2 }
            return rollout?["state"]?.stringValue == "halted" ? rollout : nil
        }
        let fleetDoc = try await fleet.controller.fleet(token: fleet.viewerToken)
        var sawSerial2: [String] = []
        for agent in fleetDoc["agents"]?.arrayValue ?? [] {
            let name = agent["name"]?.stringValue ?? "?"
            let entry = agent["services"]?.arrayValue.first { $0["service"]?.stringValue == "web" }
            if entry?["targetSerial"]?.intValue == 2 || entry?["serial"]?.intValue == 2 { sawSerial2.append(name) }
            #expect(entry?["serial"]?.intValue == 1, "\(name) still runs serial 1: \(agent)")
        }
        #expect(sawSerial2.count == 1, "exactly the first wave's agent received serial 2: \(sawSerial2) rollout: \(halted)")
        // The rollback is reported as soon as it is done, before the first wave's agent has v1 answering again (its
        // restart): the halt can come first.
        try await eventually("everyone serves v1 (the first wave's agent once its rollback restarted it)", timeout: .seconds(60)) {
            await answers("1.0.0").count == 3 ? true : nil
        }

        // Give the halted rollout time to (wrongly) advance: the other two must still never see serial 2.
        try await Task.sleep(for: .seconds(5))
        for name in names where !sawSerial2.contains(name) {
            let entry = try await fleet.fleetEntry(agent: name)
            #expect(entry?["targetSerial"]?.intValue != 2 && entry?["serial"]?.intValue == 1, "\(name) never received serial 2")
        }

        // v3 is good: wave one, then everyone.
        try await fleet.publish(serial: 3, version: "3.0.0", port: 0, query: "strategy=waves:34,100&waveStableSeconds=3")
        try await eventually("v3 on all three", timeout: .seconds(120)) { await answers("3.0.0").count == 3 ? true : nil }
        try await eventually("the rollout of serial 3 completed") { () -> Bool? in
            let rollouts = try await fleet.controller.get("/v1/rollouts?service=web", token: fleet.viewerToken)
            return Self.rollouts(rollouts).first { $0["serial"]?.intValue == 3 }?["state"]?.stringValue == "completed" ? true : nil
        }
    }

    static func rollouts(_ document: JSONValue) -> [JSONValue] {
        if case .array(let items) = document { return items }
        return document["rollouts"]?.arrayValue ?? []
    }
}
