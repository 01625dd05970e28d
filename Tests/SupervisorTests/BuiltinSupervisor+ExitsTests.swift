import Foundation
import Shared
import TestSupport
import Testing

@testable import Supervisor

/// What a failure report needs from the builtin supervisor's table: how each instance last ended (exit code or signal)
/// and which files its stdout and stderr go to.
@Suite("Builtin supervisor: exits and log files in the table")
struct BuiltinSupervisorExitsTests {
    @Test("an exit code, a signal, and the log files each instance writes to")
    func exitsAndLogFiles() async throws {
        try await SupervisorHarness.with { harness in
            let exits = try harness.write(
                "app/exits.js",
                "console.log('out line'); console.error('err line 3'); setTimeout(() => process.exit(3), 100);\n"
            )
            let killed = try harness.write(
                "app/killed.js",
                "console.error('about to die'); setTimeout(() => process.kill(process.pid, 'SIGKILL'), 100);\n"
            )
            let runs = try harness.write("app/runs.js", "setInterval(() => {}, 1000);\n")
            var exiting = harness.spec("exits", script: exits)
            exiting.autorestart = false
            var dying = harness.spec("killed", script: killed)
            dying.autorestart = false
            try await harness.manager.start(exiting, ecosystem: "")
            try await harness.manager.start(dying, ecosystem: "")
            try await harness.manager.start(harness.spec("runs", script: runs), ecosystem: "")

            let table = try await harness.waitUntil("both ended") { table in
                table.first { $0.name == "exits" }?.status == .stopped && table.first { $0.name == "killed" }?.status == .stopped
            }
            let exited = try #require(table.first { $0.name == "exits" })
            let signalled = try #require(table.first { $0.name == "killed" })
            let running = try #require(table.first { $0.name == "runs" })
            #expect(exited.lastExitCode == 3)
            #expect(exited.lastExitSignal == nil)
            #expect(signalled.lastExitCode == nil)
            #expect(signalled.lastExitSignal == "SIGKILL")
            #expect(running.lastExitCode == nil && running.lastExitSignal == nil, "it never exited")

            // The log paths are the files the output went to.
            let errPath = try #require(exited.errLogPath)
            let outPath = try #require(exited.outLogPath)
            #expect(errPath.hasPrefix("\(harness.home)/logs/") && outPath.hasPrefix("\(harness.home)/logs/"))
            #expect(try String(contentsOfFile: errPath, encoding: .utf8).contains("err line 3"))
            #expect(try String(contentsOfFile: outPath, encoding: .utf8).contains("out line"))
            #expect(try String(contentsOfFile: try #require(signalled.errLogPath), encoding: .utf8).contains("about to die"))
            #expect(Set(table.compactMap(\.errLogPath)).count == 3, "one stderr file per instance")
            for name in ["exits", "killed", "runs"] { try await harness.manager.delete(appNamed: name) }
        }
    }
}
