import Foundation
import Shared
import TestSupport
import Testing

/// A service taken out of the agent's configuration: its apps stop (orphans), and its files go too — its release
/// trees and the ecosystem file holding the instance env file's values stayed on the disk for good — but for the
/// applied release's tree, which it runs again when it is configured again.
@Suite("A service removed from the configuration", .serialized)
struct RemovedServiceEndToEndTests {
    @Test(
        "a service removed from the configuration loses its apps and its files; the other service runs on",
        .timeLimit(.minutes(4)),
        arguments: Backend.allCases
    )
    func aRemovedServiceLeavesNothingBehind(backend: Backend) async throws {
        _ = try backend.pm2Binary()
        try await FleetFixture.with { fleet in
            try await fleet.startController()
            let apiPort = try freeLoopbackPort()
            let webPort = try freeLoopbackPort()
            try await fleet.publish(serial: 1, version: "1.0.0-api", port: apiPort, service: "api")
            try await fleet.publish(serial: 1, version: "1.0.0-web", port: webPort, service: "web")
            let config = try await fleet.enrollAgent(name: "edge-1", services: ["api", "web"], backend: backend)
            let first = try fleet.startAgent(config: config, label: "agent")
            try await fleet.waitUntilRunning("1.0.0-api", port: apiPort, agent: "edge-1", service: "api")
            try await fleet.waitUntilRunning("1.0.0-web", port: webPort, agent: "edge-1", service: "web")
            let web = fleet.root.appendingPathComponent("edge-1/state/services/web").path
            #expect(FileManager.default.fileExists(atPath: web + "/ecosystem.json"))

            await first.terminate()
            var text = try String(contentsOfFile: config, encoding: .utf8)
            #expect(text.contains(#""services":["api","web"]"#), "\(text)")
            text = text.replacingOccurrences(of: #""services":["api","web"]"#, with: #""services":["api"]"#)
            try text.write(toFile: config, atomically: true, encoding: .utf8)
            let second = try fleet.startAgent(config: config, label: "agent-2")

            try await eventually("web's app stopped", timeout: .seconds(60)) { await fleet.appAnswer(port: webPort) == nil ? true : nil }
            try await eventually("web's ecosystem file removed", timeout: .seconds(60)) {
                FileManager.default.fileExists(atPath: web + "/ecosystem.json") ? nil : true
            }
            let kept = try FileManager.default.contentsOfDirectory(atPath: web + "/releases")
            #expect(kept.count == 1, "only the applied release's tree stays: \(kept)")
            #expect(await fleet.appAnswer(port: apiPort)?.hasPrefix("1.0.0-api") == true, "api runs on")
            let api = fleet.root.appendingPathComponent("edge-1/state/services/api/ecosystem.json").path
            #expect(FileManager.default.fileExists(atPath: api), "api's files stay")

            // Configured again, web runs its applied release again, without a new publish.
            await second.terminate()
            try text.replacingOccurrences(of: #""services":["api"]"#, with: #""services":["api","web"]"#)
                .write(toFile: config, atomically: true, encoding: .utf8)
            _ = try fleet.startAgent(config: config, label: "agent-3")
            try await fleet.waitUntilRunning("1.0.0-web", port: webPort, agent: "edge-1", service: "web")
            #expect(FileManager.default.fileExists(atPath: web + "/ecosystem.json"), "its ecosystem file is written again")
        }
    }
}
