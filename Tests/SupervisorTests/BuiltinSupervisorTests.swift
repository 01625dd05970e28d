import Foundation
import Glibc
import Shared
import TestSupport
import Testing

@testable import Supervisor

/// The builtin supervisor end to end: the real `ferry-agent supervisor` daemon, real node apps, real signals.
@Suite("Builtin supervisor")
struct BuiltinSupervisorTests {
    @Test("names PM2 allows run with log files made safe, and a script named as a program is found on PATH")
    func namesPM2AllowsAndProgramsOnPath() async throws {
        try await SupervisorHarness.with { harness in
            let script = try harness.write("app/idle.js", "setInterval(() => {}, 1000);\n")
            // A name with spaces and a path in it: PM2 accepts it; it must not become a path for the log files.
            let spaced = harness.spec("../my api", script: script)
            try await harness.manager.start(spaced, ecosystem: "")
            // `script: 'sleep'` (a program, as PM2's which finds it) with the interpreter none.
            var program = harness.spec("sleeper", script: "sleep", cwd: harness.home)
            program.interpreter = nil
            program.args = ["300"]
            try await harness.manager.start(program, ecosystem: "")
            let table = try await harness.manager.processes()
            #expect(Set(table.map(\.name)) == ["../my api", "sleeper"])
            #expect(table.allSatisfy { $0.status == .online && $0.pid != nil }, "\(SupervisorHarness.summary(table))")
            let logs = try FileManager.default.contentsOfDirectory(atPath: "\(harness.home)/logs")
            let safe = PM2App.fileSafeName("../my api")
            #expect(safe.hasPrefix("---my-api-") && !safe.contains("/"))
            #expect(logs.contains("\(safe)-0-out.log"), "\(logs)")
            #expect(!FileManager.default.fileExists(atPath: "\(harness.home)/my api-0-out.log"))
            let sleeper = try #require(table.first { $0.name == "sleeper" }?.pid)
            let command = try String(contentsOfFile: "/proc/\(sleeper)/cmdline", encoding: .utf8).split(separator: "\0")
            #expect(command.first.map { $0.hasSuffix("/sleep") } == true && command.last == "300", "\(command)")
            try await harness.manager.delete(appNamed: "../my api")
            try await harness.manager.delete(appNamed: "sleeper")
        }
    }

    @Test("start runs every instance online with exactly its own env; delete stops them")
    func startRunsInstancesWithTheirOwnEnvironment() async throws {
        try await SupervisorHarness.with { harness in
            // Started by the test with a canary in its environment: the apps must not see it.
            try await harness.withOwnDaemon(
                arguments: ["ferry-agent", "supervisor", "--home", harness.home],
                environment: ["PATH": AppSpec.defaultSearchPath, "FERRY_TEST_CANARY": "agent-secret"]
            ) { daemon in
                let script = try harness.write("app/report.js", TestApps.report)
                try harness.write("out/.keep", "")
                let spec = harness.spec(
                    "reporter",
                    script: script,
                    instances: 2,
                    env: ["OUT_DIR": "\(harness.home)/out", "GREETING": "hello world"]
                )
                try await harness.manager.start(spec, ecosystem: "")

                let table = try await harness.manager.processes()
                #expect(table.map(\.pmId) == [0, 1])
                #expect(table.map(\.instanceIndex) == [0, 1])
                #expect(table.allSatisfy { $0.status == .online && $0.name == "reporter" && $0.namespace == "ferry" })
                #expect(try await harness.manager.daemonPID() == daemon)
                let pids = table.compactMap(\.pid)
                try #require(pids.count == 2)
                #expect(Set(pids).count == 2)

                for (index, pid) in pids.enumerated() {
                    let report = try await harness.report(instance: index, pid: pid)
                    let env = try #require(report["env"] as? [String: String])
                    #expect(
                        Set(env.keys) == [
                            "OUT_DIR", "GREETING", "PATH", "HOME", "NODE_APP_INSTANCE", "FERRY_SUPERVISOR_HOME", "FERRY_SUPERVISOR_RUN",
                        ]
                    )
                    // As PM2 gives its apps PM2_HOME: the next daemon finds what a killed one left by it.
                    #expect(env["FERRY_SUPERVISOR_HOME"] == harness.home)
                    #expect(env["FERRY_TEST_CANARY"] == nil)
                    #expect(env["NODE_APP_INSTANCE"] == String(index))
                    #expect(env["GREETING"] == "hello world")
                    #expect(env["PATH"] == AppSpec.defaultSearchPath)
                    #expect(report["cwd"] as? String == "\(harness.home)/app")
                }
                // Each instance leads its own process group, so a stop reaches everything it started.
                #expect(pids.allSatisfy { ProcStat.read(pid: $0)?.processGroup == $0 })

                try await harness.manager.delete(appNamed: "reporter")
                #expect(try await harness.manager.processes().isEmpty)
                for pid in pids {
                    #expect(!SupervisorHarness.isAlive(pid), "pid \(pid) still runs after delete")
                }
                #expect(try await harness.manager.shutdown())
            }
        }
    }

    /// An app whose env PM2 runs (three maps of 256 KiB merged, the env again among its PM2 options, JSON-escaped)
    /// makes a request line over 1 MiB: the daemon refused it, after a replace had deleted the running app. It runs,
    /// and what the daemon would refuse is said before anything is deleted (`refusal(toRun:)`).
    @Test("an app with the largest env a release allows starts; a spec the daemon would refuse is said before a replace")
    func aLargeEnvStartsAndARefusalIsKnownFirst() async throws {
        try await SupervisorHarness.with { harness in
            let script = try harness.write("app/report.js", TestApps.report)
            try harness.write("out/.keep", "")
            // 700 KiB of values, a third of them a character JSON escapes (`"`): nearly 2 MB as a request.
            var env = ["OUT_DIR": "\(harness.home)/out"]
            for index in 0..<20 { env["BIG_\(index)"] = String(repeating: "ab\"", count: 12_000) }
            var spec = harness.spec("big", script: script, env: env)
            spec.pm2Options = ["env": .object(env.mapValues { .string($0) })]
            let line = try SupervisorRequest.start(spec).encodedLine()
            #expect(line.count > 1 << 20, "\(line.count) bytes")
            #expect(harness.manager.refusal(toRun: spec) == nil)
            try await harness.manager.start(spec, ecosystem: "")
            let table = try await harness.waitUntil("the app runs") { $0.count == 1 && $0.allSatisfy { $0.pid != nil } }
            let report = try await harness.report(pid: try #require(table.first?.pid))
            #expect((report["env"] as? [String: String])?["BIG_19"]?.count == 36_000)

            var invalid = spec
            invalid.killTimeoutMilliseconds = .max
            let refusal = try #require(harness.manager.refusal(toRun: invalid))
            #expect("\(refusal)".contains("kill_timeout"), "\(refusal)")
            var huge = harness.spec("huge", script: script, env: ["HUGE": String(repeating: "\"", count: 4 << 20)])
            huge.pm2Options = [:]
            let tooLong = try #require(harness.manager.refusal(toRun: huge))
            #expect("\(tooLong)".contains("more than the \(SupervisorDaemon.defaultMaximumRequestBytes)"), "\(tooLong)")
        }
    }

    /// A daemon outlives the agent that started it: one that accepts less than this client's default (an older
    /// version's 1 MiB) is what `refusal(toRun:)` checks against, once its table answer said so.
    @Test("what a replace checks a spec against is the running daemon's own limit")
    func theRefusalUsesTheRunningDaemonsLimit() async throws {
        try await SupervisorHarness.with { harness in
            try await harness.withOwnDaemon(arguments: ["ferry-agent", "supervisor", "--home", harness.home, "--max-request-bytes", String(1 << 20)])
            { daemon in
                let script = try harness.write("app/report.js", TestApps.report)
                let spec = harness.spec("big", script: script, env: ["BIG": String(repeating: "a", count: 2 << 20)])
                #expect(harness.manager.refusal(toRun: spec) == nil, "before any answer: this version's default")
                #expect(try await harness.manager.processes().isEmpty)
                let refusal = try #require(harness.manager.refusal(toRun: spec))
                #expect("\(refusal)".contains("more than the 1048576"), "\(refusal)")
                #expect(try await harness.manager.shutdown())
            }
        }
    }

    /// PM2 gives each instance `increment_var` counted up from the env's value and the index under the name
    /// `instance_var` gives; the supervisor gave every instance the same `PORT` (three of four crash-looped on it).
    @Test("increment_var and instance_var give each instance its own port and index, as under PM2")
    func incrementAndInstanceVariables() async throws {
        try await SupervisorHarness.with { harness in
            let script = try harness.write("app/report.js", TestApps.report)
            try harness.write("out/.keep", "")
            var spec = harness.spec(
                "ports",
                script: script,
                instances: 2,
                env: ["OUT_DIR": "\(harness.home)/out", "PORT": "4000"]
            )
            spec.pm2Options = ["increment_var": .string("PORT"), "instance_var": .string("INSTANCE_ID")]
            try await harness.manager.start(spec, ecosystem: "")
            let table = try await harness.waitUntil("both instances run") { $0.count == 2 && $0.allSatisfy { $0.pid != nil } }
            var ports: [String] = []
            var indexes: [String] = []
            for process in table {
                let report = try await harness.report(pid: try #require(process.pid))
                let env = try #require(report["env"] as? [String: String])
                ports.append(env["PORT"] ?? "-")
                indexes.append(env["INSTANCE_ID"] ?? "-")
                #expect(env["NODE_APP_INSTANCE"] == nil, "instance_var renames NODE_APP_INSTANCE")
            }
            #expect(Set(ports) == ["4000", "4001"])
            #expect(Set(indexes) == ["0", "1"])
        }
    }

    /// Each instance holds four descriptors in the daemon: the 1024 instances a release may ask for need more than
    /// a soft limit of 1024. The daemon raises its soft limit to the hard one, as Node does for PM2's daemon.
    @Test("the daemon raises its open-file soft limit to the hard limit")
    func daemonRaisesOpenFileLimit() async throws {
        var limit = rlimit()
        try #require(getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0)
        try #require(limit.rlim_max > 512, "the hard limit leaves nothing to raise")
        try await SupervisorHarness.with { harness in
            let executable = TestPaths.executable("ferry-agent")
            // Started with a lower soft limit than the hard one (exec keeps the pid).
            try await harness.withOwnDaemon(
                executable: "/bin/sh",
                arguments: ["sh", "-c", "ulimit -Sn 512 && exec \"$0\" supervisor --home \"$1\"", executable, harness.home]
            ) { daemon in
                #expect(try await harness.manager.daemonPID() == daemon)
                let limits = try String(contentsOfFile: "/proc/\(daemon)/limits", encoding: .utf8)
                let line = try #require(limits.split(separator: "\n").first { $0.hasPrefix("Max open files") })
                let fields = line.split(separator: " ", omittingEmptySubsequences: true)
                // "Max open files  <soft>  <hard>  files"
                #expect(fields.count >= 5 && fields[3] == fields[4], "\(line)")
                #expect(fields.count >= 5 && fields[4] == "\(limit.rlim_max)", "\(line)")
                #expect(try await harness.manager.shutdown())
            }
        }
    }

    @Test("a crash loop ends errored after max_restarts, autorestart false ends stopped, restart brings an errored app back")
    func crashHandling() async throws {
        try await SupervisorHarness.with { harness in
            let script = try harness.write("app/crash.js", TestApps.crash)
            var limited = harness.spec("crash-limited", script: script)
            limited.maxRestarts = 3
            // Every run (node start-up + 200 ms) must count as unstable, even on a loaded machine.
            limited.minUptimeMilliseconds = 5000
            var noAuto = harness.spec("crash-noauto", script: script)
            noAuto.autorestart = false
            // Exits 1, one of its stop_exit_codes: stopped without a restart, as PM2 leaves it.
            var stopCode = harness.spec("crash-stopcode", script: script)
            stopCode.pm2Options["stop_exit_codes"] = .array([.integer(0), .integer(1)])
            var delayed = harness.spec("crash-delay", script: script)
            // Long enough that the first wait is seen before the restart, even when the machine is loaded.
            delayed.restartDelayMilliseconds = 4000
            try await harness.manager.start(limited, ecosystem: "")
            try await harness.manager.start(noAuto, ecosystem: "")
            try await harness.manager.start(stopCode, ecosystem: "")
            try await harness.manager.start(delayed, ecosystem: "")

            let waiting = try await harness.waitUntil("crash-delay waits for its restart_delay") { table in
                table.first { $0.name == "crash-delay" }?.status == .waitingRestart
            }
            #expect(waiting.first { $0.name == "crash-delay" }.map { $0.pid == nil && $0.restarts == 0 } == true)
            try await harness.waitUntil("crash-delay was restarted after its delay") { table in
                table.first { $0.name == "crash-delay" }.map { $0.restarts >= 1 } ?? false
            }
            try await harness.manager.delete(appNamed: "crash-delay")

            let settled = try await harness.waitUntil("crash-limited is errored and crash-noauto stopped") { table in
                table.first { $0.name == "crash-limited" }?.status == .errored && table.first { $0.name == "crash-noauto" }?.status == .stopped
                    && table.first { $0.name == "crash-stopcode" }?.status == .stopped
            }
            let stopCodeEntry = try #require(settled.first { $0.name == "crash-stopcode" })
            #expect(stopCodeEntry.restarts == 0 && stopCodeEntry.pid == nil, "\(stopCodeEntry)")
            let errored = try #require(settled.first { $0.name == "crash-limited" })
            let stopped = try #require(settled.first { $0.name == "crash-noauto" })
            // PM2 7: max_restarts 3 → errored at restart_time 2; autorestart false → stopped without a restart.
            #expect(errored.restarts == 2)
            #expect(errored.pid == nil)
            #expect(stopped.restarts == 0)
            #expect(stopped.pid == nil)

            try await harness.manager.restart(appNamed: "crash-limited")
            let restarted = try #require(try await harness.manager.processes().first { $0.name == "crash-limited" })
            // The app crashes 200 ms after it starts, so on a loaded machine it may already have crashed through its
            // max_restarts again by the time the table is read: either it runs again, or it is errored after more
            // restarts than before. The wait below shows the restart happened (restart_time climbs from 2 to 4).
            #expect(restarted.status != .errored || restarted.restarts > 2, "\(restarted.status) \(restarted.restarts)")
            #expect(restarted.restarts >= 2, "restarting an errored app does not count a restart (PM2 keeps restart_time)")
            try await harness.waitUntil("crash-limited is errored again") { table in
                table.first { $0.name == "crash-limited" }.map { $0.status == .errored && $0.restarts == 4 } ?? false
            }
        }
    }

    @Test("stopping an app that ignores SIGINT escalates to SIGKILL after kill_timeout")
    func killTimeoutEscalation() async throws {
        try await SupervisorHarness.with { harness in
            let script = try harness.write("app/stubborn.js", TestApps.stubborn)
            var spec = harness.spec(
                "stubborn",
                script: script,
                env: ["MARKER": "\(harness.home)/sigint", "READY": "\(harness.home)/ready"]
            )
            spec.killTimeoutMilliseconds = 700
            try await harness.manager.start(spec, ecosystem: "")
            let pid = try #require(try await harness.manager.processes().first?.pid)
            // Only once its SIGINT handler is installed does "ignores SIGINT" hold.
            #expect(await SupervisorHarness.eventually { FileManager.default.fileExists(atPath: "\(harness.home)/ready") })

            let started = ContinuousClock.now
            try await harness.manager.delete(appNamed: "stubborn")
            let elapsed = started.duration(to: .now)

            #expect(FileManager.default.fileExists(atPath: "\(harness.home)/sigint"), "SIGINT was not delivered first")
            #expect(elapsed >= .milliseconds(700), "SIGKILL came before kill_timeout: \(elapsed)")
            #expect(!SupervisorHarness.isAlive(pid))
            let errorLog = try String(contentsOfFile: "\(harness.home)/logs/stubborn-0-err.log", encoding: .utf8)
            #expect(errorLog.contains("sending SIGKILL"))
        }
    }

    /// A leader that ends at its stop's SIGINT at once (here a node process with no handler; a shell script that runs
    /// node without `exec` is the same) leaves the rest of its group to finish within kill_timeout. They were SIGKILLed
    /// the moment the leader ended: a server draining its requests was cut off.
    @Test("the rest of a group gets its kill_timeout to finish when its leader ends at once")
    func theGroupDrainsAfterItsLeaderEnds() async throws {
        try await SupervisorHarness.with { harness in
            let done = "\(harness.home)/drained"
            let ready = "\(harness.home)/ready"
            let script = try harness.write(
                "app/launcher.js",
                """
                const { spawn } = require('child_process');
                spawn(process.execPath, ['-e', `
                    const fs = require('fs');
                    process.on('SIGINT', () => setTimeout(() => { fs.writeFileSync(\(String(reflecting: done)), '1'); process.exit(0); }, 500));
                    fs.writeFileSync(\(String(reflecting: ready)), '1');
                    setInterval(() => {}, 1000);
                `], { stdio: 'ignore' });
                setInterval(() => {}, 1000);

                """
            )
            var spec = harness.spec("launcher", script: script)
            spec.killTimeoutMilliseconds = 5000
            try await harness.manager.start(spec, ecosystem: "")
            #expect(await SupervisorHarness.eventually { FileManager.default.fileExists(atPath: ready) })
            let started = ContinuousClock.now
            try await harness.manager.delete(appNamed: "launcher")
            let elapsed = started.duration(to: .now)
            #expect(FileManager.default.fileExists(atPath: done), "the worker was killed before it finished")
            #expect(elapsed < .milliseconds(4000), "the stop waited out kill_timeout: \(elapsed)")
        }
    }

    /// A group member that ignores SIGINT after its leader ended is SIGKILLed when kill_timeout runs out, and the stop
    /// ends then.
    @Test("a group member that ignores SIGINT after its leader ended is killed at kill_timeout")
    func aGroupMemberIgnoringSIGINTIsKilledAtKillTimeout() async throws {
        try await SupervisorHarness.with { harness in
            let pidFile = "\(harness.home)/worker.pid"
            // The worker says its pid once its handler is in: before that, a SIGINT would end it at once.
            let workerScript = try harness.write(
                "app/worker.js",
                """
                process.on('SIGINT', () => {});
                require('fs').writeFileSync(\(String(reflecting: pidFile)), String(process.pid));
                setInterval(() => {}, 1000);

                """
            )
            let script = try harness.write(
                "app/launcher.js",
                """
                require('child_process').spawn(process.execPath, [\(String(reflecting: workerScript))], { stdio: 'ignore' });
                setInterval(() => {}, 1000);

                """
            )
            var spec = harness.spec("launcher", script: script)
            spec.killTimeoutMilliseconds = 700
            try await harness.manager.start(spec, ecosystem: "")
            var worker: Int32?
            #expect(
                await SupervisorHarness.eventually {
                    worker = (try? String(contentsOfFile: pidFile, encoding: .utf8)).flatMap { Int32($0) }
                    return worker != nil
                }
            )
            let started = ContinuousClock.now
            try await harness.manager.delete(appNamed: "launcher")
            let elapsed = started.duration(to: .now)
            #expect(elapsed >= .milliseconds(700), "SIGKILL came before kill_timeout: \(elapsed)")
            #expect(elapsed < .seconds(5))
            let pid = try #require(worker)
            #expect(await SupervisorHarness.eventually { ProcStat.read(pid: pid).map { $0.hasExited } ?? true })
        }
    }

    /// Restart and reload handle instances one at a time: two instances that ignore SIGINT with a 2 s kill_timeout
    /// take over 4 s, more than the 3 s base. A fixed request timeout reported them failed while the daemon was
    /// still doing them right.
    @Test("a restart and a reload get the time their instances' kill_timeouts need, beyond the base request timeout")
    func requestTimeoutFollowsKillTimeouts() async throws {
        let shortBase: (inout BuiltinProcessManager.Configuration) -> Void = { $0.requestTimeout = .seconds(3) }
        try await SupervisorHarness.with(configure: shortBase) { harness in
            // TestApps.stubborn, with a ready file per process: both must ignore SIGINT before the clock starts.
            let script = try harness.write(
                "app/stubborn.js",
                """
                const fs = require('fs');
                process.on('SIGINT', () => {});
                fs.writeFileSync(`${process.env.READY}-${process.pid}`, 'ready');
                setInterval(() => {}, 1000);
                """
            )
            var spec = harness.spec("stubborn", script: script, instances: 2, env: ["READY": "\(harness.home)/ready"])
            spec.killTimeoutMilliseconds = 2000
            try await harness.manager.start(spec, ecosystem: "")
            func waitUntilReady() async throws -> [ManagedProcess] {
                let table = try await harness.waitUntil("both instances run") { $0.count == 2 && $0.allSatisfy { $0.pid != nil } }
                let pids = table.compactMap(\.pid)
                #expect(
                    await SupervisorHarness.eventually { pids.allSatisfy { FileManager.default.fileExists(atPath: "\(harness.home)/ready-\($0)") } }
                )
                return table
            }
            _ = try await waitUntilReady()

            let started = ContinuousClock.now
            try await harness.manager.restart(appNamed: "stubborn")
            #expect(started.duration(to: .now) >= .seconds(4), "both instances waited out their kill_timeout")
            var table = try await waitUntilReady()
            #expect(table.allSatisfy { $0.status == .online && $0.restarts == 1 }, "\(SupervisorHarness.summary(table))")

            try await harness.manager.reload(spec, ecosystem: "")
            table = try await harness.manager.processes()
            #expect(table.count == 2 && table.allSatisfy { $0.status == .online && $0.restarts == 2 }, "\(SupervisorHarness.summary(table))")
        }
    }

    @Test("reload runs the code behind a repointed current symlink, in fork and cluster mode")
    func reloadFollowsCurrentSymlink() async throws {
        try await SupervisorHarness.with { harness in
            for version in ["v1", "v2"] {
                try harness.write("releases/\(version)/server.js", TestApps.server)
                try harness.write("releases/\(version)/report.js", TestApps.report)
                try harness.write("releases/\(version)/VERSION", version)
            }
            try harness.write("out/.keep", "")
            try harness.pointSymlink("current", to: "releases/v1")
            let current = "\(harness.home)/current"
            let port = try SupervisorHarness.freePort()
            let web = harness.spec("web", script: "\(current)/server.js", cwd: current, env: ["PORT": String(port)])
            let workers = harness.spec(
                "workers",
                script: "\(current)/report.js",
                cwd: current,
                instances: 2,
                execMode: .cluster,
                env: ["OUT_DIR": "\(harness.home)/out"]
            )
            try await harness.manager.start(web, ecosystem: "")
            try await harness.manager.start(workers, ecosystem: "")
            #expect(await SupervisorHarness.eventually { await SupervisorHarness.httpGet(port: port)?.contains("\"v1\"") == true })
            let before = try await harness.manager.processes()

            try harness.pointSymlink("current", to: "releases/v2")
            try await harness.manager.reload(web, ecosystem: "")
            try await harness.manager.reload(workers, ecosystem: "")

            #expect(await SupervisorHarness.eventually { await SupervisorHarness.httpGet(port: port)?.contains("\"v2\"") == true })
            let after = try await harness.waitUntil("every instance is online again") { table in
                table.count == 3 && table.allSatisfy { $0.status == .online }
            }
            #expect(after.map(\.pmId) == before.map(\.pmId), "reload keeps pm_ids")
            #expect(after.allSatisfy { $0.restarts == 1 })
            #expect(after.allSatisfy { $0.cwd == current }, "the table keeps the symlink path, like PM2")
            for worker in after where worker.name == "workers" {
                let pid = try #require(worker.pid)
                #expect(!before.contains { $0.pid == pid })
                let report = try await harness.report(instance: worker.instanceIndex, pid: pid)
                #expect(report["version"] as? String == "v2")
                #expect(report["cwd"] as? String == "\(harness.home)/releases/v2")
            }
            for old in before.compactMap(\.pid) {
                #expect(await SupervisorHarness.eventually { !SupervisorHarness.isAlive(old) }, "old pid \(old) survived the reload")
            }
        }
    }

    /// What an app prints as it stops (its SIGINT handler) at the daemon's shutdown is in its log: the daemon exited
    /// while the output thread was still draining the pipes, and the last lines were lost.
    @Test("the lines an app prints as the daemon shuts it down are in its log", arguments: 0..<3)
    func theLastLinesAtShutdownAreKept(_ attempt: Int) async throws {
        try await SupervisorHarness.with { harness in
            let script = try harness.write(
                "app/goodbye.js",
                """
                process.on('SIGINT', () => {
                    for (let i = 0; i < 2000; i++) process.stdout.write('goodbye line ' + i + ' ' + 'x'.repeat(60) + '\\n');
                    process.stdout.write('last words\\n', () => process.exit(0));
                });
                console.log('up');
                setInterval(() => {}, 1000);

                """
            )
            try await harness.manager.start(harness.spec("goodbye", script: script), ecosystem: "")
            let log = "\(harness.home)/logs/goodbye-0-out.log"
            #expect(await SupervisorHarness.eventually { (try? String(contentsOfFile: log, encoding: .utf8))?.contains("up\n") == true })
            #expect(try await harness.manager.shutdown())
            let text = try String(contentsOfFile: log, encoding: .utf8)
            #expect(text.hasSuffix("last words\n"), "attempt \(attempt): the log ends with \(text.suffix(80).debugDescription)")
        }
    }

    @Test("app output goes to logs rotated by size")
    func logRotation() async throws {
        let rotation: @Sendable (inout BuiltinProcessManager.Configuration) -> Void = {
            $0.logRotation = LogRotation(maximumFileBytes: 64 * 1024, keptFiles: 2)
        }
        try await SupervisorHarness.with(configure: rotation) { harness in
            let script = try harness.write("app/chatty.js", TestApps.chatty)
            try await harness.manager.start(harness.spec("chatty", script: script), ecosystem: "")
            let log = "\(harness.home)/logs/chatty-0-out.log"
            let done = await SupervisorHarness.eventually {
                (try? String(contentsOfFile: log, encoding: .utf8))?.hasSuffix("done\n") == true
            }
            #expect(done)
            let files = [log, "\(log).1", "\(log).2"]
            for file in files {
                let size = try #require(try FileManager.default.attributesOfItem(atPath: file)[.size] as? Int)
                #expect(size > 0 && size <= 64 * 1024, "\(file) has \(size) bytes")
            }
            #expect(!FileManager.default.fileExists(atPath: "\(log).3"), "only 2 rotated files are kept")
            // 300 KB written, 64 KiB files: the oldest output was dropped; rotation cuts by bytes, so only the first
            // kept line may be partial, and the files join up without a byte lost or repeated.
            var kept = ""
            for file in files.reversed() {
                kept += try String(contentsOfFile: file, encoding: .utf8)
            }
            let lines: [String] = kept.components(separatedBy: "\n").dropLast()
            #expect(lines.last == "done")
            #expect(lines.dropFirst().dropLast().allSatisfy { $0.count == 99 })
        }
    }

    /// An operator frees disk with `rm -rf logs` under a running daemon: the apps keep running, an app started since
    /// keeps its output pipe read, and the log files come back. The daemon used to close a new app's pipe when its log
    /// could not be opened (the app died on its first line, and again at every restart), and a running app's log, once
    /// rotated into the missing directory, was never opened again.
    @Test("apps outlive their log directory being removed, and their logs come back")
    func logDirectoryRemovedUnderRunningApps() async throws {
        let rotation: @Sendable (inout BuiltinProcessManager.Configuration) -> Void = {
            $0.logRotation = LogRotation(maximumFileBytes: 4 * 1024, keptFiles: 1)
        }
        try await SupervisorHarness.with(configure: rotation) { harness in
            let script = try harness.write(
                "app/ticker.js",
                "setInterval(() => console.log('tick ' + Date.now() + ' ' + 'x'.repeat(60)), 20)\n"
            )
            try await harness.manager.start(harness.spec("early", script: script), ecosystem: "")
            let logs = "\(harness.home)/logs"
            #expect(await SupervisorHarness.eventually { FileManager.default.fileExists(atPath: "\(logs)/early-0-out.log") })
            try FileManager.default.removeItem(atPath: logs)
            try await harness.manager.start(harness.spec("late", script: script), ecosystem: "")
            for name in ["late", "early"] {
                let log = "\(logs)/\(name)-0-out.log"
                let back = await SupervisorHarness.eventually {
                    (try? String(contentsOfFile: log, encoding: .utf8))?.contains("tick ") == true
                }
                #expect(back, "\(name)'s log is written again")
            }
            let table = try await harness.manager.processes()
            for name in ["early", "late"] {
                let process = try #require(table.first { $0.name == name })
                #expect(process.status == .online && process.restarts == 0, "\(name): \(process.status), \(process.restarts) restart(s)")
            }
        }
    }

    @Test("the daemon is detached, outlives its client, serves a second client the same table, and stops on SIGTERM")
    func daemonOutlivesItsClient() async throws {
        try await SupervisorHarness.with { harness in
            let script = try harness.write("app/report.js", TestApps.report)
            try harness.write("out/.keep", "")
            try await harness.manager.start(harness.spec("reporter", script: script, env: ["OUT_DIR": "\(harness.home)/out"]), ecosystem: "")
            let first = try await harness.manager.processes()
            let daemon = try await harness.manager.daemonPID()
            #expect(harness.daemonPidFromFile == daemon)

            let stat = try #require(ProcStat.read(pid: daemon))
            #expect(stat.session == daemon, "the daemon leads its own session")
            #expect(stat.parentPid != getpid(), "the daemon is not the client's child")
            let mode = try #require(try FileManager.default.attributesOfItem(atPath: "\(harness.home)/supervisor.sock")[.posixPermissions] as? Int)
            #expect(mode & 0o777 == 0o600)

            let second = harness.secondClient()
            let seen = try await second.processes()
            #expect(seen.map(\.pid) == first.map(\.pid))
            #expect(seen.map(\.pmId) == first.map(\.pmId))
            #expect(try await second.daemonPID() == daemon)

            let appPid = try #require(first.first?.pid)
            kill(daemon, SIGTERM)
            #expect(await SupervisorHarness.eventually { !SupervisorHarness.isAlive(daemon) })
            #expect(!SupervisorHarness.isAlive(appPid), "SIGTERM to the daemon stops its apps")
        }
    }

    /// A logrotate hook's `kill -HUP`, PM2's SIGUSR2 or a closed terminal ended the daemon at once, and the next call's
    /// daemon restarted every app as a leftover. The daemon now ignores them; SIGQUIT stops it and its apps.
    @Test("SIGHUP, SIGUSR1 and SIGUSR2 leave the daemon and its apps running; SIGQUIT stops them")
    func hangUpAndUserSignalsLeaveTheDaemonRunning() async throws {
        try await SupervisorHarness.with { harness in
            let script = try harness.write("app/report.js", TestApps.report)
            try harness.write("out/.keep", "")
            try await harness.manager.start(harness.spec("reporter", script: script, env: ["OUT_DIR": "\(harness.home)/out"]), ecosystem: "")
            let before = try await harness.manager.processes()
            let daemon = try await harness.manager.daemonPID()
            for signal in [SIGHUP, SIGUSR1, SIGUSR2] { #expect(kill(daemon, signal) == 0) }
            try await Task.sleep(for: .milliseconds(500))
            #expect(SupervisorHarness.isAlive(daemon))
            let after = try await harness.manager.processes()
            #expect(try await harness.manager.daemonPID() == daemon)
            #expect(after.map(\.pid) == before.map(\.pid) && after.allSatisfy { $0.restarts == 0 }, "\(SupervisorHarness.summary(after))")

            let appPid = try #require(after.first?.pid)
            kill(daemon, SIGQUIT)
            #expect(await SupervisorHarness.eventually { !SupervisorHarness.isAlive(daemon) })
            #expect(!SupervisorHarness.isAlive(appPid), "SIGQUIT to the daemon stops its apps")
        }
    }

    @Test("clients calling at once on a fresh home start exactly one daemon")
    func concurrentFirstCalls() async throws {
        try await SupervisorHarness.with { harness in
            let clients = [harness.manager, harness.secondClient(), harness.secondClient(), harness.secondClient()]
            let pids = try await withThrowingTaskGroup(of: Int32.self) { group in
                for client in clients {
                    group.addTask { try await client.daemonPID() }
                }
                return try await group.reduce(into: Set<Int32>()) { $0.insert($1) }
            }
            #expect(pids.count == 1)
            let daemon = try #require(pids.first)
            // Daemons that lost the race for the lock exit at once.
            #expect(await SupervisorHarness.eventually { harness.processesUnderHome() == [daemon] })
        }
    }

    @Test("a daemon killed with SIGKILL is started again by the next call and resurrects its apps")
    func resurrectAfterSIGKILL() async throws {
        try await SupervisorHarness.with { harness in
            let script = try harness.write("app/report.js", TestApps.report)
            try harness.write("out/.keep", "")
            try await harness.manager.start(
                harness.spec("reporter", script: script, instances: 2, env: ["OUT_DIR": "\(harness.home)/out"]),
                ecosystem: ""
            )
            try await harness.manager.restart(appNamed: "reporter")
            let before = try await harness.manager.processes()
            #expect(before.allSatisfy { $0.restarts == 1 })
            let daemon = try await harness.manager.daemonPID()

            kill(daemon, SIGKILL)
            #expect(await SupervisorHarness.eventually { !SupervisorHarness.isAlive(daemon) })
            // The dead daemon left its socket and pid file behind.
            #expect(FileManager.default.fileExists(atPath: "\(harness.home)/supervisor.sock"))
            #expect(harness.daemonPidFromFile == daemon)

            let after = try await harness.manager.processes()
            let respawned = try await harness.manager.daemonPID()
            #expect(respawned != daemon)
            #expect(after.map(\.pmId) == before.map(\.pmId))
            #expect(after.allSatisfy { $0.status == .online && $0.restarts == 0 }, "\(SupervisorHarness.summary(after))")
            for old in before.compactMap(\.pid) {
                #expect(!after.contains { $0.pid == old })
                #expect(!SupervisorHarness.isAlive(old), "the process the killed daemon left behind still runs")
            }

            // `ferry-agent supervisor --stop` stops the daemon and its apps.
            let stop = try await Command.run(TestPaths.executable("ferry-agent"), ["supervisor", "--home", harness.home, "--stop"])
            #expect(stop.status == 0, "\(stop.stderr)")
            #expect(stop.stdout.contains("stopped"), "\(stop.stdout)")
            #expect(!SupervisorHarness.isAlive(respawned))
            #expect(after.compactMap(\.pid).allSatisfy { !SupervisorHarness.isAlive($0) })
        }
    }

    /// A saved table holding an id no daemon hands out (edited by hand, damaged): the app is resurrected with ids of
    /// its own, and the next start still finds a free id. With `Int.max` saved, the next id overflowed and the daemon
    /// died on every start; the agent started it again, it read the same table, and died again.
    @Test("a saved table with an id out of range is renumbered, and the daemon goes on", arguments: [Int.max, -1, Int(Int32.max) + 1])
    func savedIdsOutOfRangeAreRenumbered(_ savedId: Int) async throws {
        try await SupervisorHarness.with { harness in
            let script = try harness.write("app/report.js", TestApps.report)
            try harness.write("out/.keep", "")
            try await harness.manager.start(
                harness.spec("first", script: script, instances: 2, env: ["OUT_DIR": "\(harness.home)/out"]),
                ecosystem: ""
            )
            let daemon = try await harness.manager.daemonPID()
            kill(daemon, SIGKILL)
            #expect(await SupervisorHarness.eventually { !SupervisorHarness.isAlive(daemon) })
            let tablePath = "\(harness.home)/apps.json"
            let data = try #require(FileManager.default.contents(atPath: tablePath))
            var table = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
            var apps = try #require(table["apps"] as? [[String: Any]])
            var instances = try #require(apps[0]["instances"] as? [[String: Any]])
            instances[0]["pmId"] = savedId
            instances[1]["pmId"] = 5
            apps[0]["instances"] = instances
            table["apps"] = apps
            try JSONSerialization.data(withJSONObject: table).write(to: URL(fileURLWithPath: tablePath))

            let resurrected = try await harness.waitUntil("the table is resurrected") { $0.count == 2 && $0.allSatisfy { $0.status == .online } }
            let respawned = try await harness.manager.daemonPID()
            #expect(resurrected.allSatisfy { (0...Int(Int32.max)).contains($0.pmId) }, "\(SupervisorHarness.summary(resurrected))")
            try await harness.manager.start(
                harness.spec("second", script: script, env: ["OUT_DIR": "\(harness.home)/out"]),
                ecosystem: ""
            )
            let after = try await harness.waitUntil("the second app runs") { $0.count == 3 && $0.allSatisfy { $0.status == .online } }
            #expect(Set(after.map(\.pmId)).count == 3)
            #expect(after.allSatisfy { (0...Int(Int32.max)).contains($0.pmId) })
            #expect(try await harness.manager.daemonPID() == respawned, "the daemon that resurrected the table still runs")
        }
    }

    /// The saved table outlives a reboot; the pids and start ticks in it name processes of the boot that wrote it. A
    /// process of this boot that matches one (the same pid and tick come round again: boots are deterministic enough)
    /// is not the dead daemon's, and must not be stopped. Here a process of its own process group, as an app's would be,
    /// stands in for it: its pid and tick are written into the table as an earlier boot's.
    @Test("processes recorded in an earlier boot are not stopped as the dead daemon's leftovers", arguments: [false, true])
    func anEarlierBootsProcessesAreNotStopped(_ earlierBoot: Bool) async throws {
        try await SupervisorHarness.with { harness in
            let script = try harness.write("app/idle.js", "setInterval(() => {}, 1000);\n")
            try await harness.manager.start(harness.spec("idle", script: script), ecosystem: "")
            let daemon = try await harness.manager.daemonPID()
            kill(daemon, SIGKILL)
            #expect(await SupervisorHarness.eventually { !SupervisorHarness.isAlive(daemon) })
            let bystander = try SleepingProcess(seconds: 60)
            defer { bystander.stop() }
            var target: (pid: Int32, ticks: UInt64)?
            let deadline = ContinuousClock.now + .seconds(10)
            while target == nil, ContinuousClock.now < deadline {
                let pid = bystander.pid
                if let stat = ProcStat.read(pid: pid), stat.processGroup == pid { target = (pid, stat.startTicks) }
                try await Task.sleep(for: .milliseconds(20))
            }
            let (pid, ticks) = try #require(target, "a process leading its own group")
            let tablePath = "\(harness.home)/apps.json"
            let data = try #require(FileManager.default.contents(atPath: tablePath))
            var table = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
            var apps = try #require(table["apps"] as? [[String: Any]])
            var instances = try #require(apps[0]["instances"] as? [[String: Any]])
            let left = try #require(instances[0]["pid"] as? Int)
            kill(Int32(left), SIGKILL)
            instances[0]["pid"] = Int(pid)
            instances[0]["startTicks"] = Int(ticks)
            apps[0]["instances"] = instances
            table["apps"] = apps
            table["bootID"] = earlierBoot ? "00000000-0000-4000-8000-000000000000" : BootID.current
            try JSONSerialization.data(withJSONObject: table).write(to: URL(fileURLWithPath: tablePath))

            _ = try await harness.waitUntil("the table is resurrected") { $0.count == 1 && $0.allSatisfy { $0.status == .online } }
            if earlierBoot {
                #expect(SupervisorHarness.isAlive(pid), "a process of this boot was stopped as an earlier boot's leftover")
            } else {
                // The same boot: the recorded process is the dead daemon's, and is stopped (the rule the boot id narrows).
                #expect(await SupervisorHarness.eventually { !SupervisorHarness.isAlive(pid) })
            }
        }
    }

    /// A table the next daemon cannot read is set aside and nothing is resurrected; what the killed daemon left
    /// running must still be stopped, or it runs beside the copies the agent starts next (EADDRINUSE, double work).
    @Test(
        "an unreadable table is set aside, and the processes of the killed daemon are still stopped",
        arguments: [("corrupt", "{"), ("newer version", #"{"version":2,"apps":[]}"#)]
    )
    func unreadableTableStillStopsLeftovers(_ label: String, _ contents: String) async throws {
        try await SupervisorHarness.with { harness in
            let script = try harness.write("app/idle.js", "setInterval(() => {}, 1000);\n")
            try await harness.manager.start(harness.spec("idle", script: script, instances: 2), ecosystem: "")
            let old = try await harness.manager.processes().compactMap(\.pid)
            try #require(old.count == 2)
            let daemon = try await harness.manager.daemonPID()
            kill(daemon, SIGKILL)
            #expect(await SupervisorHarness.eventually { !SupervisorHarness.isAlive(daemon) })
            try contents.write(toFile: "\(harness.home)/apps.json", atomically: true, encoding: .utf8)

            let table = try await harness.manager.processes()
            #expect(table.isEmpty, "\(label): \(SupervisorHarness.summary(table))")
            for pid in old {
                #expect(
                    await SupervisorHarness.eventually { !SupervisorHarness.isAlive(pid) },
                    "\(label): pid \(pid) of the killed daemon still runs"
                )
            }
            let files = try FileManager.default.contentsOfDirectory(atPath: harness.home)
            #expect(files.contains { $0.hasPrefix("apps.json.unreadable-") }, "\(files)")
        }
    }

    /// A process the previous daemon started but never wrote into its table (killed between spawning it and saving,
    /// during a start or a reload): the next daemon finds it by the home in its environment.
    struct LeftoverCase: Sendable, CustomTestStringConvertible {
        let name: String
        /// `FERRY_SUPERVISOR_HOME` of the process (`{home}` is the harness's home), `nil` for none.
        let marker: String?
        let stopped: Bool
        var testDescription: String { name }
    }

    static let leftoverCases: [LeftoverCase] = [
        LeftoverCase(name: "started for this home: stopped", marker: "{home}", stopped: true),
        LeftoverCase(name: "started for another home: left alone", marker: "/tmp/fs-other", stopped: false),
        LeftoverCase(name: "a home below this one: left alone", marker: "{home}/nested", stopped: false),
        LeftoverCase(name: "no marker at all: left alone", marker: nil, stopped: false),
    ]

    @Test("a process a killed daemon spawned but never recorded is stopped by the next daemon", arguments: leftoverCases)
    func unrecordedLeftovers(_ row: LeftoverCase) async throws {
        try await SupervisorHarness.with { harness in
            let script = try harness.write("app/idle.js", "setInterval(() => {}, 1000);\n")
            try await harness.manager.start(harness.spec("idle", script: script), ecosystem: "")
            let daemon = try await harness.manager.daemonPID()
            var environment = ["PATH": AppSpec.defaultSearchPath]
            if let marker = row.marker { environment["FERRY_SUPERVISOR_HOME"] = marker.replacingOccurrences(of: "{home}", with: harness.home) }
            // Not a child of the daemon, and not in its table: what a spawn cut short by the daemon's death leaves.
            let leftover = try SpawnedProcess(executable: "/bin/sleep", arguments: ["300"], environment: environment)
            defer {
                leftover.signal(SIGKILL)
                leftover.waitUntilExit()
            }

            kill(daemon, SIGKILL)
            #expect(await SupervisorHarness.eventually { !SupervisorHarness.isAlive(daemon) })
            let table = try await harness.manager.processes()
            #expect(table.count == 1 && table.first?.status == .online, "\(SupervisorHarness.summary(table))")
            if row.stopped {
                #expect(await SupervisorHarness.eventually { !leftover.isRunning }, "pid \(leftover.processIdentifier) still runs")
                #expect(SmallFile.tail("\(harness.home)/supervisor.log", bytes: 4000).contains("supervisor.leftovers.stopping"))
            } else {
                #expect(leftover.isRunning, "a process that is not this home's was stopped")
            }
        }
    }

    /// The table is written once per request, not once per process: a start of 16 instances wrote `apps.json` 17
    /// times (each spawn, then the request), every write two `fsync`s on the supervisor's actor. What the request
    /// answers is still on disk when it does: the table lists every instance with its pid.
    @Test("a start of 16 instances writes the app table once, with every pid")
    func aStartWritesTheTableOnce() async throws {
        try await SupervisorHarness.with { harness in
            let script = try harness.write("app/idle.js", "setInterval(() => {}, 1000);\n")
            try await harness.manager.start(harness.spec("warm-up", script: script), ecosystem: "")
            let renames = try RenameCounter(directory: harness.home, name: "apps.json")
            try await harness.manager.start(harness.spec("wide", script: script, instances: 16), ecosystem: "")
            let written = renames.count()
            #expect((1...2).contains(written), "apps.json written \(written) times for one start")
            let table =
                try JSONSerialization.jsonObject(with: try Data(contentsOf: URL(fileURLWithPath: "\(harness.home)/apps.json"))) as? [String: Any]
            let wide = (table?["apps"] as? [[String: Any]])?.first { ($0["spec"] as? [String: Any])?["name"] as? String == "wide" }
            let pids = (wide?["instances"] as? [[String: Any]])?.compactMap { $0["pid"] as? Int } ?? []
            let running = try await harness.manager.processes().filter { $0.name == "wide" }.compactMap(\.pid).map(Int.init)
            #expect(pids.count == 16 && Set(pids) == Set(running), "saved \(pids), running \(running)")
        }
    }

    /// The daemon's home on a small tmpfs that fills up: a delete's table save fails, so `apps.json` still lists the
    /// deleted app (which the next daemon would resurrect). Once space is freed, the next memory check saves it again.
    @Test("a table save that failed on a full disk is made again at the next memory check")
    func tableSaveRetriedAfterAFullDisk() async throws {
        let checkOften: (inout BuiltinProcessManager.Configuration) -> Void = { $0.memoryCheckInterval = .milliseconds(300) }
        try await SupervisorHarness.with(configure: checkOften) { harness in
            let disk = try SmallFileSystem.mount(at: harness.home, megabytes: 16)
            defer { disk.unmount() }
            let script = try harness.write("app/idle.js", "setInterval(() => {}, 1000);\n")
            try await harness.manager.start(harness.spec("first", script: script), ecosystem: "")
            try await harness.manager.start(harness.spec("second", script: script), ecosystem: "")
            let table = "\(harness.home)/apps.json"
            func saved() -> String { (try? String(contentsOfFile: table, encoding: .utf8)) ?? "" }
            #expect(saved().contains("\"second\""))

            _ = try disk.fill()
            try await harness.manager.delete(appNamed: "second")
            #expect(try await harness.manager.processes().map(\.name) == ["first"])
            #expect(saved().contains("\"second\""), "the save failed: the file still lists the deleted app")

            disk.free()
            #expect(await SupervisorHarness.eventually(timeout: .seconds(15)) { !saved().contains("\"second\"") && saved().contains("\"first\"") })
            let stop = try await Command.run(TestPaths.executable("ferry-agent"), ["supervisor", "--home", harness.home, "--stop"])
            #expect(stop.status == 0, "\(stop.stderr)")
        }
    }

    /// The daemon's own log (its stdout and stderr) used to grow for ever; it is rotated at the memory check like the
    /// apps' logs: past `logMaxBytes` it moves to `supervisor.log.1`, `logKeep` files are kept, and the daemon goes on
    /// writing to a new `supervisor.log`. Filled here by what an earlier daemon left, then by appending to the file the
    /// daemon writes.
    @Test("the daemon's own log is rotated past the size limit, keeping logKeep files")
    func daemonLogRotated() async throws {
        let configure: (inout BuiltinProcessManager.Configuration) -> Void = {
            $0.memoryCheckInterval = .milliseconds(200)
            $0.logRotation = LogRotation(maximumFileBytes: 4096, keptFiles: 2)
        }
        try await SupervisorHarness.with(configure: configure) { harness in
            let log = "\(harness.home)/supervisor.log"
            func contents(_ path: String) -> String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }
            try harness.write("supervisor.log", String(repeating: "a line an earlier daemon wrote\n", count: 200))
            let script = try harness.write("app/idle.js", "setInterval(() => {}, 1000);\n")
            try await harness.manager.start(harness.spec("idle", script: script), ecosystem: "")
            #expect(await SupervisorHarness.eventually { contents(log + ".1").hasPrefix("a line an earlier daemon wrote") })
            #expect(await SupervisorHarness.eventually { contents(log).contains("supervisor.log.rotated") }, "the daemon writes to the new file")
            for round in 1...2 {
                let handle = try #require(FileHandle(forWritingAtPath: log))
                try handle.seekToEnd()
                try handle.write(contentsOf: Data(String(repeating: "filler of round \(round)\n", count: 300).utf8))
                try handle.close()
                #expect(await SupervisorHarness.eventually { contents(log + ".1").contains("filler of round \(round)") })
            }
            #expect(contents(log + ".2").contains("filler of round 1"))
            #expect(!FileManager.default.fileExists(atPath: log + ".3"), "two files kept")
            #expect(await SupervisorHarness.eventually { contents(log).contains("supervisor.log.rotated") })
            #expect(try await harness.manager.processes().map(\.name) == ["idle"], "the daemon answers as before")
            let stop = try await Command.run(TestPaths.executable("ferry-agent"), ["supervisor", "--home", harness.home, "--stop"])
            #expect(stop.status == 0, "\(stop.stderr)")
            #expect(contents(log).contains("supervisor.stopped"))
        }
    }

    /// `supervisor.log` removed by hand under the running daemon: a new one takes over at the next memory check. The
    /// daemon used to write on to the removed file (its space never freed, its lines out of sight, never rotated again)
    /// until it restarted.
    @Test("the daemon's own log removed by hand is made again and written to")
    func daemonLogRemovedIsMadeAgain() async throws {
        try await Self.withIdleAppAndDaemonLog { harness, log, contents in
            try FileManager.default.removeItem(atPath: log)
            #expect(await SupervisorHarness.eventually { contents(log).contains("supervisor.log.reopened") }, "a new file takes over")
            try await harness.manager.restart(appNamed: "idle")
            #expect(try await harness.manager.processes().map(\.name) == ["idle"], "the daemon answers as before")
        }
    }

    /// `supervisor.log` renamed under the running daemon (logrotate's default `create` rule: rename, then a new empty
    /// file): the daemon writes to `supervisor.log` again at the next memory check. It used to write on to the renamed
    /// file for good (its rotation never fired again: the name no longer was its file).
    @Test("the daemon's own log renamed under it is written to again", arguments: [false, true])
    func daemonLogRenamedIsWrittenAgain(logrotateCreates: Bool) async throws {
        try await Self.withIdleAppAndDaemonLog { harness, log, contents in
            #expect(rename(log, log + ".old") == 0)
            if logrotateCreates { #expect(FileManager.default.createFile(atPath: log, contents: Data())) }
            #expect(await SupervisorHarness.eventually { contents(log).contains("the file was renamed") }, "the daemon writes to the name again")
            try await harness.manager.delete(appNamed: "idle")
            #expect(await SupervisorHarness.eventually { contents(log).contains("supervisor.app.deleted") }, "later lines go there too")
            #expect(!contents(log + ".old").contains("the file was renamed"))
        }
    }

    /// A daemon checking its memory (and its own log) every 200 ms, running one idle app, its `supervisor.log` written:
    /// `body` gets the harness, the log's path and a reader of a file's text.
    static func withIdleAppAndDaemonLog(
        _ body: (SupervisorHarness, _ log: String, _ contents: @escaping (String) -> String) async throws -> Void
    ) async throws {
        let configure: (inout BuiltinProcessManager.Configuration) -> Void = { $0.memoryCheckInterval = .milliseconds(200) }
        try await SupervisorHarness.with(configure: configure) { harness in
            let log = "\(harness.home)/supervisor.log"
            let contents = { (path: String) in (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }
            let script = try harness.write("app/idle.js", "setInterval(() => {}, 1000);\n")
            try await harness.manager.start(harness.spec("idle", script: script), ecosystem: "")
            #expect(await SupervisorHarness.eventually { !contents(log).isEmpty })
            try await body(harness, log, contents)
        }
    }

    /// An app that starts a worker in a session of its own (`child_process.spawn(..., {detached: true})`; the worker
    /// ignores SIGINT). Signals to the instance's process group missed it: it outlived every restart and delete (each
    /// run started another one), holding its port and memory, until the daemon's next start. As PM2's `treekill` on a
    /// stop, it now goes with its instance.
    @Test("a worker an instance started in a session of its own goes with the instance")
    func detachedWorkersGoWithTheirInstance() async throws {
        try await SupervisorHarness.with { harness in
            let pidFile = "\(harness.home)/worker.pid"
            let script = try harness.write(
                "app/spawner.js",
                """
                const { spawn } = require('child_process');
                const worker = spawn(process.execPath, ['-e', 'process.on("SIGINT", () => {}); setInterval(() => {}, 1000)'],
                    { detached: true, stdio: 'ignore' });
                require('fs').writeFileSync(\(String(reflecting: pidFile)), String(worker.pid));
                setInterval(() => {}, 1000);

                """
            )
            func worker(after previous: Int32? = nil) async -> Int32? {
                var found: Int32?
                _ = await SupervisorHarness.eventually {
                    found = (try? String(contentsOfFile: pidFile, encoding: .utf8)).flatMap { Int32($0) }
                    return found != nil && found != previous
                }
                return found == previous ? nil : found
            }
            func alive(_ pid: Int32) -> Bool { ProcStat.read(pid: pid).map { !$0.hasExited } ?? false }

            try await harness.manager.start(harness.spec("spawner", script: script), ecosystem: "")
            let first = try #require(await worker())
            let instance = try #require(try await harness.manager.processes().first?.pid)
            #expect(alive(first))
            #expect(ProcStat.read(pid: first)?.processGroup != instance, "the worker is outside the instance's group")

            try await harness.manager.restart(appNamed: "spawner")
            let second = try #require(await worker(after: first))
            #expect(await SupervisorHarness.eventually { !alive(first) }, "the first run's worker went with the restart")
            #expect(alive(second))

            try await harness.manager.delete(appNamed: "spawner")
            #expect(await SupervisorHarness.eventually { !alive(second) }, "the worker went with the delete")
        }
    }

    /// A cluster instance that ends on its own while a reload waits for its replacement to settle: what it started in a
    /// session of its own goes with it. The reload marked it as stopping before any stop was sent, so its exit skipped
    /// the search for such processes and the stop that followed found it gone: the worker outlived it for good.
    @Test("a worker of an instance that ends during a reload's settle wait goes with it")
    func aWorkerOfAnInstanceEndingDuringAReloadGoesWithIt() async throws {
        try await SupervisorHarness.with { harness in
            let home = harness.home
            let script = try harness.write(
                "app/retiring.js",
                """
                const fs = require('fs');
                const { spawn } = require('child_process');
                const worker = spawn(process.execPath, ['-e', 'process.on("SIGINT", () => {}); setInterval(() => {}, 1000)'],
                    { detached: true, stdio: 'ignore' });
                fs.writeFileSync(\(String(reflecting: home)) + '/worker-' + process.pid, String(worker.pid));
                const started = \(String(reflecting: home)) + '/replacement-started';
                if (fs.existsSync(\(String(reflecting: home)) + '/reloading')) {
                    fs.writeFileSync(started, String(process.pid));
                } else {
                    // The first run ends on its own as soon as its replacement is up: inside the settle wait.
                    setInterval(() => { if (fs.existsSync(started)) process.exit(0); }, 20);
                }
                setInterval(() => {}, 1000);

                """
            )
            func alive(_ pid: Int32) -> Bool { ProcStat.read(pid: pid).map { !$0.hasExited } ?? false }
            func worker(of instance: Int32) async -> Int32? {
                var found: Int32?
                _ = await SupervisorHarness.eventually {
                    found = (try? String(contentsOfFile: "\(home)/worker-\(instance)", encoding: .utf8)).flatMap { Int32($0) }
                    return found != nil
                }
                return found
            }
            var spec = harness.spec("retiring", script: script, execMode: .cluster)
            spec.minUptimeMilliseconds = 3_000
            try await harness.manager.start(spec, ecosystem: "")
            let first = try #require(try await harness.manager.processes().first?.pid)
            let firstWorker = try #require(await worker(of: first))
            try harness.write("reloading", "")
            try await harness.manager.reload(spec, ecosystem: "")
            let second = try #require(try await harness.manager.processes().first?.pid)
            #expect(second != first)
            let secondWorker = try #require(await worker(of: second))
            #expect(await SupervisorHarness.eventually { !alive(firstWorker) }, "the first run's worker outlived it")
            #expect(alive(secondWorker))
            try await harness.manager.delete(appNamed: "retiring")
            #expect(await SupervisorHarness.eventually { !alive(secondWorker) })
        }
    }

    @Test("an instance above max_memory_restart is restarted")
    func memoryLimitRestarts() async throws {
        let checkEverySecond: (inout BuiltinProcessManager.Configuration) -> Void = { $0.memoryCheckInterval = .seconds(1) }
        try await SupervisorHarness.with(configure: checkEverySecond) { harness in
            let script = try harness.write("app/hog.js", TestApps.hog)
            var spec = harness.spec("hog", script: script)
            spec.maxMemoryBytes = 64 << 20
            try await harness.manager.start(spec, ecosystem: "")
            let first = try #require(try await harness.manager.processes().first?.pid)
            // The hog grows again after each restart, so under load it may already be stopping for the next one:
            // wait for a moment where a new process is online.
            let table = try await harness.waitUntil("hog was restarted for its memory") { table in
                table.first.map { $0.restarts >= 1 && $0.status == .online && $0.pid != nil && $0.pid != first } ?? false
            }
            #expect(table.first?.restarts ?? 0 >= 1)
        }
    }
}
