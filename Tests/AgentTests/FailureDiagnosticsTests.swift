import Foundation
import Glibc
import Shared
import TestSupport
import Testing

@testable import Agent

/// Gathering a failed release's evidence from the process manager: failing instances first, one tail per log file
/// (a file several instances share is read once), masked, and nothing at all when the table cannot be read.
@Suite("Failure diagnostics: instances and log tails of a failed release")
struct FailureDiagnosticsTests {
    static let secret = "db-password-93f1c2"
    static let specs = CoreFixture.specs(CoreFixture.release(serial: 2, apps: ["api", "worker"]))

    @Test func failingInstancesFirstOneTailPerFileMasked() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-diag") { directory in
            func file(_ name: String, _ text: String) throws -> String {
                let path = directory.appendingPathComponent(name).path
                try Data(text.utf8).write(to: URL(fileURLWithPath: path))
                return path
            }
            let apiErr = try file("api-err.log", "booting\nError: cannot connect with \(Self.secret)\n")
            let apiOut = try file("api-out.log", "listening\n")
            // Two worker instances writing to one merged stderr file; stdout empty.
            let workerErr = try file("worker-err.log", "worker crashed\n")
            let workerOut = try file("worker-out.log", "")
            var api = CoreFixture.process(Self.specs[0], pmId: 0, status: .online)
            api.outLogPath = apiOut
            api.errLogPath = apiErr
            var worker1 = CoreFixture.process(Self.specs[1], pmId: 2, status: .errored, restarts: 2)
            worker1.lastExitCode = 1
            worker1.errLogPath = workerErr
            worker1.outLogPath = workerOut
            var worker0 = CoreFixture.process(Self.specs[1], pmId: 1, status: .stopped)
            worker0.lastExitSignal = "SIGKILL"
            worker0.errLogPath = workerErr
            worker0.outLogPath = workerOut
            // A stranger's app in the table is not part of the release.
            var stray = CoreFixture.stray("other", pmId: 3)
            stray.errLogPath = try file("other-err.log", "not ours\n")
            let table = [api, worker1, worker0, stray]
            let manager = ScriptedProcessManager { _ in table }

            let diagnosis = await FailureDiagnostics.collect(
                FailureDiagnostics.Verdict(stage: .healthGate, cause: .crashed),
                apps: Self.specs,
                processManager: manager,
                mask: SecretMask([["DB_PASSWORD": Self.secret]]),
                at: CoreFixture.now
            )
            #expect(diagnosis.stage == .healthGate && diagnosis.cause == .crashed && diagnosis.at == CoreFixture.now)
            #expect(diagnosis.instances.map(\.pmId) == [1, 2, 0], "failing instances first, then by pm_id")
            #expect(diagnosis.instances[0].signal == "SIGKILL" && diagnosis.instances[0].exitCode == nil)
            #expect(diagnosis.instances[1].exitCode == 1 && diagnosis.instances[1].status == "errored" && diagnosis.instances[1].restarts == 2)
            #expect(
                diagnosis.logs.map { "\($0.app) \($0.stream.rawValue) \($0.pmIds)" } == ["worker stderr [1, 2]", "api stderr [0]", "api stdout [0]"]
            )
            #expect(diagnosis.logs[0].lines == ["worker crashed"])
            #expect(diagnosis.logs[1].lines == ["booting", "Error: cannot connect with ${DB_PASSWORD}"])
            #expect(!String(decoding: diagnosis.json.encoded(), as: UTF8.self).contains(Self.secret))
        }
    }

    /// A log rotated a moment before the diagnosis (the live file empty) gives the end of the rotated file, masked; one
    /// rotated long ago does not stand in for an app that printed nothing since.
    @Test(arguments: [(0.0, true), (60.0, true), (3_600.0, false)])
    func aLogRotatedJustBeforeGivesTheRotatedFilesEnd(_ age: Double, _ used: Bool) async throws {
        try await TestPaths.withTemporaryDirectory("ferry-diag-rotated") { directory in
            let live = directory.appendingPathComponent("api-err.log").path
            try Data().write(to: URL(fileURLWithPath: live))
            try Data("booting\nError: cannot connect with \(Self.secret)\n".utf8).write(to: URL(fileURLWithPath: live + ".1"))
            let now = Double(time(nil))
            var times = [timespec(tv_sec: Int(now - age), tv_nsec: 0), timespec(tv_sec: Int(now - age), tv_nsec: 0)]
            #expect(utimensat(AT_FDCWD, live + ".1", &times, 0) == 0)
            let tail = FailureDiagnostics.tail(live, mask: SecretMask([["DB_PASSWORD": Self.secret]]), now: now)
            #expect((tail != nil) == used)
            if used { #expect(tail?.lines == ["booting", "Error: cannot connect with ${DB_PASSWORD}"]) }
        }
    }

    @Test func anUnreadableTableGivesTheVerdictAlone() async {
        let probe = FailureDiagnosis.HealthProbe(url: "http://127.0.0.1:${PORT}/", status: 503, body: "pw \(Self.secret)")
        let diagnosis = await FailureDiagnostics.collect(
            FailureDiagnostics.Verdict(stage: .healthGate, cause: .timedOut, deadlineSeconds: 30, health: probe),
            apps: Self.specs,
            processManager: ScriptedProcessManager { _ in nil },
            mask: SecretMask([["DB_PASSWORD": Self.secret]])
        )
        #expect(diagnosis.instances.isEmpty && diagnosis.logs.isEmpty)
        #expect(diagnosis.deadlineSeconds == 30)
        #expect(diagnosis.health?.body == "pw ${DB_PASSWORD}", "the health body is masked too")
    }

    @Test(
        "the stage of an apply failure is that of the first app action that failed",
        arguments: [
            (AppAction.start, FailureDiagnosis.Stage.start), (.reload, .reload), (.replace(reason: "script changed"), .start), (.restart, .start),
            (.delete, .install),
        ]
    )
    func stageOfAnApplyFailure(_ action: AppAction, _ stage: FailureDiagnosis.Stage) {
        struct Refused: Error {}
        let error = ApplyError.appsFailed([AppActionFailure(app: "api", action: action, cause: Refused())], removals: [])
        #expect(Reconciler.stage(of: error) == stage)
        #expect(Reconciler.stage(of: .tableUnreadable(Refused())) == .install)
    }
}
