import Foundation
import Shared
import TestSupport
import Testing

@testable import Agent

/// Two services of one instance whose first releases name the same app, installed in the same pass: the second is
/// refused, and the first keeps its app. The clash check used the apps read at the start of the pass (none yet), so the
/// second took the app over, and from then on each service's drift repair took it back from the other.
@Suite("App name clash between services", .serialized)
struct AppNameClashEndToEndTests {
    @Test("the second service to install an app name another service just installed is refused", .timeLimit(.minutes(3)))
    func aClashInOnePassIsRefused() async throws {
        try await FleetFixture.with { fleet in
            try await fleet.startController()
            let port = try freeLoopbackPort()
            // Published before the agent starts: its first pass installs both ("api" before "web").
            try await fleet.publish(serial: 1, version: "1.0.0-api", port: port, service: "api", appName: "shared")
            try await fleet.publish(serial: 1, version: "1.0.0-web", port: port, service: "web", appName: "shared")
            let config = try await fleet.enrollAgent(name: "edge-1", services: ["api", "web"])
            _ = try fleet.startAgent(config: config, label: "agent")

            try await fleet.waitUntilRunning("1.0.0-api", port: port, agent: "edge-1", service: "api")
            let refusal = try await eventually("web refused for the clash", timeout: .seconds(60)) { () -> String? in
                let message = try await fleet.fleetEntry(agent: "edge-1", service: "web")?["message"]?.stringValue ?? ""
                return message.contains("app name shared is already used by service api") ? message : nil
            }
            #expect(refusal.contains("serial 1"), "\(refusal)")
            // The app stays api's: the same process answers across several drift checks (every 5 s by default).
            let first = try #require(await fleet.appAnswer(port: port))
            #expect(first.hasPrefix("1.0.0-api"), "\(first)")
            try await Task.sleep(for: .seconds(12))
            let later = try #require(await fleet.appAnswer(port: port))
            #expect(later == first, "the app was taken over: \(first) → \(later)")
            #expect(try await fleet.fleetEntry(agent: "edge-1", service: "api")?["phase"]?.stringValue == "running")
        }
    }
}

extension AppNameClashEndToEndTests {
    /// A newer release of a running service is refused for a clash, and offered at every pass: the running release is
    /// still looked after meanwhile. Its env file changes (a rotated secret) and its apps get it. The refusal used to
    /// return before that, and the planner skips a service being installed, so nothing repaired or refreshed it until a
    /// serial without the clash came.
    @Test("a release refused for a clash leaves the running release looked after", .timeLimit(.minutes(3)))
    func theRunningReleaseIsStillLookedAfter() async throws {
        try await FleetFixture.with { fleet in
            try await fleet.startController()
            let apiPort = try freeLoopbackPort()
            let webPort = try freeLoopbackPort()
            try await fleet.publish(serial: 1, version: "1.0.0-api", port: apiPort, service: "api", appName: "api-app")
            try await fleet.publish(serial: 1, version: "1.0.0-web", port: webPort, service: "web", appName: "web-app")
            let config = try await fleet.enrollAgent(name: "edge-1", services: ["api", "web"])
            _ = try fleet.startAgent(config: config, label: "agent")
            try await fleet.waitUntilRunning("1.0.0-api", port: apiPort, agent: "edge-1", service: "api")
            try await fleet.waitUntilRunning("1.0.0-web", port: webPort, agent: "edge-1", service: "web")

            try await fleet.publish(serial: 2, version: "2.0.0-api", port: apiPort, service: "api", appName: "web-app")
            try await eventually("api's serial 2 refused for the clash", timeout: .seconds(60)) { () -> Bool? in
                let message = try await fleet.fleetEntry(agent: "edge-1", service: "api")?["message"]?.stringValue ?? ""
                return message.contains("app name web-app is already used by service web") ? true : nil
            }
            let envFile = fleet.root.appendingPathComponent("edge-1/env/api.env")
            try FileManager.default.createDirectory(at: envFile.deletingLastPathComponent(), withIntermediateDirectories: true)
            try "GREETING=rotated\n".write(to: envFile, atomically: true, encoding: .utf8)
            try await eventually("api's v1 serving with the changed env file", timeout: .seconds(60)) {
                await fleet.appAnswer(port: apiPort)?.hasPrefix("1.0.0-api rotated ") == true ? true : nil
            }
            #expect(await fleet.appAnswer(port: webPort)?.hasPrefix("1.0.0-web") == true, "web's app stays web's")
        }
    }
}

/// Which app of a release clashes with another service's apps on the instance: the same name, or a name PM2 writes the
/// same log files for (it makes every character but ASCII letters, digits, `.` and `-` a dash, one per UTF-16 unit).
@Suite struct AppNameClashRuleTests {
    static let rows: [(mine: String, theirs: String, clash: InstallError?)] = [
        ("api", "api", .appNameClash(app: "api", service: "web")),
        ("api_v1", "api-v1", .appNameClash(app: "api_v1", service: "web", logsOf: "api-v1")),
        ("api v1", "api_v1", .appNameClash(app: "api v1", service: "web", logsOf: "api_v1")),
        ("bäck", "b-ck", .appNameClash(app: "bäck", service: "web", logsOf: "b-ck")),
        ("a😀", "a--", .appNameClash(app: "a😀", service: "web", logsOf: "a--")),
        ("a😀", "a-", nil),
        ("api", "api2", nil),
        ("api.v1", "api-v1", nil),
        // PM2's character class keeps a backslash.
        (#"a\b"#, "a-b", nil),
        (#"a\ b"#, #"a\_b"#, .appNameClash(app: #"a\ b"#, service: "web", logsOf: #"a\_b"#)),
    ]

    @Test(arguments: rows.indices)
    func clashes(_ index: Int) {
        let (mine, theirs, expected) = Self.rows[index]
        let release = CoreFixture.release("api", serial: 1, apps: [mine])
        let found = Reconciler.appNameClash(release, service: "api", owned: ["web": [theirs]], byLogName: true)
        #expect(found?.description == expected?.description, "\(mine) against \(theirs): \(found?.description ?? "none")")
        #expect(Reconciler.appNameClash(release, service: "api", owned: ["api": [theirs]], byLogName: true) == nil, "a service's own apps")
        // The builtin supervisor's log files never collide: only the same name clashes there.
        let builtin = Reconciler.appNameClash(release, service: "api", owned: ["web": [theirs]], byLogName: false)
        #expect(builtin?.description == (mine == theirs ? expected?.description : nil), "\(mine) against \(theirs) (builtin)")
    }
}
