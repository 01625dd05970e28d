import Foundation
import Shared
import TestSupport
import Testing

/// kill -9 of the agent in the health gate of a release that adds an app, then a restart while the controller is away:
/// the agent puts the applied release back (`current`, its apps), and the app only the interrupted release runs goes
/// too. It used to be left running beside the restored release, from its files, until the controller answered and the
/// install was retried.
@Suite("Interrupted install restore", .serialized)
struct InterruptedInstallRestoreTests {
    @Test("a restore removes the apps only the interrupted release runs", .timeLimit(.minutes(4)))
    func aRestoreRemovesTheInterruptedReleasesOwnApps() async throws {
        try await FleetFixture.with { fleet in
            try await fleet.startController()
            let port = try freeLoopbackPort()
            try await fleet.publish(serial: 1, version: "1.0.0", port: port)
            let config = try await fleet.enrollAgent(name: "crashy")
            let first = try fleet.startAgent(config: config, label: "agent-1")
            try await fleet.waitUntilRunning("1.0.0", port: port, agent: "crashy")

            // v2 adds a worker, and its health gate asks for a minute of health: the kill lands in it.
            try await fleet.publishWithShellApp(
                serial: 2,
                version: "2.0.0",
                shell: ("worker", "#!/bin/sh\nexec /bin/sleep 100000\n"),
                webOptions: ["env": .object(["PORT": .string("\(port)")])],
                health: HealthCheck(http: "http://127.0.0.1:\(port)/", deadlineSeconds: 120, stableSeconds: 60)
            )
            let control = try #require(fleet.controls["crashy"])
            try await eventually("v2 in its health gate, the worker running", timeout: .seconds(60)) { () -> Bool? in
                let table = try await control.table()
                let v2 = await fleet.appAnswer(port: port)?.hasPrefix("2.0.0") == true
                return v2 && table.contains { $0.name == "web-worker" && $0.status == .online } ? true : nil
            }
            first.kill()
            await fleet.controller.stop()

            _ = try fleet.startAgent(config: config, label: "agent-2")
            try await eventually("v1 restored without the worker", timeout: .seconds(60)) { () -> Bool? in
                let names = Set(try await control.table().map(\.name))
                let v1 = await fleet.appAnswer(port: port)?.hasPrefix("1.0.0") == true
                return v1 && names == ["web-app"] ? true : nil
            }
            let state = URL(fileURLWithPath: config).deletingLastPathComponent().appendingPathComponent("state")
            let current = try FileManager.default.destinationOfSymbolicLink(atPath: state.appendingPathComponent("services/web/current").path)
            #expect(current.hasPrefix("releases/1-"), "current points at \(current)")
        }
    }
}
