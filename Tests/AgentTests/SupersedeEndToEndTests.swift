import Foundation
import Shared
import TestSupport
import Testing

/// An operator's fix published while the broken release is still in its health gate: the agent sees it during the
/// gate (it polls on the side while a pass runs), ends the gate without a verdict, puts the release of before back and
/// installs the fix — instead of waiting out the broken release's deadline (ten minutes here) and rolling back first.
@Suite("Superseding a release in its health gate end to end", .serialized)
struct SupersedeEndToEndTests {
    @Test("a newer release ends the health gate of the one before", .timeLimit(.minutes(5)), arguments: Backend.allCases)
    func aNewerReleaseEndsTheGate(backend: Backend) async throws {
        _ = try backend.pm2Binary()
        try await FleetFixture.with { fleet in try await run(fleet, backend: backend) }
    }

    private func run(_ fleet: FleetFixture, backend: Backend) async throws {
        try await fleet.startController()
        let port = try freeLoopbackPort()
        // v2's health URL names a port nothing listens on: its gate can only end at its deadline, 600 s away.
        let silentPort = try freeLoopbackPort()
        try await fleet.publish(serial: 1, version: "1.0.0", port: port)
        let config = try await fleet.enrollAgent(name: "edge-1", longPollSeconds: 2, backend: backend)
        _ = try fleet.startAgent(config: config, label: "agent")
        try await fleet.waitUntilRunning("1.0.0", port: port, agent: "edge-1")

        try await fleet.publish(serial: 2, version: "2.0.0", port: port, healthURL: "http://127.0.0.1:\(silentPort)/", deadline: 600)
        try await eventually("v2 serving, in its health gate", timeout: .seconds(90)) {
            await fleet.appAnswer(port: port)?.hasPrefix("2.0.0") == true ? true : nil
        }
        try await eventually("the fleet shows serial 2 deploying", timeout: .seconds(30)) {
            try await fleet.fleetEntry(agent: "edge-1")?["phase"]?.stringValue == "deploying" ? true : nil
        }

        let (entry, after) = try await publishTheFix(fleet, port: port, timeout: .seconds(120))
        #expect(after < .seconds(300), "v3 waited for v2's deadline")
        // Superseded is not failed: serial 2 is in no failure list, and it never rolled back.
        let text = "\(entry)"
        #expect(!text.contains("rolled back"), "\(text)")
        let log = agentLog(fleet)
        #expect(log.contains("a newer release supersedes the one in its health gate"))
        #expect(!log.contains("release unhealthy, rolling back"))
    }

    /// Publishes the fix, serial 3 (3.0.0), and waits until it serves and the fleet shows it running and healthy; returns
    /// that fleet entry and how long after the publish it came.
    private func publishTheFix(_ fleet: FleetFixture, port: Int, timeout: Duration) async throws -> (entry: JSONValue, after: Duration) {
        try await fleet.publish(serial: 3, version: "3.0.0", port: port)
        let published = ContinuousClock.now
        try await fleet.waitUntilRunning("3.0.0", port: port, agent: "edge-1", timeout: timeout)
        let entry = try await eventually("the fleet shows serial 3 healthy", timeout: .seconds(60)) { () -> JSONValue? in
            let entry = try await fleet.fleetEntry(agent: "edge-1")
            return entry?["serial"]?.intValue == 3 && entry?["health"]?.stringValue == "healthy" ? entry : nil
        }
        #expect(entry["message"]?.stringValue == "serial 3 (3.0.0) is running and healthy")
        return (entry, ContinuousClock.now - published)
    }

    /// The agent's stderr and stdout.
    private func agentLog(_ fleet: FleetFixture) -> String {
        ["logs/agent.err", "logs/agent.out"].map { (try? String(contentsOf: fleet.root.appendingPathComponent($0), encoding: .utf8)) ?? "" }
            .joined()
    }

    /// A release whose artifact comes over a slow link (an object store far away, a congested NAT): the fix published
    /// meanwhile must not wait for that download to finish. Here v2's 2 MiB trickle in at 8 KiB a second (about four
    /// minutes, past this test's limit); v3 is installed once a poll brings it, v1 serves until then, and v2 never runs.
    @Test("a newer release cancels the download of the one before", .timeLimit(.minutes(3)))
    func aNewerReleaseCancelsTheDownload() async throws {
        try await FleetFixture.with { fleet in
            try await TestFileServer.with { bucket in try await runSlowDownload(fleet, bucket) }
        }
    }

    private func runSlowDownload(_ fleet: FleetFixture, _ bucket: TestFileServer) async throws {
        try await fleet.startController()
        let port = try freeLoopbackPort()
        try await fleet.publish(serial: 1, version: "1.0.0", port: port)
        let config = try await fleet.enrollAgent(name: "edge-1", longPollSeconds: 2)
        _ = try fleet.startAgent(config: config, label: "agent")
        try await fleet.waitUntilRunning("1.0.0", port: port, agent: "edge-1")

        let archive = try fleet.makeArtifact(version: "2.0.0", padding: 2 << 20)
        let bytes = try [UInt8](Data(contentsOf: archive))
        bucket.publish(bytes, at: "/bucket/web-2.0.0.tgz", .init(trickle: (bytes: 2048, every: .milliseconds(250))))
        let artifact = ArtifactReference(url: "\(bucket.baseURL)/bucket/web-2.0.0.tgz", sha256: SHA256.hash(bytes), size: Int64(bytes.count))
        let v2 = try fleet.release(serial: 2, version: "2.0.0", artifact: artifact, port: port)
        let (status, body) = try await fleet.controller.publish(v2, token: fleet.operatorToken)
        #expect(status == 201 || status == 200, "\(body)")
        try await eventually("the agent downloading v2 from the slow bucket", timeout: .seconds(60)) {
            bucket.requests.contains { $0.path == "/bucket/web-2.0.0.tgz" && $0.method == "GET" } ? true : nil
        }
        #expect(await fleet.appAnswer(port: port)?.hasPrefix("1.0.0") == true, "v1 serves while v2 downloads")

        // v2's download needs about four minutes: v3 running within `publishTheFix`'s 90 s shows it did not wait for it
        // (a tighter bound on the clock only measured how loaded the machine was).
        let (entry, _) = try await publishTheFix(fleet, port: port, timeout: .seconds(90))
        // Superseded is not failed, and v2 was never extracted or started.
        #expect(!"\(entry)".contains("failed"), "\(entry)")
        let releasesDir = fleet.root.appendingPathComponent("edge-1/state/services/web/releases").path
        let releases = (try? FileManager.default.contentsOfDirectory(atPath: releasesDir)) ?? []
        #expect(releases.contains { $0.hasPrefix("3-") } && !releases.contains { $0.hasPrefix("2-") }, "\(releases)")
        #expect(agentLog(fleet).contains("a newer release supersedes the one being downloaded; download cancelled"))
    }
}
