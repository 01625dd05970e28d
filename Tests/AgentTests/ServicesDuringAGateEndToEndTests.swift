import Foundation
import Shared
import TestSupport
import Testing

@testable import Agent

/// The agent acts on one service at a time, so a release in a long health gate holds the other services until its
/// verdict. Their health is still judged from the tables the gate reads: an app of another service that crashes during
/// the gate is reported unhealthy then, not at the gate's end with its old pids as healthy.
@Suite("Other services during a health gate, end to end", .serialized)
struct ServicesDuringAGateEndToEndTests {
    @Test("a service whose app crashes during another service's long gate is reported unhealthy before that gate ends", .timeLimit(.minutes(4)))
    func anotherServiceIsJudgedDuringAGate() async throws {
        try await FleetFixture.with { fleet in
            try await fleet.startController()
            let apiPort = try freeLoopbackPort()
            let webPort = try freeLoopbackPort()
            let trigger = fleet.root.appendingPathComponent("web-crashes").path
            try await fleet.publish(serial: 1, version: "1.0.0-api", port: apiPort, service: "api", appName: "api-app")
            try await fleet.publish(serial: 1, version: "1.0.0-web", port: webPort, crashWhen: trigger, service: "web", appName: "web-app")
            let config = try await fleet.enrollAgent(name: "edge-1", services: ["api", "web"])
            _ = try fleet.startAgent(config: config, label: "agent")
            let control = try #require(fleet.controls["edge-1"])
            try await fleet.waitUntilRunning("1.0.0-api", port: apiPort, agent: "edge-1", service: "api")
            try await fleet.waitUntilRunning("1.0.0-web", port: webPort, agent: "edge-1", service: "web")
            try await eventually("web healthy", timeout: .seconds(30)) {
                try await fleet.fleetEntry(agent: "edge-1", service: "web")?["health"]?.stringValue == "healthy" ? true : nil
            }

            // api's serial 2 waits on a health URL nothing answers: its gate lasts its whole 90 s deadline.
            let silent = try freeLoopbackPort()
            try await fleet.publish(
                serial: 2,
                version: "2.0.0-api",
                port: apiPort,
                service: "api",
                healthURL: "http://127.0.0.1:\(silent)/",
                deadline: 90,
                appName: "api-app"
            )
            try await eventually("api in its gate", timeout: .seconds(60)) {
                try await fleet.fleetEntry(agent: "edge-1", service: "api")?["phase"]?.stringValue == "deploying" ? true : nil
            }
            // web's app dies, and every start of it crashes at boot from now on.
            #expect(FileManager.default.createFile(atPath: trigger, contents: Data()))
            let pid = try #require(try await control.table().first { $0.name == "web-app" }?.pid)
            #expect(kill(pid, SIGKILL) == 0)

            let seen = try await eventually("web reported unhealthy", timeout: .seconds(45), interval: .milliseconds(500)) { () -> JSONValue? in
                guard let web = try await fleet.fleetEntry(agent: "edge-1", service: "web"), web["health"]?.stringValue == "unhealthy" else {
                    return nil
                }
                return web
            }
            let api = try await fleet.fleetEntry(agent: "edge-1", service: "api")
            #expect(
                api?["phase"]?.stringValue == "deploying",
                "api's gate was still running when web was seen unhealthy: \(String(describing: api)); web: \(seen)"
            )
        }
    }
}
