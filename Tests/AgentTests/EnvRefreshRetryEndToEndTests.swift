import Foundation
import Shared
import TestSupport
import Testing

/// An env refresh that fails for one app of a service (here the new env file's `PATH` hides `node` from the builtin
/// supervisor, so the node app's reload is refused while the shell app's works). Each pass used to reload every app of
/// the service again for as long as one failed — the healthy app restarted at every poll interval (about once a second
/// here, every 30 s by default), for ever. Now
/// only the app that failed is tried again, and no sooner than the refresh's backoff allows (10 s first); the others
/// keep the new env. Fixing the file starts over with every app.
@Suite("Env refresh retries", .serialized)
struct EnvRefreshRetryEndToEndTests {
    @Test("a refresh that fails for one app retries only that app, backing off", .timeLimit(.minutes(5)))
    func aFailedRefreshRetriesOnlyTheAppThatFailed() async throws {
        try await FleetFixture.with { fleet in
            // A pass with a problem waits one poll interval for the next: 1 s here (production: 30 s).
            try await fleet.startController(extraArguments: ["--poll-seconds", "1"])
            let port = try freeLoopbackPort()
            let starts = fleet.root.appendingPathComponent("tick-starts").path
            // The node web app, and a shell app that records each start and needs no PATH (`interpreter: none`, an
            // absolute `sleep`).
            try await fleet.publishWithShellApp(
                serial: 1,
                version: "1.0.0",
                shell: ("tick", "#!/bin/sh\necho \"$$ $MARK\" >> '\(starts)'\nexec /bin/sleep 100000\n"),
                webOptions: ["min_uptime": .integer(1000)],
                health: HealthCheck(http: "http://127.0.0.1:${PORT}/", deadlineSeconds: 20, stableSeconds: 2)
            )
            let config = try await fleet.enrollAgent(name: "edge-1", backend: .builtin, instanceEnv: ["PORT": "\(port)", "MARK": "one"])
            _ = try fleet.startAgent(config: config, label: "agent")
            try await fleet.waitUntilRunning("1.0.0", port: port, agent: "edge-1")
            func startLines() -> [String] {
                ((try? String(contentsOfFile: starts, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
            }
            #expect(startLines().count == 1)

            // The new env file hides node: the web app's reload is refused, the tick app's works.
            let envFile = fleet.root.appendingPathComponent("edge-1/env/web.env")
            try "PORT=\(port)\nMARK=two\nPATH=/nonexistent\n".write(to: envFile, atomically: true, encoding: .utf8)
            try await eventually("the tick app runs with the new env", timeout: .seconds(30)) {
                startLines().last?.hasSuffix(" two") == true ? true : nil
            }
            let logs = fleet.root.appendingPathComponent("logs")
            func agentLog() -> String {
                ["agent.out", "agent.err"].map { (try? String(contentsOf: logs.appendingPathComponent($0), encoding: .utf8)) ?? "" }.joined()
            }
            // The pass says why once it ends: the tick app's start line is written while the pass still waits on the
            // web app's refused reload, so the log line can come a little after it.
            try await eventually("the pass says why", timeout: .seconds(20)) {
                agentLog().contains("reload after an env change failed: web-app") ? true : nil
            }
            // Passes run about once a second, each used to restart the tick app again: wait for passes that waited out
            // the backoff (each says so), not for a time.
            try await eventually("three passes waiting out the backoff", timeout: .seconds(20)) {
                agentLog().components(separatedBy: "tried again in").count > 3 ? true : nil
            }
            #expect(startLines().count == 2, "the tick app was reloaded once, not on every pass: \(startLines())")
            #expect(await fleet.appAnswer(port: port)?.hasPrefix("1.0.0") == true, "the web app runs on as it did")
            // The web app alone is tried again once the backoff's first 10 s are over.
            try await eventually("the web app's reload is tried again", timeout: .seconds(20)) {
                agentLog().contains("(try 2;") ? true : nil
            }
            #expect(startLines().count == 2, "\(startLines())")

            // Fixed: every app is reloaded with it, and the service converges.
            try "PORT=\(port)\nMARK=three\n".write(to: envFile, atomically: true, encoding: .utf8)
            try await eventually("the tick app runs with the fixed env", timeout: .seconds(30)) {
                startLines().last?.hasSuffix(" three") == true ? true : nil
            }
            #expect(startLines().count == 3, "\(startLines())")
        }
    }
}
