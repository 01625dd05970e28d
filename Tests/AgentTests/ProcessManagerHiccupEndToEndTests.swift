import Foundation
import Shared
import TestSupport
import Testing

/// PM2 does not answer for one table read at the moment a release's apps are to be applied (a wedged or restarting
/// daemon): no verdict on the release. Before, that read failing was a failed install: the serial was rolled back and
/// failed here for good (never tried again, counted by its rollout), and only a new serial could move the instance.
/// Now the applied release's files go back, and the release is installed after the install backoff's wait (10 s).
@Suite("A process manager that misses one read at apply", .serialized)
struct ProcessManagerHiccupEndToEndTests {
    @Test(.timeLimit(.minutes(4)))
    func aTableReadFailingAtApplyIsTriedAgain() async throws {
        let pm2 = try #require(try Backend.pm2.pm2Binary())
        try await FleetFixture.with { fleet in
            try await fleet.startController()
            let port = try freeLoopbackPort()
            try await fleet.publish(serial: 1, version: "1.0.0", port: port)
            let config = try await fleet.enrollAgent(name: "edge-1", longPollSeconds: 2, backend: .pm2)
            let agentRoot = URL(fileURLWithPath: config).deletingLastPathComponent()
            let current = agentRoot.appendingPathComponent("state/services/web/current").path
            let once = agentRoot.appendingPathComponent("jlist-failed").path
            // A pm2 that fails the first table read after `current` moved to serial 2, once; every other call is PM2's.
            let shim = agentRoot.appendingPathComponent("pm2-hiccup").path
            try """
            #!/bin/bash
            if [ "$1" = jlist ] && [ ! -e '\(once)' ]; then
                case "$(readlink '\(current)')" in releases/2-*) touch '\(once)'; echo 'simulated: the daemon did not answer' >&2; exit 1 ;; esac
            fi
            exec '\(pm2)' "$@"

            """.write(toFile: shim, atomically: true, encoding: .utf8)
            #expect(chmod(shim, 0o755) == 0)
            // The table read through the shim (`pm2 jlist`), not the daemon's socket.
            guard case .object(var fields) = try JSONValue.parse(Array(Data(contentsOf: URL(fileURLWithPath: config)))) else {
                throw HarnessError("the agent's config is not an object")
            }
            fields["pm2"] = .string(shim)
            fields["pm2TableSource"] = .string("jlist")
            try Data(JSONValue.object(fields).encoded()).write(to: URL(fileURLWithPath: config))

            _ = try fleet.startAgent(config: config, label: "agent")
            try await fleet.waitUntilRunning("1.0.0", port: port, agent: "edge-1")
            try await fleet.publish(serial: 2, version: "2.0.0", port: port)
            try await eventually("the read at apply failed", timeout: .seconds(60)) { FileManager.default.fileExists(atPath: once) ? true : nil }
            try await eventually("serial 2 installed after all", timeout: .seconds(90)) { () -> Bool? in
                let entry = try await fleet.fleetEntry(agent: "edge-1")
                return entry?["serial"]?.intValue == 2 && entry?["phase"]?.stringValue == "running" ? true : nil
            }
            #expect(await fleet.appAnswer(port: port)?.hasPrefix("2.0.0") == true)
            // Nothing failed here: the agent's own record of failures is empty.
            let state = try JSONValue.parse(Array(Data(contentsOf: agentRoot.appendingPathComponent("state/state.json"))))
            let failures = try #require(state["services"]?["web"]?["failures"], "\(state)")
            #expect(failures == .array([]), "serial 2 was recorded as failed: \(failures)")
        }
    }
}
