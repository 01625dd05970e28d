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

    /// Credentials written into the health URL itself (not through a placeholder) are part of the signed release, and
    /// were reported as written: in the failure reason, the diagnosis (the dashboard's failure page), the journal.
    /// They are shown redacted as `RedactedURL` redacts any URL; placeholders stay.
    static let literalCredentials: [(template: String, reported: String)] = [
        ("http://ops:hunter2@127.0.0.1:PORT/health", "http://127.0.0.1:PORT/health"),
        ("http://127.0.0.1:PORT/health?token=abc123&verbose=1", "http://127.0.0.1:PORT/health?token=REDACTED&verbose=1"),
        ("http://127.0.0.1:PORT/health?api_key=abc123", "http://127.0.0.1:PORT/health?api_key=REDACTED"),
        ("http://127.0.0.1:PORT/health?token=${HEALTH_TOKEN}", "http://127.0.0.1:PORT/health?token=${HEALTH_TOKEN}"),
        ("http://127.0.0.1:PORT/health?token=${HEALTH_TOKEN}x", "http://127.0.0.1:PORT/health?token=REDACTED"),
        ("http://u:${PASSWORD}@127.0.0.1:PORT/health", "http://127.0.0.1:PORT/health"),
    ]

    @Test(arguments: literalCredentials)
    func credentialsWrittenInTheURLAreNotReported(_ row: (template: String, reported: String)) async throws {
        let port = try freeLoopbackPort()
        let template = row.template.replacing("PORT", with: "\(port)")
        let reported = row.reported.replacing("PORT", with: "\(port)")
        let environment = ["HEALTH_TOKEN": Self.secret, "PASSWORD": Self.secret]
        let target = HealthProbeTarget(template: template, environment: environment)
        #expect(target.reported == reported)
        #expect("\(target)" == reported && String(reflecting: target) == reported)
        // A real probe of a closed port: its error, and the gate's verdict, name the reported form only.
        var configuration = HTTPClient.Configuration()
        configuration.connectTimeout = .seconds(2)
        var gate = HealthGate(
            configuration: .init(interval: .milliseconds(20)),
            probe: HealthProbe.http(client: HTTPClient(configuration: configuration))
        )
        gate.notRunning = { ProcessTableCheck.notRunning($0, isAlive: { $0 > 0 }) }
        let outcome = await gate.watch(
            apps: HealthGateTests.api,
            health: HealthCheck(http: template, deadlineSeconds: 1, stableSeconds: 0).resolved(environment: environment),
            processManager: ScriptedProcessManager { _ in HealthGateTests.online() }
        )
        guard case .unhealthy(let verdict) = outcome else {
            Issue.record("expected unhealthy, got \(outcome)")
            return
        }
        let texts = [verdict.reason, verdict.health?.url ?? "", verdict.health?.error ?? ""]
        for text in texts {
            for secret in ["hunter2", "abc123", Self.secret] { #expect(!text.contains(secret), "\(text)") }
        }
        #expect(verdict.reason.hasPrefix("not healthy within 1s: \(reported) did not answer: "), "\(verdict.reason)")
        #expect(verdict.health?.url == reported)
    }

    /// A probe error whose text carries an instance env value across the diagnosis' 1 KiB cut (curl quoting a host from
    /// `${API_HOST}`): it is masked whole before the cut. It used to be cut first, and the value's first part, no longer
    /// a whole match, left the instance.
    @Test func aProbeErrorIsMaskedBeforeItIsCut() async {
        let secret = "host-\(UInt64.random(in: 1...UInt64.max))-internal.example"
        for offset in [FailureDiagnosis.maximumErrorBytes - 10, FailureDiagnosis.maximumErrorBytes - 1, 10] {
            let reason = String(repeating: "x", count: offset) + secret + " could not be resolved"
            var gate = HealthGate(configuration: .init(interval: .milliseconds(20)), probe: { _ in throw HealthProbeError(reason: reason) })
            gate.notRunning = { ProcessTableCheck.notRunning($0, isAlive: { $0 > 0 }) }
            let outcome = await gate.watch(
                apps: HealthGateTests.api,
                health: HealthCheck(http: Self.template, deadlineSeconds: 1, stableSeconds: 0).resolved(environment: [:]),
                processManager: ScriptedProcessManager { _ in HealthGateTests.online() },
                mask: SecretMask([["API_HOST": secret]])
            )
            guard case .unhealthy(let verdict) = outcome, let error = verdict.health?.error else {
                Issue.record("expected an unhealthy verdict with the probe's error, got \(outcome)")
                continue
            }
            #expect(!error.contains(secret.prefix(8)), "offset \(offset): \(error.suffix(80))")
            #expect(error.utf8.count <= FailureDiagnosis.maximumErrorBytes)
        }
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
