import Foundation
import Shared
import Testing

@testable import Agent

/// A health URL's placeholders are filled from the instance env for the probe only: verdicts, errors, descriptions and
/// dumps show the template.
@Suite("Health probe target: the filled-in URL reaches only the probe")
struct HealthProbeTargetTests {
    static let secret = "s3cr3t-\(UInt64.random(in: 1...UInt64.max))"
    static let template = "http://127.0.0.1:3000/healthz?token=${HEALTH_TOKEN}"

    @Test func printingTheTargetShowsTheTemplate() {
        let target = HealthProbeTarget(template: Self.template, environment: ["HEALTH_TOKEN": Self.secret])
        var dumped = ""
        dump(target, to: &dumped)
        for text in ["\(target)", String(describing: target), String(reflecting: target), dumped, "\(Optional(target) as Any)"] {
            #expect(!text.contains(Self.secret), "\(text)")
            #expect(text.contains("${HEALTH_TOKEN}"), "\(text)")
        }
    }

    @Test func theGateProbesTheFilledInURLAndReportsTheTemplate() async {
        let result = await HealthGateTests.watch(
            health: HealthCheck(http: Self.template, deadlineSeconds: 2, stableSeconds: 1),
            environment: ["HEALTH_TOKEN": Self.secret],
            table: { _ in HealthGateTests.online() },
            probe: { _ in 503 }
        )
        #expect(result.outcome.reason == "not healthy within 2s: \(Self.template) answered HTTP 503")
        #expect(Set(result.probes) == ["http://127.0.0.1:3000/healthz?token=\(Self.secret)"])
    }

    /// A real probe of a closed loopback port: curl's error names the URL it tried, and the gate's verdict must not.
    @Test func aRealProbeErrorNamesTheTemplate() async throws {
        let port = try freeLoopbackPort()
        let template = "http://127.0.0.1:\(port)/healthz/${HEALTH_TOKEN}"
        let target = HealthProbeTarget(template: template, environment: ["HEALTH_TOKEN": Self.secret])
        var configuration = HTTPClient.Configuration()
        configuration.connectTimeout = .seconds(2)
        let probe = HealthProbe.http(client: HTTPClient(configuration: configuration))
        let error = await #expect(throws: HealthProbeError.self) { try await probe(target) }
        let reason = error.map { "\($0)" } ?? ""
        #expect(!reason.contains(Self.secret), "\(reason)")
        #expect(reason.contains(template), "\(reason)")
        #expect(reason.contains("cannot connect"), "\(reason)")

        var gate = HealthGate(configuration: .init(interval: .milliseconds(20)), probe: probe)
        // The fixture's pids are made up: they count as live processes, so the verdict is about the probe.
        gate.notRunning = { ProcessTableCheck.notRunning($0, isAlive: { $0 > 0 }) }
        let outcome = await gate.watch(
            apps: HealthGateTests.api,
            health: HealthCheck(http: template, deadlineSeconds: 1, stableSeconds: 0).resolved(environment: ["HEALTH_TOKEN": Self.secret]),
            processManager: ScriptedProcessManager { _ in HealthGateTests.online() }
        )
        guard case .unhealthy(let verdict) = outcome else {
            Issue.record("expected unhealthy, got \(outcome)")
            return
        }
        #expect(!verdict.reason.contains(Self.secret), "\(verdict)")
        #expect(verdict.health?.error.map { !$0.contains(Self.secret) && $0.contains(template) } == true, "\(verdict)")
        #expect(verdict.reason.hasPrefix("not healthy within 1s: \(template) did not answer: "), "\(verdict)")
    }

    /// The agent's probe client connects straight to the app (a proxy in the agent's environment would get the
    /// filled-in URL, token and all) and keeps the start of a long status page instead of failing the probe.
    @Test func theProbeClientBypassesProxiesAndCutsLongBodies() {
        let configuration = HealthProbe.clientConfiguration
        #expect(configuration.bypassProxy && configuration.truncatesResponses && configuration.maxResponseBytes == 64 * 1024)
    }

    @Test func aReleaseResolvesFromReleaseAppAndInstanceEnvInThatOrder() async {
        var release = CoreFixture.release(serial: 1, apps: ["api"])
        release.env = ["HOST": "release-host", "PORT": "1"]
        release.pm2.apps[0].options["env"] = .object(["PORT": .string("2"), "PATH_PART": .string("app")])
        release.health = HealthCheck(http: "http://${HOST}:${PORT}/${PATH_PART}/${TOKEN}", deadlineSeconds: 5, stableSeconds: 1)
        let resolved = release.health.resolved(against: release, instanceEnv: ["PORT": "3", "TOKEN": Self.secret])
        let url = await resolved.target?.withResolvedURL { $0 }
        #expect(url == "http://release-host:3/app/\(Self.secret)")
        #expect(resolved.target?.template == "http://${HOST}:${PORT}/${PATH_PART}/${TOKEN}")
        #expect(resolved.deadlineSeconds == 5 && resolved.stableSeconds == 1)
    }
}
