import Foundation
import Shared
import TestSupport
import Testing

/// The whole system for real: a live `ferry-controller` on a loopback port, a real `ferry-agent run` under each
/// process manager (the builtin supervisor and real PM2), a Node HTTP app packed into tar.gz releases by the test.
@Suite("Agent end to end", .serialized)
struct AgentEndToEndTests {
    @Test("install, reload, crash → rollback, forged and replayed releases, controller outage", .timeLimit(.minutes(5)), arguments: Backend.allCases)
    func endToEnd(backend: Backend) async throws {
        _ = try backend.pm2Binary()
        try await FleetFixture.with { fleet in try await run(fleet, backend: backend) }
    }

    private func run(_ fleet: FleetFixture, backend: Backend) async throws {
        try await fleet.startController()
        let port = try freeLoopbackPort()
        let v1 = try await fleet.publish(serial: 1, version: "1.0.0", port: port)
        let config = try await fleet.enrollAgent(name: "edge-1", backend: backend)
        _ = try fleet.startAgent(config: config, label: "agent")

        // v1 serving.
        try await fleet.waitUntilRunning("1.0.0", port: port, agent: "edge-1")

        // v2: published, picked up through the long-poll, serving.
        let v2 = try await fleet.publish(serial: 2, version: "2.0.0", port: port)
        try await eventually("v2 serving") { await fleet.appAnswer(port: port)?.hasPrefix("2.0.0") == true ? true : nil }

        // v3 crashes at boot: the agent rolls back on its own; v2 keeps serving; the fleet says why.
        try await fleet.publish(serial: 3, version: "3.0.0", port: port, crash: true)
        let entry = try await eventually("the fleet shows v3 rolled back", timeout: .seconds(90)) { () -> JSONValue? in
            let entry = try await fleet.fleetEntry(agent: "edge-1")
            return entry?["phase"]?.stringValue == "rolled-back" ? entry : nil
        }
        #expect(entry["serial"]?.intValue == 2)
        let message = entry["message"]?.stringValue ?? ""
        #expect(message.contains("serial 3") && message.contains("rolled back to serial 2"), "message: \(message)")
        // PM2 gives up (`errored`) after max_restarts, but between two crash restarts it shows the app `stopped`; the
        // gate fails it on whichever it sees first (`ProcessTableCheck`), or on the health check.
        #expect(
            message.contains("errored") || message.contains("although autorestart is on (it exited)") || message.contains("not healthy"),
            "the reason names what failed: \(message)"
        )
        // The rollback is reported as soon as it is done; the restored release then passes its own health gate, and
        // the report says so: v2 serves again.
        try await eventually("the fleet shows v2 healthy again after the rollback", timeout: .seconds(60)) { () -> Bool? in
            let entry = try await fleet.fleetEntry(agent: "edge-1")
            let message = entry?["message"]?.stringValue ?? ""
            return message.hasSuffix("; serial 2 is healthy again") && entry?["health"]?.stringValue == "healthy" ? true : nil
        }
        #expect(await fleet.appAnswer(port: port)?.hasPrefix("2.0.0") == true)

        // A compromised controller: stop the real one, serve forged documents from its address.
        let controllerPort = fleet.controller.port
        let agentID = try agentID(config: config)
        await fleet.controller.stop()
        let rogue = RogueController(port: controllerPort)
        do {
            // (a) v2's envelope with a tampered payload claiming serial 10.
            var tampered = v2
            let forged = String(decoding: tampered.payload, as: UTF8.self)
                .replacingOccurrences(of: "\"serial\":2", with: "\"serial\":10")
                .replacingOccurrences(of: "2.0.0", with: "6.6.6")
            tampered.payload = Array(forged.utf8)
            await rogue.serve([tampered], agentID: agentID)
            let tamperReport = try await eventually("the agent reports the tampered serial refused") { () -> ServiceStatus? in
                let reports = await rogue.recorder.reports
                return reports.last?.services.first { $0.failures.contains { $0.serial == 10 && $0.kind == "refused" } }
            }
            let reason = tamperReport.failures.first(where: { $0.serial == 10 }).map(\.reason) ?? ""
            #expect(reason.contains("does not verify"), "reason: \(reason)")
            #expect(tamperReport.serial == 2)
            #expect(await fleet.appAnswer(port: port)?.hasPrefix("2.0.0") == true)

            // (b) a replay of the older, genuinely signed serial 1.
            await rogue.serve([v1], agentID: agentID)
            let replayReport = try await eventually("the agent reports the replayed serial refused") { () -> ServiceStatus? in
                let reports = await rogue.recorder.reports
                return reports.last?.services.first { $0.failures.contains { $0.serial == 1 && $0.kind == "refused" } }
            }
            let replayReason = replayReport.failures.first(where: { $0.serial == 1 }).map(\.reason) ?? ""
            #expect(replayReason.contains("not above serial 3"), "reason: \(replayReason)")
            #expect(await fleet.appAnswer(port: port)?.hasPrefix("2.0.0") == true)
        }
        await rogue.stop()

        // The controller is gone: v2 keeps serving.
        try await Task.sleep(for: .seconds(3))
        #expect(await fleet.appAnswer(port: port)?.hasPrefix("2.0.0") == true)

        // The controller comes back on its address: the agent reports again.
        let before = Date()
        try await fleet.controller.start(port: controllerPort)
        try await eventually("the agent reports to the restarted controller", timeout: .seconds(90)) { () -> Bool? in
            guard let text = try await fleet.fleetEntry(agent: "edge-1")?["updatedAt"]?.stringValue,
                let updated = Timestamp.parse(text)
            else { return nil }
            return updated.timeIntervalSince(before) >= -1 ? true : nil
        }
        #expect(await fleet.appAnswer(port: port)?.hasPrefix("2.0.0") == true)
        #expect(try await fleet.fleetEntry(agent: "edge-1")?["serial"]?.intValue == 2)
    }

    private func agentID(config: String) throws -> String {
        let json = try JSONValue.parse(Array(try Data(contentsOf: URL(fileURLWithPath: config))))
        guard let id = json["agentId"]?.stringValue else { throw HarnessError("no agentID in \(config)") }
        return id
    }
}
