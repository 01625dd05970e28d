import Foundation
import Glibc
import Shared
import TestSupport
import Testing

@testable import Supervisor

/// The supervisor's parts on their own: log rotation, /proc parsing, app checks, the request codec, the client without a
/// daemon. (The `ferry-agent supervisor` command line is tested with the agent: `SupervisorCommandTests`.)
@Suite("Builtin supervisor parts")
struct BuiltinSupervisorPartsTests {
    static func spec(_ change: (inout AppSpec) -> Void = { _ in }) -> AppSpec {
        var spec = AppSpec(
            name: "api",
            service: "svc",
            script: "/srv/api/current/server.js",
            cwd: "/srv/api/current",
            args: ["--flag"],
            interpreter: "node",
            interpreterArgs: ["--max-old-space-size=128"],
            instances: 1,
            execMode: .fork,
            env: ["PORT": "3000"],
            autorestart: true,
            maxRestarts: 16,
            minUptimeMilliseconds: 1000,
            restartDelayMilliseconds: 0,
            killTimeoutMilliseconds: 1600,
            maxMemoryBytes: nil,
            pm2Options: [:]
        )
        change(&spec)
        return spec
    }

    @Test("a log rotates before it would pass its size and keeps the configured number of old files")
    func rotation() async throws {
        try await TestPaths.withTemporaryDirectory("fs-rotation") { directory in
            let path = directory.appendingPathComponent("app-0-out.log").path
            let file = try RotatingLogFile(path: path, rotation: LogRotation(maximumFileBytes: 1000, keptFiles: 2))
            for index in 0..<10 {
                let chunk = [UInt8](repeating: UInt8(ascii: "a") + UInt8(index), count: 300)
                chunk.withUnsafeBytes { #expect(file.append($0)) }
            }
            func content(_ suffix: String) throws -> [UInt8] { Array(try Data(contentsOf: URL(fileURLWithPath: path + suffix))) }
            // 3 chunks fit in 1000 bytes: chunks 9 | 6,7,8 | 3,4,5 are kept, 0,1,2 dropped off the end.
            #expect(try content("") == [UInt8](repeating: UInt8(ascii: "a") + 9, count: 300))
            #expect(try content(".1").count == 900 && content(".1").first == UInt8(ascii: "a") + 6)
            #expect(try content(".2").count == 900 && content(".2").first == UInt8(ascii: "a") + 3)
            #expect(!FileManager.default.fileExists(atPath: path + ".3"))
        }
    }

    /// An operator removes a log to free disk, or logrotate renames it: the output goes to a new file at the path within a
    /// second. It went on into the removed or renamed file until the next size rotation (10 MiB by default).
    @Test("a log removed or renamed under a running app is opened again at its path", arguments: ["remove", "rename"])
    func aLogRemovedOrRenamedIsOpenedAgain(how: String) async throws {
        try await TestPaths.withTemporaryDirectory("fs-follow") { directory in
            let path = directory.appendingPathComponent("app-0-out.log").path
            let file = try RotatingLogFile(path: path, rotation: LogRotation())
            file.append(line: "before")
            if how == "remove" { #expect(unlink(path) == 0) } else { #expect(rename(path, path + ".old") == 0) }
            try await Task.sleep(for: .milliseconds(1_100))
            file.append(line: "after")
            #expect(try String(contentsOfFile: path, encoding: .utf8) == "after\n")
            if how == "rename" { #expect(try String(contentsOfFile: path + ".old", encoding: .utf8) == "before\n") }
        }
    }

    @Test("what is still in an app's pipe when the daemon stops is written to its log before the pipe closes")
    func aStoppedPumpDrainsItsPipes() async throws {
        try await TestPaths.withTemporaryDirectory("fs-pump-drain") { directory in
            let path = directory.appendingPathComponent("app-0-out.log").path
            var ends: [Int32] = [0, 0]
            #expect(pipe(&ends) == 0)
            // 60 KB written and the write end closed before the pump sees the pipe: it fits in the pipe's buffer, as an
            // app's last burst does before it exits.
            let bytes = [UInt8](repeating: UInt8(ascii: "x"), count: 60_000)
            #expect(bytes.withUnsafeBytes { write(ends[1], $0.baseAddress, $0.count) } == bytes.count)
            close(ends[1])
            let pump = try OutputPump.start()
            try pump.add(pipe: ends[0], logPath: path, rotation: LogRotation())
            await pump.stop()
            // Before, the pipes were closed at once: the bytes the pump had not read yet never reached the log. And
            // `stop` returns once they have: the daemon exits right after it.
            func logged() -> Int { (try? Data(contentsOf: URL(fileURLWithPath: path)).count) ?? 0 }
            #expect(logged() == bytes.count)
        }
    }

    /// Where a rename of the rotation fails: a non-empty directory in the way makes rename(2) refuse (EISDIR) whoever
    /// runs the test (a read-only directory would not stop root). `.1`: the first kept file's name; `.rotating`: where
    /// the live file is moved first, with two kept files beside it that must stay as they are.
    @Test(
        "a log whose live file cannot be moved aside keeps its output instead of truncating it, and its kept files",
        arguments: [".1", ".rotating"]
    )
    func aRotationThatCannotRenameKeepsTheLiveFile(blocked: String) async throws {
        try await TestPaths.withTemporaryDirectory("fs-rotation-blocked") { directory in
            let path = directory.appendingPathComponent("app-0-out.log").path
            try FileManager.default.createDirectory(atPath: path + blocked, withIntermediateDirectories: false)
            FileManager.default.createFile(atPath: path + blocked + "/inside", contents: Data())
            let keptFiles = blocked == ".1" ? 1 : 3
            if blocked == ".rotating" {
                FileManager.default.createFile(atPath: path + ".1", contents: Data("one".utf8))
                FileManager.default.createFile(atPath: path + ".2", contents: Data("two".utf8))
            }
            let file = try RotatingLogFile(path: path, rotation: LogRotation(maximumFileBytes: 1000, keptFiles: keptFiles))
            for index in 0..<5 {
                let chunk = [UInt8](repeating: UInt8(ascii: "a") + UInt8(index), count: 300)
                chunk.withUnsafeBytes { #expect(file.append($0)) }
            }
            let kept = Array(try Data(contentsOf: URL(fileURLWithPath: path)))
            #expect(kept.count == 1500, "every chunk is still in the live file")
            #expect(kept.first == UInt8(ascii: "a") && kept.last == UInt8(ascii: "a") + 4)
            if blocked == ".rotating" {
                #expect(try String(contentsOfFile: path + ".1", encoding: .utf8) == "one", "the kept files did not move")
                #expect(try String(contentsOfFile: path + ".2", encoding: .utf8) == "two")
                #expect(!FileManager.default.fileExists(atPath: path + ".3"))
            }
        }
    }

    @Test("a process found by a scan is signalled only while it is the process found: a pid reused since is left alone")
    func signalOnlyTheProcessFound() async throws {
        let sleeper = Process()
        sleeper.executableURL = URL(fileURLWithPath: "/bin/sleep")
        sleeper.arguments = ["30"]
        try sleeper.run()
        defer {
            if sleeper.isRunning { kill(sleeper.processIdentifier, SIGKILL) }
            sleeper.waitUntilExit()
        }
        let pid = sleeper.processIdentifier
        let stat = try #require(ProcStat.read(pid: pid))
        // Another start time under the same pid: what a pid reused since the scan looks like.
        #expect(!ForeignProcessStop.signal(pid, startTicks: stat.startTicks &+ 1, SIGKILL))
        try await Task.sleep(for: .milliseconds(200))
        #expect(sleeper.isRunning)
        #expect(ForeignProcessStop.signal(pid, startTicks: stat.startTicks, SIGKILL))
        sleeper.waitUntilExit()
        #expect(sleeper.terminationReason == .uncaughtSignal)
        #expect(sleeper.terminationStatus == SIGKILL)
    }

    @Test("/proc/<pid>/stat is parsed from the last parenthesis, so odd command names do not shift the fields")
    func procStatParsing() throws {
        let line = "4242 (my (odd) app) S 1 4242 4242 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 5555 1000 200 18446744073709551615"
        let stat = try #require(ProcStat.parse(line))
        #expect(stat == ProcStat(cpuTicks: 10, startTicks: 5555, state: "S", parentPid: 1, processGroup: 4242, session: 4242, threads: 1))
        #expect(ProcStat.parse("4242 (truncated) S 1 2") == nil)
        #expect(ProcStat.parse("no parenthesis at all") == nil)
        let own = try #require(ProcStat.read(pid: getpid()))
        #expect(own.state != "Z")
        #expect(ProcStat.residentBytes(pid: getpid()).map { $0 > 0 } == true)
    }

    @Test(
        "a process is gone once it is a zombie with no other thread left: the first thread of a killed process shows Z while the others still hold its files",
        arguments: [
            ("running", "S", 12, false),
            ("a zombie, every other thread gone", "Z", 1, true),
            ("first thread a zombie, three others still exiting", "Z", 4, false),
            ("being reaped", "X", 1, true),
            ("stopped, not exited", "T", 1, false),
        ] as [(String, String, Int, Bool)]
    )
    func exitedMeansEveryThread(label: String, state: String, threads: Int, exited: Bool) throws {
        let line = "77 (node) \(state) 1 77 77 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 \(threads) 0 5555 1000 200"
        let stat = try #require(ProcStat.parse(line))
        #expect(stat.threads == threads && stat.hasExited == exited, "\(label)")
    }

    static let invalidSpecs: [(label: String, change: @Sendable (inout AppSpec) -> Void, message: String)] = [
        ("empty name", { $0.name = "" }, "name must not be empty"),
        ("control character in the name", { $0.name = "a\u{7}b" }, "name must not contain control characters"),
        ("\"all\", which PM2 reads as every app", { $0.name = "all" }, "means every app"),
        ("leading dash, which pm2 reads as an option", { $0.name = "-x" }, "starts with -"),
        ("relative script path", { $0.script = "app/server.js" }, "script must be an absolute path or a program name"),
        ("relative cwd", { $0.cwd = "current" }, "cwd must be an absolute path"),
        ("empty interpreter", { $0.interpreter = "" }, "interpreter must be"),
        ("NUL in an argument", { $0.args = ["a\u{0}b"] }, "args and interpreter args"),
        ("too many instances", { $0.instances = 1025 }, "instances must be between 1 and 1024"),
        ("negative max_restarts", { $0.maxRestarts = -1 }, "max_restarts and min_uptime"),
        ("huge restart_delay", { $0.restartDelayMilliseconds = 1 << 40 }, "restart_delay"),
        ("huge kill_timeout", { $0.killTimeoutMilliseconds = 3_600_001 }, "kill_timeout must be between 0 and 3600000 ms"),
        ("min_uptime at Int64.max", { $0.minUptimeMilliseconds = .max }, "min_uptime must be at most 86400000 ms"),
        ("restart_delay at Int64.max", { $0.restartDelayMilliseconds = .max }, "restart_delay"),
        ("kill_timeout at Int64.min", { $0.killTimeoutMilliseconds = .min }, "kill_timeout"),
        ("zero max_memory_restart", { $0.maxMemoryBytes = 0 }, "max_memory_restart"),
        ("empty env name", { $0.env = ["": "x"] }, "env name"),
        ("NUL in an env value", { $0.env = ["A": "x\u{0}y"] }, "env name \"A\""),
    ]

    @Test("CPU percent is ticks over elapsed time, in percent of one core; no time or a counter going back gives nothing")
    func cpuPercent() {
        let second = UInt64(ProcStat.ticksPerSecond)
        #expect(Supervisor.cpuPercent(from: 0, to: second, over: .seconds(1)) == 100)
        #expect(Supervisor.cpuPercent(from: second, to: second + second / 4, over: .seconds(1)) == 25)
        #expect(Supervisor.cpuPercent(from: 0, to: 2 * second, over: .seconds(1)) == 200, "two busy cores")
        #expect(Supervisor.cpuPercent(from: 0, to: second, over: .zero) == nil)
        #expect(Supervisor.cpuPercent(from: second, to: 0, over: .seconds(1)) == nil)
    }

    @Test("app specs the supervisor cannot run safely are refused, naming the field", arguments: invalidSpecs.indices)
    func invalidSpec(_ index: Int) {
        let (label, change, message) = Self.invalidSpecs[index]
        #expect(throws: SupervisorFailure.self, "\(label)") { try Self.spec(change).validateForSupervisor() }
        do {
            try Self.spec(change).validateForSupervisor()
        } catch {
            #expect(error.code == .invalidApp, "\(label)")
            #expect(error.message.contains(message), "\(label): \(error.message)")
        }
    }

    @Test("an app gets exactly its env plus PATH, HOME and NODE_APP_INSTANCE, and its own PATH wins")
    func environment() throws {
        try Self.spec().validateForSupervisor()
        let env = Self.spec().environment(instance: 3)
        #expect(Set(env.keys) == ["PORT", "PATH", "HOME", "NODE_APP_INSTANCE"])
        #expect(env["PATH"] == AppSpec.defaultSearchPath)
        #expect(env["NODE_APP_INSTANCE"] == "3")
        let own = Self.spec { $0.env = ["PATH": "/opt/bin", "HOME": "/srv/home"] }.environment(instance: 0)
        #expect(own["PATH"] == "/opt/bin" && own["HOME"] == "/srv/home")
    }

    @Test("the command line is the script itself, or the interpreter found on the app's PATH with its args")
    func command() throws {
        let (executable, arguments) = try Self.spec().command(instance: 0)
        #expect(executable.hasSuffix("/node"))
        #expect(arguments == ["node", "--max-old-space-size=128", "/srv/api/current/server.js", "--flag"])
        let direct = try Self.spec { $0.interpreter = "none" }.command(instance: 0)
        #expect(direct.executable == "/srv/api/current/server.js" && direct.arguments == ["/srv/api/current/server.js", "--flag"])
        #expect(throws: SupervisorError.self) { try Self.spec { $0.env["PATH"] = "/nonexistent" }.command(instance: 0) }
    }

    /// A program named with a space runs as PM2 7 runs it: `bash -c` with the whole line, the app's args dropped
    /// (`Common.prepareAppConf`), whatever the interpreter; `sh` where the app's PATH has no bash. Before, the
    /// supervisor looked for a program called `npm start` on PATH and the app never started.
    @Test("a command line with a space runs through bash -c, as PM2 runs it")
    func aCommandLineRunsThroughBash() throws {
        let bash = try AppSpec.resolve("bash", searchPath: AppSpec.defaultSearchPath, relativeTo: "/")
        let line = try Self.spec { $0.script = "npm run start:prod" }.command(instance: 0)
        #expect(line.executable == bash && line.arguments == ["bash", "-c", "npm run start:prod"])
        let direct = try Self.spec {
            $0.script = "npm start"
            $0.interpreter = "none"
        }.command(instance: 0)
        #expect(direct.arguments == ["bash", "-c", "npm start"])
        // A PATH with sh but no bash: sh.
        try TestPaths.withTemporaryDirectorySync { onlySh in
            let sh = try AppSpec.resolve("sh", searchPath: AppSpec.defaultSearchPath, relativeTo: "/")
            try FileManager.default.createSymbolicLink(atPath: onlySh.appendingPathComponent("sh").path, withDestinationPath: sh)
            let shell = try Self.spec {
                $0.script = "npm start"
                $0.env["PATH"] = onlySh.path
            }.command(instance: 0)
            #expect(shell.executable == onlySh.appendingPathComponent("sh").path && shell.arguments == ["sh", "-c", "npm start"])
        }
        // A release file with a space in its name is run as named.
        let file = try Self.spec { $0.script = "/srv/api/current/my server.js" }.command(instance: 0)
        #expect(file.arguments == ["node", "--max-old-space-size=128", "/srv/api/current/my server.js", "--flag"])
    }

    /// The time a request that stops processes gets: the base, plus per instance its kill_timeout, the daemon's 10 s
    /// grace after SIGKILL and its 5 s reload settle limit; numbers beyond the daemon's limits count as the limits.
    @Test(
        "a request's timeout grows with its instances and their kill_timeout",
        arguments: [
            (0, 1600, Duration.seconds(120)),
            (1, 0, .seconds(135)),
            (4, 40_000, .seconds(120 + 4 * 55)),
            (2, -5, .seconds(150)),
            (
                Int.max, Int64.max,
                .seconds(120) + (.milliseconds(AppSpec.maximumKillTimeoutMilliseconds) + .seconds(15)) * (AppSpec.maximumInstances + 1)
            ),
        ] as [(Int, Int64, Duration)]
    )
    func requestTimeout(instances: Int, killTimeoutMilliseconds: Int64, expected: Duration) {
        #expect(
            BuiltinProcessManager.timeout(instances: instances, killTimeoutMilliseconds: killTimeoutMilliseconds, base: .seconds(120)) == expected
        )
    }

    @Test("requests survive a round trip through their wire form")
    func requestCodec() throws {
        let requests: [SupervisorRequest] = [
            .ping, .list, .shutdown, .start(Self.spec()), .reload(Self.spec { $0.instances = 2 }),
            .delete(name: "api"), .restart(name: "api"),
        ]
        for request in requests {
            let line = try request.encodedLine()
            #expect(line.last == 10)
            #expect(try SupervisorRequest.decode(Array(line.dropLast())) == request)
        }
    }

    @Test("supervisor --stop with no daemon running says so and starts nothing")
    func stopWithoutDaemon() async throws {
        var template = Array("/tmp/fs-XXXXXX".utf8CString)
        let home = String(cString: try #require(mkdtemp(&template)))
        defer { try? FileManager.default.removeItem(atPath: home) }
        let manager = BuiltinProcessManager(
            configuration: .init(home: home, executablePath: TestPaths.executable("ferry-agent")),
            logger: SupervisorHarness.quietLogger
        )
        #expect(try await manager.shutdown() == false)
        #expect(!FileManager.default.fileExists(atPath: "\(home)/supervisor.sock"))
    }

    /// After a package upgrade replaced `ferry-agent`, `/proc/self/exe` reads `<path> (deleted)`: spawning that
    /// failed with ENOENT until the agent restarted.
    @Test(
        "the daemon's executable is the /proc/self/exe target without the suffix a replaced binary gets",
        arguments: [
            ("/usr/local/bin/ferry-agent", "/usr/local/bin/ferry-agent"),
            ("/usr/local/bin/ferry-agent (deleted)", "/usr/local/bin/ferry-agent"),
            ("/opt/a (deleted) dir/ferry-agent", "/opt/a (deleted) dir/ferry-agent"),
            ("/opt/x (deleted) (deleted)", "/opt/x (deleted)"),
            ("/opt/ferry-agent(deleted)", "/opt/ferry-agent(deleted)"),
        ]
    )
    func executablePath(link: String, expected: String) {
        #expect(SupervisorLauncher.executablePath(fromLink: link) == expected)
    }

    /// The daemon's environment is PATH alone, but for the runtime switches a way back may have been set with on the
    /// agent (`FERRY_EXECUTOR`, `FERRY_CODE_PAGES`); no token, config or other variable of the agent's passes.
    @Test(
        "the daemon's environment: PATH and the runtime switches, nothing else of the agent's",
        arguments: [
            ([:], ["PATH": AppSpec.defaultSearchPath]),
            (
                ["FERRY_EXECUTOR": "platform", "FERRY_CODE_PAGES": "keep", "FERRY_TOKEN": "secret", "PATH": "/tmp/evil", "HOME": "/root"],
                ["PATH": AppSpec.defaultSearchPath, "FERRY_EXECUTOR": "platform", "FERRY_CODE_PAGES": "keep"]
            ),
            (["FERRY_CODE_PAGES": ""], ["PATH": AppSpec.defaultSearchPath, "FERRY_CODE_PAGES": ""]),
        ] as [([String: String], [String: String])]
    )
    func daemonEnvironment(agent: [String: String], daemon: [String: String]) {
        #expect(SupervisorLauncher.daemonEnvironment(lookup: { agent[$0] }) == daemon)
    }
}
