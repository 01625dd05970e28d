import Glibc
import Shared
import Testing

@testable import Agent

@Suite("ProcessTableCheck: judging a table against the apps that should run")
struct ProcessTableCheckTests {
    static let cwd = "/var/lib/ferry/services/web/current"
    static let web = AppSpec.pm2TestApp("web", script: cwd + "/server.js", cwd: cwd, mode: .cluster, instances: 2)
    static let job = AppSpec.pm2TestApp("job", script: cwd + "/job.js", cwd: cwd, autorestart: false)
    /// A worker PM2 stops instead of restarting when it exits 3 or 4 (`stop_exit_codes`).
    static let worker = AppSpec.pm2TestApp(
        "worker",
        script: cwd + "/worker.js",
        cwd: cwd,
        pm2Options: ["stop_exit_codes": .array([.integer(3), .integer(4)])]
    )
    /// The same with one code, written as PM2 also takes it: a bare integer.
    static let oneCode = AppSpec.pm2TestApp("worker", script: cwd + "/worker.js", cwd: cwd, pm2Options: ["stop_exit_codes": .integer(3)])
    /// A one-shot job whose stop_exit_codes name a non-zero code it may finish with.
    static let jobWithCodes = AppSpec.pm2TestApp(
        "job",
        script: cwd + "/job.js",
        cwd: cwd,
        autorestart: false,
        pm2Options: ["stop_exit_codes": .array([.integer(2)])]
    )

    static func process(
        _ name: String,
        _ pmId: Int,
        _ status: ProcessStatus,
        restarts: Int = 0,
        exit: Int32? = nil,
        signal: String? = nil,
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
            lastExitCode: exit,
            lastExitSignal: signal
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
        // A job the OOM killer (or a segfault) ended is not done: it used to count as one that ran to completion.
        (
            "autorestart off, a signal ended it", [process("job", 1, .stopped, signal: "SIGKILL")], [job],
            .failed("job: pm_id 1 stopped (ended by SIGKILL) and autorestart is off, so PM2 will not start it again")
        ),
        (
            "autorestart off, never started (the builtin supervisor: a missing interpreter)", [process("job", 1, .stopped)], [job],
            .failed("job: pm_id 1 stopped and autorestart is off, so PM2 will not start it again")
        ),
        (
            "restart_delay, autorestart off, a signal ended it: waiting restart for ever",
            [process("job", 1, .waitingRestart, signal: "SIGSEGV", pid: .some(nil))], [job],
            .failed("job: pm_id 1 waiting restart (ended by SIGSEGV) and autorestart is off, so PM2 will not start it again")
        ),
        // stop_exit_codes: PM2's God.handleExit does not restart an instance that exited with one of them.
        ("stop_exit_codes: stopped with a listed code is done", [process("worker", 1, .stopped, exit: 3)], [worker], .allOnline),
        ("stop_exit_codes: the other listed code", [process("worker", 1, .stopped, exit: 4)], [worker], .allOnline),
        ("stop_exit_codes as one integer", [process("worker", 1, .stopped, exit: 3)], [oneCode], .allOnline),
        (
            "stop_exit_codes: a code not listed is a crash", [process("worker", 1, .stopped, exit: 1)], [worker],
            .failed("worker: pm_id 1 stopped (last exit code 1) although autorestart is on (it exited)")
        ),
        (
            "stop_exit_codes: exit 0 is not listed, so a crash too", [process("worker", 1, .stopped, exit: 0)], [worker],
            .failed("worker: pm_id 1 stopped (last exit code 0) although autorestart is on (it exited)")
        ),
        ("stop_exit_codes with autorestart off: a listed code is done", [process("job", 1, .stopped, exit: 2)], [jobWithCodes], .allOnline),
        // restart_delay (or exp_backoff_restart_delay) set: PM2 marks `waiting restart` even when it decided not to
        // restart, then schedules nothing; the instance stays so, pid 0, for ever.
        (
            "restart_delay, autorestart off, ran to completion: waiting restart for ever", [process("job", 1, .waitingRestart, exit: 0)], [job],
            .allOnline
        ),
        (
            "restart_delay, autorestart off, exited 1: waiting restart for ever", [process("job", 1, .waitingRestart, exit: 1)], [job],
            .failed("job: pm_id 1 waiting restart (last exit code 1) and autorestart is off, so PM2 will not start it again")
        ),
        ("restart_delay, a listed stop code: waiting restart for ever", [process("worker", 1, .waitingRestart, exit: 3)], [worker], .allOnline),
        (
            "restart_delay, a code not listed: a real wait for the restart", [process("worker", 1, .waitingRestart, exit: 1)], [worker],
            .pending("worker: pm_id 1 waiting restart (last exit code 1)")
        ),
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
