import Foundation
import Shared
import TestSupport
import Testing

/// A real agent against a controller serving HTTPS with certificates of a test CA made by `openssl`.
@Suite("Agent over HTTPS", .serialized)
struct AgentTLSEndToEndTests {
    @Test("publish over HTTPS → the agent converges; SIGHUP swaps the certificate while the agent stays connected", .timeLimit(.minutes(5)))
    func convergesOverHTTPSAcrossACertificateReload() async throws {
        try await FleetFixture.with(tls: true) { fleet in
            let certificates = try #require(fleet.certificates)
            try await fleet.startController()
            #expect(fleet.controller.url.hasPrefix("https://127.0.0.1:"), "\(fleet.controller.url)")
            let port = try freeLoopbackPort()
            try await fleet.publish(serial: 1, version: "1.0.0", port: port)
            let config = try await fleet.enrollAgent(name: "tls-1", longPollSeconds: 30)
            let agent = try fleet.startAgent(config: config, label: "agent")
            try await fleet.waitUntilRunning("1.0.0", port: port, agent: "tls-1")

            // The agent's long-poll is parked; the certificate is renewed under it.
            try await eventually("the agent's long-poll is parked") { try await Self.parkedLongPolls(fleet) == 1 ? true : nil }
            #expect(try TestCertificates.servedCertificate(port: fleet.controller.port).serial == certificates.server.serial)
            try fleet.controller.reloadCertificate(certificates.renewed)
            try await eventually("new connections get the renewed certificate", timeout: .seconds(20)) {
                try TestCertificates.servedCertificate(port: fleet.controller.port).serial == certificates.renewed.serial ? true : nil
            }
            #expect(try await Self.parkedLongPolls(fleet) == 1, "the parked long-poll survived the reload")

            // v2 reaches the agent (through the long-poll parked before the reload) and every later request verifies
            // the renewed certificate against the same CA.
            try await fleet.publish(serial: 2, version: "2.0.0", port: port)
            try await eventually("v2 serving") { await fleet.appAnswer(port: port)?.hasPrefix("2.0.0") == true ? true : nil }
            try await eventually("the fleet shows v2 running") {
                try await fleet.fleetEntry(agent: "tls-1")?["serial"]?.intValue == 2 ? true : nil
            }
            #expect(!agent.stderr.contains("TLS failure"), "\(agent.stderr.suffix(3000))")
        }
    }

    @Test("an agent that does not trust the controller's CA installs nothing and says why", .timeLimit(.minutes(3)))
    func wrongCAInstallsNothing() async throws {
        try await FleetFixture.with(tls: true) { fleet in
            let certificates = try #require(fleet.certificates)
            try await fleet.startController()
            let port = try freeLoopbackPort()
            try await fleet.publish(serial: 1, version: "1.0.0", port: port)

            // Enrolling against a CA that did not sign the controller's certificate: refused, nothing written.
            let refused = try await fleet.runEnroll(name: "stranger", caFile: certificates.otherCAFile)
            #expect(refused.status != 0)
            #expect(refused.stderr.contains("not signed by a certificate authority this host trusts"), "\(refused.stderr)")
            #expect(!FileManager.default.fileExists(atPath: fleet.root.appendingPathComponent("stranger/agent.json").path))

            // An enrolled agent whose CA file is then the wrong one: the pass fails clearly, no release is installed.
            let config = try await fleet.enrollAgent(name: "misconfigured")
            var text = try String(contentsOfFile: config, encoding: .utf8)
            text = text.replacingOccurrences(of: certificates.caFile, with: certificates.otherCAFile)
            try text.write(toFile: config, atomically: true, encoding: .utf8)
            #expect(text.contains(certificates.otherCAFile))
            let once = try await Command.run(
                TestPaths.executable("ferry-agent"),
                ["once", "--config", config],
                environment: ["PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": fleet.root.path]
            )
            #expect(once.status != 0)
            #expect(once.stderr.contains("not signed by a certificate authority this host trusts"), "\(once.stderr)")
            let releases = fleet.root.appendingPathComponent("misconfigured/state/services/web/releases").path
            #expect(((try? FileManager.default.contentsOfDirectory(atPath: releases)) ?? []).isEmpty, "nothing installed")
            #expect(await fleet.appAnswer(port: port) == nil)
        }
    }

    /// The controller's `ferry_long_poll_waiters` gauge.
    static func parkedLongPolls(_ fleet: FleetFixture) async throws -> Int? {
        let response = try await fleet.controller.http.send(HTTPClient.Request(url: fleet.controller.url + "/metrics"))
        let text = String(decoding: response.body, as: UTF8.self)
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("ferry_long_poll_waiters ") }) else { return nil }
        return Double(line.dropFirst("ferry_long_poll_waiters ".count)).map { Int($0) }
    }
}
