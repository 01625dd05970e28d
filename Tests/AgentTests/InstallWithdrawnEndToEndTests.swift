import Foundation
import Shared
import TestSupport
import Testing

@testable import Agent

/// A release whose download keeps failing, and whose rollout the operator then aborts: the controller offers the
/// running serial again, and the agent gives up the pending one. Before, it stayed pending for ever: the service's
/// health was frozen, its message said "not installed yet", and every restart of the agent reloaded its apps.
@Suite("An aborted install is given up", .serialized)
struct InstallWithdrawnEndToEndTests {
    @Test("the pending release goes when the controller offers the running serial again", .timeLimit(.minutes(3)))
    func anAbortedRolloutWithdrawsThePendingInstall() async throws {
        try await FleetFixture.with { fleet in
            try await fleet.startController()
            let port = try freeLoopbackPort()
            try await fleet.publish(serial: 1, version: "1.0.0", port: port)
            let config = try await fleet.enrollAgent(name: "edge-1", longPollSeconds: 2)
            _ = try fleet.startAgent(config: config, label: "agent")
            try await fleet.waitUntilRunning("1.0.0", port: port, agent: "edge-1")

            // Serial 2's artifact is on a host that refuses every connection: its download fails at every pass.
            let closed = try freeLoopbackPort()
            let bytes = Array("never served".utf8)
            let artifact = ArtifactReference(url: "http://127.0.0.1:\(closed)/web-2.tgz", sha256: SHA256.hash(bytes), size: Int64(bytes.count))
            let envelope = try fleet.release(serial: 2, version: "2.0.0", artifact: artifact, port: port)
            let (status, body) = try await fleet.controller.publish(envelope, token: fleet.operatorToken, query: "strategy=one-at-a-time")
            #expect(status == 201, "\(body)")
            try await eventually("serial 2 pending, its download failing", timeout: .seconds(60)) {
                (try await fleet.fleetEntry(agent: "edge-1")?["message"]?.stringValue ?? "").contains("serial 2 (2.0.0) not installed yet")
                    ? true : nil
            }

            let abort = try await HTTPClient().send(
                HTTPClient.Request(
                    method: .post,
                    url: "\(fleet.controller.url)/v1/services/web/rollout/abort?serial=2",
                    headers: ["Authorization": "Bearer \(fleet.operatorToken)"]
                )
            )
            #expect(abort.status == 200, "\(String(decoding: abort.body, as: UTF8.self))")
            let entry = try await eventually("the pending install given up", timeout: .seconds(60)) { () -> JSONValue? in
                let entry = try await fleet.fleetEntry(agent: "edge-1")
                return (entry?["message"]?.stringValue ?? "").contains("serial 2 (2.0.0) is no longer offered by the controller") ? entry : nil
            }
            #expect(entry["phase"]?.stringValue == "running")
            #expect(entry["serial"]?.intValue == 1)
            try await eventually("health judged again", timeout: .seconds(30)) {
                try await fleet.fleetEntry(agent: "edge-1")?["health"]?.stringValue == "healthy" ? true : nil
            }
            #expect(await fleet.appAnswer(port: port)?.hasPrefix("1.0.0") == true)
        }
    }
}
