import Shared
import Testing

@testable import Agent

@Suite("ProcessTableCheck: judging a table against the apps that should run")
struct ProcessTableCheckTests {
    static let cwd = "/var/lib/ferry/services/web/current"
    static let web = AppSpec.pm2TestApp("web", script: cwd + "/server.js", cwd: cwd, mode: .cluster, instances: 2)
    static let job = AppSpec.pm2TestApp("job", script: cwd + "/job.js", cwd: cwd, autorestart: false)

    static func process(
        _ name: String,
        _ pmId: Int,
        _ status: ProcessStatus,
        restarts: Int = 0,
        exit: Int32? = nil
    ) -> ManagedProcess {
        ManagedProcess(
            name: name,
            namespace: "ferry",
            pmId: pmId,
            pid: status == .online ? 4000 : nil,
            status: status,
            restarts: restarts,
            uptimeSeconds: nil,
            memoryBytes: 0,
            cpuPercent: 0,
            execMode: .cluster,
            instances: 2,
            instanceIndex: pmId,
            scriptPath: cwd + "/server.js",
            cwd: cwd,
            interpreter: "node",
            lastExitCode: exit
        )
    }

    static let cases: [(label: String, table: [ManagedProcess], desired: [AppSpec], expected: ProcessTableCheck)] = [
        ("all instances online", [process("web", 1, .online), process("web", 2, .online)], [web], .allOnline),
        ("nothing desired", [], [], .allOnline),
        (
            "apps that are not desired are not judged here", [process("web", 1, .online), process("web", 2, .online), process("old", 3, .errored)],
            [web], .allOnline
        ),
        (
            "an instance is still launching (wait_ready)", [process("web", 1, .online), process("web", 2, .launching)], [web],
            .pending("web: pm_id 2 launching")
        ),
        (
            "waiting restart between crashes (restart_delay)",
            [process("web", 1, .waitingRestart, restarts: 1, exit: 1), process("web", 2, .online)],
            [web], .pending("web: pm_id 1 waiting restart (1 restarts, last exit code 1)")
        ),
        ("stopping", [process("web", 1, .stopping), process("web", 2, .online)], [web], .pending("web: pm_id 1 stopping")),
        ("fewer instances than wanted", [process("web", 1, .online)], [web], .pending("web: 1 of 2 instances present")),
        ("absent altogether", [], [web], .pending("web: 0 of 2 instances present")),
        (
            "errored after the crash loop (symlink-10)", [process("web", 1, .errored, restarts: 19), process("web", 2, .errored, restarts: 19)],
            [web], .failed("web: pm_id 1 errored (19 restarts), pm_id 2 errored (19 restarts) (PM2 gave up restarting it)")
        ),
        (
            "one errored instance fails the app", [process("web", 1, .online), process("web", 2, .errored, restarts: 15, exit: 1)], [web],
            .failed("web: pm_id 2 errored (15 restarts, last exit code 1) (PM2 gave up restarting it)")
        ),
        (
            "stopped while autorestart is on: it crashed", [process("web", 1, .stopped, exit: 1), process("web", 2, .online)], [web],
            .failed("web: pm_id 1 stopped (last exit code 1) although autorestart is on (it exited)")
        ),
        (
            "autorestart off, exited 1 (crash-noauto)", [process("job", 1, .stopped, exit: 1)], [job],
            .failed("job: pm_id 1 stopped (last exit code 1) and autorestart is off, so PM2 will not start it again")
        ),
        ("autorestart off, ran to completion", [process("job", 1, .stopped, exit: 0)], [job], .allOnline),
        (
            "failure wins over pending", [process("web", 1, .launching), process("web", 2, .online), process("job", 3, .stopped, exit: 2)],
            [web, job], .failed("job: pm_id 3 stopped (last exit code 2) and autorestart is off, so PM2 will not start it again")
        ),
        (
            "several pending apps are all named", [process("web", 1, .launching)], [web, job],
            .pending("web: 1 of 2 instances present; web: pm_id 1 launching; job: 0 of 1 instances present")
        ),
    ]

    @Test("judges the table", arguments: cases.indices)
    func judges(_ index: Int) {
        let row = Self.cases[index]
        #expect(ProcessTableCheck(evaluating: row.table, against: row.desired) == row.expected, "\(row.label)")
    }
}
