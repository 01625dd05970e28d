import Glibc
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
        exit: Int32? = nil,
        pid: Int32?? = .none,
        memory: Int64 = 50 << 20
    ) -> ManagedProcess {
        ManagedProcess(
            name: name,
            namespace: "ferry",
            pmId: pmId,
            pid: pid ?? (status == .online ? 4000 : nil),
            status: status,
            restarts: restarts,
            uptimeSeconds: nil,
            memoryBytes: memory,
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
        (
            "online without a pid: PM2 could not spawn it (a .sh without its executable bit, interpreter none)",
            [process("web", 1, .online, pid: .some(nil), memory: 0), process("web", 2, .online)], [web],
            .pending("web: pm_id 1 online but not running: it has no pid (the process manager could not start it)")
        ),
        (
            "online with a pid that is not in /proc", [process("web", 1, .online), process("web", 2, .online, pid: 4001)], [web],
            .pending("web: pm_id 2 online but not running: pid 4001 is not in /proc")
        ),
        (
            "online with 0 bytes of memory", [process("web", 1, .online, memory: 0), process("web", 2, .online)], [web],
            .pending("web: pm_id 1 online but not running: pid 4000 uses 0 bytes of memory")
        ),
    ]

    /// In these tables only pid 4000 is a live process.
    @Test("judges the table", arguments: cases.indices)
    func judges(_ index: Int) {
        let row = Self.cases[index]
        let check = ProcessTableCheck(evaluating: row.table, against: row.desired) { ProcessTableCheck.notRunning($0, isAlive: { $0 == 4000 }) }
        #expect(check == row.expected, "\(row.label)")
    }

    @Test("a pid is alive when /proc has it and it is no zombie")
    func liveness() {
        #expect(ProcessTableCheck.isAlive(getpid()))
        #expect(!ProcessTableCheck.isAlive(0))
        #expect(!ProcessTableCheck.isAlive(-1))
        // pid_max is at most 2^22 on Linux: this pid cannot exist.
        #expect(!ProcessTableCheck.isAlive(Int32(1 << 23)))
    }
}
