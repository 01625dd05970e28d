import Shared
import Synchronization
import Testing

@testable import Agent

/// A process manager that answers `processes()` from a script (the table for the n-th look) and records every call.
///
/// The gate's logic is pure given the tables and probe answers; the real process managers are tested elsewhere.
actor ScriptedProcessManager: ProcessManager {
    struct Failure: Error, CustomStringConvertible {
        var description: String { "pm2 jlist exited with status 1" }
    }

    /// The table for look number `n` (0-based), or `nil` to fail that look.
    let script: @Sendable (Int) -> [ManagedProcess]?
    private(set) var calls: [String] = []
    private(set) var looks = 0

    /// PM2's schedules (`cron_restart`) when `true`.
    nonisolated let restartsOnSchedules: Bool

    init(restartsOnSchedules: Bool = false, _ script: @escaping @Sendable (Int) -> [ManagedProcess]?) {
        self.restartsOnSchedules = restartsOnSchedules
        self.script = script
    }

    func processes() async throws -> [ManagedProcess] {
        defer { looks += 1 }
        calls.append("processes")
        guard let table = script(looks) else { throw Failure() }
        return table
    }

    func start(_ app: AppSpec, ecosystem: String) async throws { calls.append("start \(app.name)") }
    func reload(_ app: AppSpec, ecosystem: String) async throws { calls.append("reload \(app.name)") }
    func delete(appNamed name: String) async throws { calls.append("delete \(name)") }
    func restart(appNamed name: String) async throws { calls.append("restart \(name)") }
    func save() async throws { calls.append("save") }
}

/// Counts probe calls and answers from a script.
actor ProbeScript {
    private(set) var urls: [String] = []
    let answer: @Sendable (Int) throws -> Int

    init(_ answer: @escaping @Sendable (Int) throws -> Int) {
        self.answer = answer
    }

    /// Records the URL the probe would GET (the filled-in one).
    func probe(_ target: HealthProbeTarget) async throws -> HealthGate.ProbeAnswer {
        urls.append(await target.withResolvedURL { $0 })
        return HealthGate.ProbeAnswer(status: try answer(urls.count - 1), body: Array("status \(urls.count - 1)".utf8))
    }
}

@Suite("HealthGate: online, stable, answering — within the deadline")
struct HealthGateTests {
    static let url = "http://127.0.0.1:3000/healthz"
    static let api = CoreFixture.specs(CoreFixture.release(serial: 2, apps: ["api", "worker"]))

    struct Refused: Error, CustomStringConvertible {
        var description: String { "connection refused" }
    }

    /// Watches `api` with a 50 ms interval and returns the outcome, the time it took, and what the gate called.
    static func watch(
        apps: [AppSpec] = api,
        restartsOnSchedules: Bool = false,
        health: HealthCheck,
        environment: [String: String] = [:],
        table: @escaping @Sendable (Int) -> [ManagedProcess]?,
        probe answer: @escaping @Sendable (Int) throws -> Int = { _ in 200 }
    ) async -> (outcome: HealthGate.Outcome, elapsed: Duration, calls: [String], probes: [String]) {
        let manager = ScriptedProcessManager(restartsOnSchedules: restartsOnSchedules, table)
        let probe = ProbeScript(answer)
        var gate = HealthGate(configuration: .init(interval: .milliseconds(50)), probe: { try await probe.probe($0) })
        // The fixture's pids are made up: every one counts as a live process unless the row says otherwise.
        gate.notRunning = { ProcessTableCheck.notRunning($0, isAlive: { $0 > 0 }) }
        // Virtual time: the gate's 50 ms looks happen instantly and the elapsed time is exact, whatever the load.
        let clock = VirtualClock()
        let start = clock.now
        let outcome = await gate.watch(apps: apps, health: health.resolved(environment: environment), processManager: manager, clock: clock)
        return (outcome, start.duration(to: clock.now), await manager.calls, await probe.urls)
    }

    static func online(restarts: Int = 0) -> [ManagedProcess] {
        [CoreFixture.process(Self.api[0], pmId: 0, restarts: restarts), CoreFixture.process(Self.api[1], pmId: 1)]
    }

    @Test func allOnlineAndAnswering200StayingStableIsHealthy() async {
        let result = await Self.watch(health: HealthCheck(http: Self.url, deadlineSeconds: 3, stableSeconds: 1), table: { _ in Self.online() })
        #expect(result.outcome == .healthy)
        // It waited out the stable window, and never acted on the apps.
        #expect(result.elapsed >= .seconds(1))
        #expect(result.elapsed < .seconds(3))
        #expect(Set(result.calls) == ["processes"])
        #expect(result.probes.count >= 2)
        #expect(Set(result.probes) == [Self.url])
    }

    @Test func stableSecondsZeroIsHealthyAtTheFirstGoodLook() async {
        let result = await Self.watch(health: HealthCheck(http: Self.url, deadlineSeconds: 2, stableSeconds: 0), table: { _ in Self.online() })
        #expect(result.outcome == .healthy)
        #expect(result.calls == ["processes"])
        #expect(result.probes == [Self.url])
    }

    @Test func withoutAHealthURLOnlyTheTableCounts() async {
        let result = await Self.watch(
            health: HealthCheck(http: nil, deadlineSeconds: 2, stableSeconds: 0),
            table: { _ in Self.online() },
            probe: { _ in 500 }
        )
        #expect(result.outcome == .healthy)
        #expect(result.probes.isEmpty)
    }

    @Test func startingInstancesAreWaitedFor() async {
        // Launching for the first looks, then online: healthy once online long enough.
        let result = await Self.watch(
            health: HealthCheck(http: Self.url, deadlineSeconds: 3, stableSeconds: 1),
            table: { look in
                look < 4 ? [CoreFixture.process(Self.api[0], pmId: 0, status: .launching), CoreFixture.process(Self.api[1], pmId: 1)] : Self.online()
            }
        )
        #expect(result.outcome == .healthy)
        #expect(result.elapsed >= .milliseconds(1200))
        // The probe is not asked while the table is not all online.
        #expect(result.probes.count == result.calls.count - 4)
    }

    @Test func anErroredAppIsUnhealthyAtOnceNamingTheApp() async {
        let result = await Self.watch(
            health: HealthCheck(http: Self.url, deadlineSeconds: 3, stableSeconds: 1),
            table: { _ in [CoreFixture.process(Self.api[0], pmId: 0), CoreFixture.process(Self.api[1], pmId: 1, status: .errored, restarts: 16)] }
        )
        #expect(result.outcome.reason == "worker: pm_id 1 errored (16 restarts) (PM2 gave up restarting it)")
        #expect(result.calls == ["processes"])
        #expect(result.probes.isEmpty)
        #expect(result.elapsed < .seconds(1))
    }

    @Test func anErrorLaterInTheStableWindowEndsTheWatchThen() async {
        let result = await Self.watch(
            health: HealthCheck(http: Self.url, deadlineSeconds: 3, stableSeconds: 2),
            table: { look in
                look < 3 ? Self.online() : [CoreFixture.process(Self.api[0], pmId: 0, status: .errored), CoreFixture.process(Self.api[1], pmId: 1)]
            }
        )
        #expect(result.outcome.reason == "api: pm_id 0 errored (PM2 gave up restarting it)")
        #expect(result.calls.count == 4)
    }

    @Test func aHealthURLAnswering500UntilTheDeadlineIsUnhealthyNamingURLAndStatus() async {
        let result = await Self.watch(
            health: HealthCheck(http: Self.url, deadlineSeconds: 2, stableSeconds: 1),
            table: { _ in Self.online() },
            probe: { _ in 500 }
        )
        #expect(result.outcome.reason == "not healthy within 2s: \(Self.url) answered HTTP 500")
        #expect(result.elapsed >= .seconds(2))
        #expect(result.elapsed < .seconds(3))
    }

    @Test func aHealthURLThatDoesNotAnswerIsUnhealthyWithTheError() async {
        let result = await Self.watch(
            health: HealthCheck(http: Self.url, deadlineSeconds: 2, stableSeconds: 0),
            table: { _ in Self.online() },
            probe: { _ in throw Refused() }
        )
        #expect(result.outcome.reason == "not healthy within 2s: \(Self.url) did not answer: connection refused")
    }

    @Test func theLastProblemIsReported() async {
        // 503 first, then a refused connection: the verdict names the latest.
        let result = await Self.watch(
            health: HealthCheck(http: Self.url, deadlineSeconds: 2, stableSeconds: 1),
            table: { _ in Self.online() },
            probe: { n in
                if n < 5 { return 503 }
                throw Refused()
            }
        )
        #expect(result.outcome.reason == "not healthy within 2s: \(Self.url) did not answer: connection refused")
    }

    @Test func restartsClimbingDuringTheStableWindowAreNotHealthy() async {
        // Every look shows one more restart of `api` while all are online: a crash loop PM2 hides between looks.
        let result = await Self.watch(
            health: HealthCheck(http: Self.url, deadlineSeconds: 2, stableSeconds: 1),
            table: { look in Self.online(restarts: look) }
        )
        #expect(result.outcome.reason == "not healthy within 2s: an instance restarted during the stable window")
    }

    /// PM2 restarts an app with a `cron_restart` at every tick, one more on its counter each time: an app restarted more
    /// than once an hour that way is not judged by its counter. A schedule of one tick an hour at most (`0 3 * * *`),
    /// `0` (off), and any schedule under the builtin supervisor (which has none) leave the check as it is.
    @Test(arguments: [
        (JSONValue.string("*/5 * * * * *"), true, true), (.string("*/5 * * * *"), true, true), (.string("0,30 * * * *"), true, true),
        (.string("0 * * * * *"), true, true), (.string("0 3 * * *"), true, false), (.string("15 0 3 * * *"), true, false),
        (.integer(0), true, false), (.string("0"), true, false), (.string("*/5 * * * * *"), false, false),
    ])
    func restartsOnTheAppsFrequentScheduleAreNotACrashLoop(schedule: JSONValue, pm2: Bool, forgiven: Bool) async {
        var apps = Self.api
        apps[0].pm2Options["cron_restart"] = schedule
        let result = await Self.watch(
            apps: apps,
            restartsOnSchedules: pm2,
            health: HealthCheck(http: Self.url, deadlineSeconds: 2, stableSeconds: 1),
            table: { look in Self.online(restarts: look) }
        )
        if forgiven {
            #expect(result.outcome == .healthy)
        } else {
            #expect(result.outcome.reason == "not healthy within 2s: an instance restarted during the stable window")
        }
    }

    @Test func onlineWithoutAPidForMoreThanTheGraceIsUnhealthy() async {
        // What PM2 showed for a .sh without its executable bit run with interpreter none: online, no pid, 0 bytes.
        let result = await Self.watch(
            health: HealthCheck(http: Self.url, deadlineSeconds: 60, stableSeconds: 1),
            table: { _ in
                var phantom = Self.online()
                phantom[0].pid = nil
                phantom[0].memoryBytes = 0
                return phantom
            }
        )
        #expect(
            result.outcome
                .reason == "api: pm_id 0 online but not running: it has no pid (the process manager could not start it) for 5.0 seconds"
        )
        #expect(result.elapsed >= .seconds(5) && result.elapsed < .seconds(6), "failed after the grace, well before the deadline")
        #expect(result.probes.isEmpty, "the health URL is not asked while the table is not healthy")
    }

    @Test func aPidLeftOnlineButGoneFromProcIsNotHealthy() async {
        // The first looks show a pid that is no process; then PM2 catches up with a live one: healthy after all.
        let result = await Self.watch(
            health: HealthCheck(http: Self.url, deadlineSeconds: 60, stableSeconds: 1),
            table: { look in
                var table = Self.online()
                if look < 5 { table[0].pid = -7 }
                return table
            }
        )
        #expect(result.outcome == .healthy)
        #expect(result.elapsed >= .milliseconds(1200))
    }

    @Test func oneRestartThenStableIsHealthy() async {
        // The window starts again after the restart; staying stable afterwards is healthy.
        let result = await Self.watch(
            health: HealthCheck(http: Self.url, deadlineSeconds: 3, stableSeconds: 1),
            table: { look in Self.online(restarts: look < 3 ? 0 : 1) }
        )
        #expect(result.outcome == .healthy)
        #expect(result.elapsed >= .milliseconds(1150))
    }

    @Test func anUnreadableTableUntilTheDeadlineIsUnhealthyWithTheError() async {
        let result = await Self.watch(health: HealthCheck(http: Self.url, deadlineSeconds: 2, stableSeconds: 0), table: { _ in nil })
        #expect(result.outcome.reason == "not healthy within 2s: cannot read the process table: pm2 jlist exited with status 1")
        #expect(result.probes.isEmpty)
    }

    @Test func missingInstancesUntilTheDeadlineIsUnhealthyNamingThem() async {
        let result = await Self.watch(
            health: HealthCheck(http: Self.url, deadlineSeconds: 2, stableSeconds: 0),
            table: { _ in [CoreFixture.process(Self.api[0], pmId: 0)] }
        )
        #expect(result.outcome.reason == "not healthy within 2s: worker: 0 of 1 instances present")
    }

    /// The evidence behind each kind of verdict, which the failure's diagnosis reports: one row per verdict.
    struct EvidenceCase: Sendable, CustomTestStringConvertible {
        var name: String
        var health: HealthCheck
        var table: @Sendable (Int) -> [ManagedProcess]?
        var probe: @Sendable (Int) throws -> Int
        var cause: FailureDiagnosis.Cause
        var deadlineSeconds: Int64?
        var probeStatus: Int64?
        var probeBody: String?
        var probeError: String?

        var testDescription: String { name }
    }

    static let evidenceCases: [EvidenceCase] = [
        EvidenceCase(
            name: "an errored instance: crashed, before any probe",
            health: HealthCheck(http: url, deadlineSeconds: 3, stableSeconds: 1),
            table: { _ in [CoreFixture.process(api[0], pmId: 0, status: .errored, restarts: 2), CoreFixture.process(api[1], pmId: 1)] },
            probe: { _ in 200 },
            cause: .crashed
        ),
        EvidenceCase(
            name: "500 until the deadline: timed out, with the last status and body",
            health: HealthCheck(http: url, deadlineSeconds: 2, stableSeconds: 1),
            table: { _ in online() },
            probe: { _ in 500 },
            cause: .timedOut,
            deadlineSeconds: 2,
            probeStatus: 500,
            probeBody: "status"
        ),
        EvidenceCase(
            name: "no answer until the deadline: timed out, with the error",
            health: HealthCheck(http: url, deadlineSeconds: 2, stableSeconds: 0),
            table: { _ in online() },
            probe: { _ in throw Refused() },
            cause: .timedOut,
            deadlineSeconds: 2,
            probeError: "connection refused"
        ),
        EvidenceCase(
            name: "online without a pid past the grace: not running",
            health: HealthCheck(http: url, deadlineSeconds: 60, stableSeconds: 1),
            table: { _ in
                var phantom = online()
                phantom[0].pid = nil
                phantom[0].memoryBytes = 0
                return phantom
            },
            probe: { _ in 200 },
            cause: .notRunning
        ),
    ]

    @Test(arguments: evidenceCases)
    func eachVerdictCarriesItsEvidence(_ row: EvidenceCase) async {
        let result = await Self.watch(health: row.health, table: row.table, probe: row.probe)
        guard case .unhealthy(let failure) = result.outcome else {
            Issue.record("expected unhealthy, got \(result.outcome)")
            return
        }
        #expect(failure.cause == row.cause)
        #expect(failure.deadlineSeconds == row.deadlineSeconds)
        #expect(failure.health?.status == row.probeStatus)
        #expect(failure.health?.body?.hasPrefix(row.probeBody ?? "\u{0}") ?? (row.probeBody == nil), "\(failure)")
        #expect(failure.health?.error == row.probeError)
        if row.probeStatus != nil || row.probeError != nil { #expect(failure.health?.url == Self.url) }
    }

    @Test func aBodyExcerptIsOneBoundedPrintableLine() {
        let body = Array("line one\r\nline\ttwo\u{1B}[31m".utf8) + [UInt8](repeating: UInt8(ascii: "x"), count: 2000)
        let excerpt = HealthGate.excerpt(body, mask: SecretMask()) ?? ""
        #expect(excerpt.hasPrefix("line one  line two [31mxxx"), "\(excerpt.prefix(40))")
        #expect(excerpt.utf8.count == FailureDiagnosis.maximumBodyBytes)
        #expect(HealthGate.excerpt(Array(" \n ".utf8), mask: SecretMask()) == nil)
    }

    /// A failing health answer that echoes an instance value (a connection string in an error) has it masked before the
    /// excerpt is cut and its control characters replaced: cut first, a value across the cut or one holding a line
    /// break was no longer found, and its first part went to the controller.
    @Test(arguments: [
        ("across the cut", String(repeating: "x", count: FailureDiagnosis.maximumBodyBytes - 10), "S3cretRedisPass-0123456789"),
        ("with a line break inside", "{\"redis\":\"", "-----BEGIN KEY-----\nMIIEsecretbody\n-----END KEY-----"),
        ("with a tab inside", "error: ", "pass\tword-1234"),
    ])
    func anInstanceSecretInTheBodyIsMaskedBeforeTheCut(_ name: String, _ before: String, _ secret: String) {
        let mask = SecretMask([["REDIS_PASSWORD": secret]])
        let excerpt = HealthGate.excerpt(Array((before + secret + " after").utf8), mask: mask) ?? ""
        for piece in [String(secret.prefix(6)), String(secret.suffix(6))] {
            #expect(!excerpt.contains(piece), "\(name): \(excerpt.suffix(80))")
        }
        if before.utf8.count < 100 { #expect(excerpt.contains("${REDIS_PASSWORD}"), "\(name): \(excerpt)") }
    }

    @Test func cancellationIsInterruptedNotAVerdict() async throws {
        let manager = ScriptedProcessManager { _ in Self.online() }
        let probe = ProbeScript { _ in 500 }
        var gate = HealthGate(configuration: .init(interval: .milliseconds(50)), probe: { try await probe.probe($0) })
        gate.notRunning = { ProcessTableCheck.notRunning($0, isAlive: { $0 > 0 }) }
        let watch = Task {
            // A deadline far away in real time: only the cancellation can end this watch.
            await gate.watch(
                apps: Self.api,
                health: HealthCheck(http: Self.url, deadlineSeconds: 3600, stableSeconds: 1).resolved(environment: [:]),
                processManager: manager
            )
        }
        // Cancel once the gate is watching (it has probed twice), not after a guessed sleep.
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: .seconds(60))
        while await probe.urls.count < 2, clock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        #expect(await probe.urls.count >= 2)
        watch.cancel()
        #expect(await watch.value == .interrupted)
    }

    /// A newer serial ends the watch without a verdict, at the next look: an operator's fix does not wait out a broken
    /// release's deadline.
    @Test func aNewerSerialSupersedesTheWatch() async throws {
        let manager = ScriptedProcessManager { _ in Self.online() }
        let probe = ProbeScript { _ in 503 }
        var gate = HealthGate(configuration: .init(interval: .milliseconds(50)), probe: { try await probe.probe($0) })
        gate.notRunning = { ProcessTableCheck.notRunning($0, isAlive: { $0 > 0 }) }
        final class Newer: Sendable { let serial = Mutex<Int64?>(nil) }
        let newer = Newer()
        let watch = Task {
            await gate.watch(
                apps: Self.api,
                health: HealthCheck(http: Self.url, deadlineSeconds: 3600, stableSeconds: 1).resolved(environment: [:]),
                processManager: manager,
                superseded: { newer.serial.withLock { $0 } }
            )
        }
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: .seconds(60))
        while await probe.urls.count < 2, clock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        #expect(await probe.urls.count >= 2)
        newer.serial.withLock { $0 = 7 }
        #expect(await watch.value == .superseded(by: 7))
        #expect(clock.now < deadline)
    }

    /// A release passing its stable window is let finish: it ends within `stableSeconds` and becomes the newer
    /// release's rollback target.
    @Test func aPassingGateIsNotSuperseded() async {
        let manager = ScriptedProcessManager { _ in Self.online() }
        let probe = ProbeScript { _ in 200 }
        var gate = HealthGate(configuration: .init(interval: .milliseconds(50)), probe: { try await probe.probe($0) })
        gate.notRunning = { ProcessTableCheck.notRunning($0, isAlive: { $0 > 0 }) }
        let outcome = await gate.watch(
            apps: Self.api,
            health: HealthCheck(http: Self.url, deadlineSeconds: 60, stableSeconds: 1).resolved(environment: [:]),
            processManager: manager,
            superseded: { 7 }
        )
        #expect(outcome == .healthy)
    }
}
