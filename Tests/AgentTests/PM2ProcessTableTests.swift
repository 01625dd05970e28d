import Foundation
import Shared
import TestSupport
import Testing

@testable import Agent

@Suite("pm2 jlist is read exactly as PM2 7.0.3 printed it (recorded captures)")
struct PM2ProcessTableTests {
    /// What a capture shows for one element: name, pm_id, pid, status, restart_time, namespace, instances,
    /// NODE_APP_INSTANCE, exec_mode, exit_code. Written out from each capture's stdout so the test does not read the
    /// expectations through the parser under test.
    struct Row {
        var name: String
        var id: Int
        var pid: Int32
        var status: ProcessStatus
        var restarts: Int
        var ns: String
        var of: Int
        var index: Int
        var mode: ExecMode
        var exit: Int32?

        init(
            _ name: String,
            id: Int,
            pid: Int32,
            _ status: ProcessStatus,
            restarts: Int,
            ns: String,
            of: Int,
            index: Int,
            _ mode: ExecMode,
            exit: Int32?
        ) {
            (self.name, self.id, self.pid, self.status, self.restarts) = (name, id, pid, status, restarts)
            (self.ns, self.of, self.index, self.mode, self.exit) = (ns, of, index, mode, exit)
        }
    }

    static let expected: [String: [Row]] = [
        "jlist-first-run-fresh-home.json": [],
        "jlist-daemon-not-running.json": [],
        "jlist-empty.json": [],
        "jlist-fork-online.json": [
            Row("web-fork", id: 0, pid: 10277, .online, restarts: 0, ns: "default", of: 1, index: 0, .fork, exit: nil)
        ],
        "jlist-cluster-2.json": [
            Row("web-fork", id: 0, pid: 10277, .online, restarts: 0, ns: "default", of: 1, index: 0, .fork, exit: nil),
            Row("web-cluster", id: 1, pid: 10345, .online, restarts: 0, ns: "default", of: 2, index: 0, .cluster, exit: nil),
            Row("web-cluster", id: 2, pid: 10352, .online, restarts: 0, ns: "default", of: 2, index: 1, .cluster, exit: nil),
        ],
        "jlist-after-update-env.json": [
            Row("web-fork", id: 0, pid: 11012, .online, restarts: 7, ns: "default", of: 1, index: 0, .fork, exit: 0),
            Row("web-cluster", id: 1, pid: 10997, .online, restarts: 7, ns: "default", of: 2, index: 0, .cluster, exit: 0),
            Row("web-cluster", id: 2, pid: 11028, .online, restarts: 7, ns: "default", of: 2, index: 1, .cluster, exit: 0),
        ],
        "jlist-stopped.json": [
            Row("web-fork", id: 0, pid: 0, .stopped, restarts: 7, ns: "default", of: 1, index: 0, .fork, exit: 0),
            Row("web-cluster", id: 1, pid: 10997, .online, restarts: 7, ns: "default", of: 2, index: 0, .cluster, exit: 0),
            Row("web-cluster", id: 2, pid: 11028, .online, restarts: 7, ns: "default", of: 2, index: 1, .cluster, exit: 0),
        ],
        // resurrected entries carry no pm2_env.instances: the count of same-name elements stands in.
        "jlist-after-resurrect.json": [
            Row("web-fork", id: 0, pid: 11444, .online, restarts: 0, ns: "default", of: 1, index: 0, .fork, exit: 0),
            Row("web-cluster", id: 1, pid: 11443, .online, restarts: 0, ns: "default", of: 2, index: 0, .cluster, exit: 0),
            Row("web-cluster", id: 2, pid: 11445, .online, restarts: 0, ns: "default", of: 2, index: 1, .cluster, exit: 0),
        ],
        "jlist-namespace.json": [
            Row("ns-a", id: 0, pid: 11708, .online, restarts: 0, ns: "shop", of: 1, index: 0, .fork, exit: nil),
            Row("ns-b", id: 1, pid: 11707, .online, restarts: 0, ns: "shop", of: 2, index: 0, .cluster, exit: nil),
            Row("ns-b", id: 2, pid: 11721, .online, restarts: 0, ns: "shop", of: 2, index: 1, .cluster, exit: nil),
        ],
        "jlist-after-crash-loop.json": [
            Row("crash-limited", id: 0, pid: 0, .errored, restarts: 2, ns: "default", of: 1, index: 0, .fork, exit: 1),
            Row("crash-noauto", id: 1, pid: 0, .stopped, restarts: 0, ns: "default", of: 1, index: 0, .fork, exit: 1),
        ],
        "jlist-after-crash-default.json": [
            Row("crash-default", id: 0, pid: 0, .errored, restarts: 15, ns: "default", of: 1, index: 0, .fork, exit: 1)
        ],
        "jlist-waiting-restart.json": [
            Row("crash-delay", id: 0, pid: 13381, .waitingRestart, restarts: 1, ns: "default", of: 1, index: 0, .fork, exit: 1)
        ],
        "jlist-syntax-error.json": [
            Row("syntax-error", id: 0, pid: 0, .errored, restarts: 15, ns: "default", of: 1, index: 0, .fork, exit: 1)
        ],
        "symlink-02-jlist.json": [
            Row("sym-fork", id: 0, pid: 14375, .online, restarts: 0, ns: "default", of: 1, index: 0, .fork, exit: nil),
            Row("sym-cluster", id: 1, pid: 14374, .online, restarts: 0, ns: "default", of: 2, index: 0, .cluster, exit: nil),
            Row("sym-cluster", id: 2, pid: 14383, .online, restarts: 0, ns: "default", of: 2, index: 1, .cluster, exit: nil),
        ],
        "symlink-05-jlist-after-reload.json": [
            Row("sym-fork", id: 0, pid: 14522, .online, restarts: 1, ns: "default", of: 1, index: 0, .fork, exit: 0),
            Row("sym-cluster", id: 1, pid: 14459, .online, restarts: 1, ns: "default", of: 2, index: 0, .cluster, exit: nil),
            Row("sym-cluster", id: 2, pid: 14471, .online, restarts: 1, ns: "default", of: 2, index: 1, .cluster, exit: nil),
        ],
        "symlink-10-jlist-broken.json": [
            Row("sym-fork", id: 0, pid: 0, .errored, restarts: 19, ns: "default", of: 1, index: 0, .fork, exit: 1),
            Row("sym-cluster", id: 1, pid: 0, .errored, restarts: 19, ns: "default", of: 2, index: 0, .cluster, exit: 0),
            Row("sym-cluster", id: 2, pid: 0, .errored, restarts: 19, ns: "default", of: 2, index: 1, .cluster, exit: 0),
        ],
        "jlist-env.json": [
            Row("web-envs", id: 0, pid: 16279, .online, restarts: 2, ns: "default", of: 1, index: 0, .fork, exit: 0)
        ],
    ]

    @Test("every copied capture whose command is `pm2 jlist` has its expected table here")
    func everyJlistCaptureIsCovered() throws {
        let names = try PM2Fixtures.captureNames(command: "pm2 jlist")
        #expect(names.count == 17)
        #expect(Set(names) == Set(Self.expected.keys))
    }

    @Test("reads the recorded table: status, restarts, pm_id, namespace, instances, pid", arguments: expected.keys.sorted())
    func readsRecordedTable(_ file: String) throws {
        let capture = try PM2Fixtures.capture(file)
        let table = try PM2ProcessTable(jlistOutput: Array(capture.stdout.utf8), nowMilliseconds: 1_900_000_000_000)
        let rows = (Self.expected[file] ?? []).sorted { $0.id < $1.id }
        try #require(table.processes.count == rows.count)
        for (process, row) in zip(table.processes, rows) {
            #expect(process.name == row.name)
            #expect(process.pmId == row.id)
            #expect(process.status == row.status)
            #expect(process.restarts == row.restarts)
            #expect(process.namespace == row.ns)
            #expect(process.instances == row.of)
            #expect(process.instanceIndex == row.index)
            #expect(process.execMode == row.mode)
            #expect(process.lastExitCode == row.exit)
            // PM2 keeps the dead pid while `waiting restart` and prints 0 when stopped or errored: only a running
            // instance reports a pid.
            let running: Set<ProcessStatus> = [.online, .launching, .stopping]
            #expect(process.pid == (running.contains(row.status) && row.pid > 0 ? row.pid : nil), "\(file) pm_id \(row.id)")
            #expect(process.interpreter == "node")
        }
    }

    @Test("pm_uptime is epoch milliseconds of the last start; uptime is counted from it, only while online")
    func uptimeFromEpochMilliseconds() throws {
        let capture = try PM2Fixtures.capture("symlink-02-jlist.json")
        // sym-fork's pm_uptime in that capture is 1795738439618.
        let table = try PM2ProcessTable(jlistOutput: Array(capture.stdout.utf8), nowMilliseconds: 1_795_738_439_618 + 12_999)
        let fork = try #require(table.processes.first { $0.name == "sym-fork" })
        #expect(fork.uptimeSeconds == 12)
        #expect(fork.memoryBytes > 0)
        let broken = try PM2ProcessTable(
            jlistOutput: Array(try PM2Fixtures.capture("symlink-10-jlist-broken.json").stdout.utf8),
            nowMilliseconds: 1_900_000_000_000
        )
        #expect(broken.processes.allSatisfy { $0.uptimeSeconds == nil && $0.pid == nil })
    }

    @Test("each instance's log files are PM2's pm_out_log_path and pm_err_log_path (one per instance in cluster mode)")
    func logPathsPerInstance() throws {
        let capture = try PM2Fixtures.capture("jlist-cluster-2.json")
        let table = try PM2ProcessTable(jlistOutput: Array(capture.stdout.utf8), nowMilliseconds: 0)
        #expect(table.processes.map(\.errLogPath) == (0...2).map { "$PM2_PEER/home/logs/web-\($0 == 0 ? "fork" : "cluster")-error-\($0).log" })
        #expect(table.processes.map(\.outLogPath) == (0...2).map { "$PM2_PEER/home/logs/web-\($0 == 0 ? "fork" : "cluster")-out-\($0).log" })
        // PM2 keeps no signal in its table (see PM2DaemonLog).
        #expect(table.processes.allSatisfy { $0.lastExitSignal == nil })
    }

    @Test("paths are kept as PM2 stored them: the current symlink is not resolved")
    func symlinkPathsUnresolved() throws {
        let capture = try PM2Fixtures.capture("symlink-05-jlist-after-reload.json")
        let table = try PM2ProcessTable(jlistOutput: Array(capture.stdout.utf8), nowMilliseconds: 0)
        #expect(table.processes.allSatisfy { $0.scriptPath == "$PM2_PEER/deploy/current/server.js" })
        #expect(table.processes.allSatisfy { $0.cwd == "$PM2_PEER/deploy/current" })
    }

    @Test("only Ferry's namespace is Ferry's: the shop apps of jlist-namespace belong to nobody else's table")
    func ownershipByNamespace() throws {
        let capture = try PM2Fixtures.capture("jlist-namespace.json")
        let table = try PM2ProcessTable(jlistOutput: Array(capture.stdout.utf8), nowMilliseconds: 0)
        #expect(table.owned(by: "ferry").isEmpty)
        #expect(table.owned(by: "shop").map(\.name) == ["ns-a", "ns-b", "ns-b"])
        #expect(table.foreignNamespaces(holding: "ns-b", besides: "ferry") == ["shop"])
        #expect(table.foreignNamespaces(holding: "ns-b", besides: "shop").isEmpty)
    }

    /// Output that must be read, or refused with the error that names the problem.
    enum Outcome {
        /// Read, with this many elements.
        case reads(Int)
        /// Refused; the reason contains this text.
        case refused(String)
    }

    static let odd: [(label: String, stdout: String, outcome: Outcome)] = [
        (
            "daemon lines without colour (NO_COLOR=1) before the JSON",
            "[PM2] Spawning PM2 daemon with pm2_home=/h\n[PM2] PM2 Successfully daemonized\n[]", .reads(0)
        ),
        ("a trailing newline after the JSON", "[]\n", .reads(0)),
        ("CRLF line ends", "[PM2] Spawning PM2 daemon\r\n[]\r\n", .reads(0)),
        (
            "a minimal element (older PM2: no namespace, no monit, no instances)",
            #"[{"name":"a","pm_id":3,"pm2_env":{"status":"online"}}]"#, .reads(1)
        ),
        // Node's JSON.stringify writes a string cut inside an emoji as a lone surrogate escape; any app's env or metrics
        // may hold one, and one of them made the whole table unreadable on every pass.
        (
            "a lone high surrogate in another app's env",
            #"[{"name":"other","pm_id":1,"pm2_env":{"status":"online","NOTE":"cut \ud83d","namespace":"shop"}},{"name":"a","pm_id":2,"pm2_env":{"status":"online"}}]"#,
            .reads(2)
        ),
        (
            "a lone low surrogate, and a high one before another escape",
            #"[{"name":"\udc00x","pm_id":1,"pm2_env":{"status":"online","A":"\ud800\u0041"}}]"#, .reads(1)
        ),
        ("empty output", "", .refused("no JSON array in the output")),
        ("daemon lines only", "[PM2] Spawning PM2 daemon with pm2_home=/h\n", .refused("malformed")),
        ("an object instead of the array", #"{"apps":[]}"#, .refused("no JSON array in the output")),
        ("truncated JSON", #"[{"name":"a","pm_id":0,"pm2_env":{"status":"onl"#, .refused("malformed")),
        ("an element that is not an object", "[1]", .refused("element 0 is not an object")),
        ("no pm2_env", #"[{"name":"a","pm_id":0}]"#, .refused("element 0 has no pm2_env object")),
        ("no name", #"[{"pm_id":0,"pm2_env":{"status":"online"}}]"#, .refused("element 0 has no name")),
        ("no pm_id", #"[{"name":"a","pm2_env":{"status":"online"}}]"#, .refused("element 0 (a) has no integer pm_id")),
        ("no status", #"[{"name":"a","pm_id":0,"pm2_env":{}}]"#, .refused("element 0 (a) has no pm2_env.status")),
        (
            "an unknown status", #"[{"name":"a","pm_id":0,"pm2_env":{"status":"sleeping"}}]"#,
            .refused(#"element 0 (a) has unknown pm2_env.status "sleeping""#)
        ),
        (
            "an unknown exec mode", #"[{"name":"a","pm_id":0,"pm2_env":{"status":"online","exec_mode":"thread_mode"}}]"#,
            .refused(#"element 0 (a) has unknown pm2_env.exec_mode "thread_mode""#)
        ),
    ]

    /// Numbers no PM2 writes, at the edges of what the reader takes (a corrupt daemon, a substitute `pm2`): read
    /// without trapping. The uptime (`now` is 1,800,000,000,000 ms) is `nil` when no clock gives that start.
    static let extremes: [(label: String, env: String, top: String, uptime: Int64?)] = [
        ("pm_uptime at Int64.min", #""pm_uptime":-9223372036854775808"#, "", nil),
        ("pm_uptime at Int64.min as a string", #""pm_uptime":"-9223372036854775808""#, "", nil),
        ("pm_uptime as a double at -2^63", #""pm_uptime":-9.2233720368547758e18"#, "", nil),
        ("pm_uptime one past the overflow", #""pm_uptime":-9223370236854775808"#, "", nil),
        ("pm_uptime at the edge of the overflow", #""pm_uptime":-9223370236854775807"#, "", 9_223_372_036_854_775),
        ("pm_uptime at Int64.max (a start in the future)", #""pm_uptime":9223372036854775807"#, "", 0),
        ("pm_uptime before the epoch", #""pm_uptime":-1000"#, "", 1_800_000_001),
        (
            "pid, pm_id, restarts, memory and cpu at their limits", #""pm_uptime":1799999988000,"restart_time":9223372036854775807"#,
            #","pid":9223372036854775807,"monit":{"memory":-9223372036854775808,"cpu":1.7976931348623157e308}"#, 12
        ),
    ]

    /// The release's own `listen_timeout` bounds a start or reload of its app: a whole number written with a fraction
    /// is that number (read as absent, a minute's listen got PM2's 3 s and the call was cut short as unresponsive).
    @Test(arguments: [
        (JSONValue.integer(8_000), Int64(8_000)), (.number(60_000.0), 60_000), (.number(1.5), 3_000), (.string("8000"), 3_000),
        (.number(1e300), 3_000),
    ])
    func anAppsListenTimeoutIsReadFromItsOptions(_ value: JSONValue, _ expected: Int64) {
        let app = AppSpec.pm2TestApp("api", script: "/srv/a.js", cwd: "/srv", pm2Options: ["listen_timeout": value])
        #expect(PM2AppTiming(app).listen == expected)
    }

    /// What bounds a delete or restart of an app the agent process did not start itself (after the agent's restart or
    /// upgrade): the timeouts PM2 holds for it, else PM2's defaults; numbers at the edges are held, not trapped on.
    @Test(arguments: [
        (#""kill_timeout":45000,"listen_timeout":8000"#, PM2AppTiming(kill: 45_000, listen: 8_000)),
        ("", PM2AppTiming.pm2Defaults),
        (#""kill_timeout":"x","listen_timeout":-9223372036854775808"#, PM2AppTiming(kill: 1_600, listen: .min)),
    ])
    func eachAppsTimeoutsAreReadFromTheTable(_ env: String, _ expected: PM2AppTiming) throws {
        let stdout =
            #"[{"name":"api","pm_id":0,"pm2_env":{"status":"online","namespace":"ferry""# + (env.isEmpty ? "" : ",") + env + "}}]"
        let table = try PM2ProcessTable(jlistOutput: Array(stdout.utf8), nowMilliseconds: 1_800_000_000_000)
        #expect(table.timings[.init(namespace: "ferry", name: "api")] == expected)
        let bound = PM2ProcessManager.timeout(
            instances: 1,
            killTimeoutMilliseconds: expected.kill,
            listenTimeoutMilliseconds: expected.listen,
            base: .seconds(60)
        )
        #expect(bound >= .seconds(65))
    }

    @Test("numbers at the edges of Int64 in jlist output are read without trapping", arguments: extremes.indices)
    func extremeNumbers(_ index: Int) throws {
        let (label, env, top, uptime) = Self.extremes[index]
        let stdout =
            #"[{"name":"a","pm_id":9223372036854775807,"pm2_env":{"status":"online","#
            + env + "}" + top + "}]"
        let table = try PM2ProcessTable(jlistOutput: Array(stdout.utf8), nowMilliseconds: 1_800_000_000_000)
        let process = try #require(table.processes.first, "\(label)")
        #expect(process.uptimeSeconds == uptime, "\(label)")
    }

    /// `waiting restart` as PM2 7.0.3 leaves it: a real wait before a scheduled restart (created_at set), or a give-up
    /// after too many unstable restarts that restart_delay disguises (created_at null, nothing scheduled).
    static let waiting: [(label: String, createdAt: String?, expected: ProcessStatus)] = [
        ("a scheduled restart: created_at is the first start", "1800000000000", .waitingRestart),
        ("PM2 gave up (restart overlimit) under restart_delay: created_at null", "null", .errored),
        ("no created_at at all (an older or partial table): taken as it says", nil, .waitingRestart),
    ]

    @Test("waiting restart after PM2 gave up restarting reads as errored", arguments: waiting.indices)
    func waitingRestart(_ index: Int) throws {
        let row = Self.waiting[index]
        let created = row.createdAt.map { #","created_at":\#($0)"# } ?? ""
        let stdout =
            #"[{"name":"a","pm_id":3,"pid":0,"pm2_env":{"status":"waiting restart","restart_time":2,"exit_code":1"#
            + created + "}}]"
        let table = try PM2ProcessTable(jlistOutput: Array(stdout.utf8), nowMilliseconds: 0)
        #expect(table.processes.map(\.status) == [row.expected], "\(row.label)")
    }

    @Test("odd or hostile jlist output is read or refused with a reason", arguments: odd.indices)
    func oddOutput(_ index: Int) throws {
        let (label, stdout, outcome) = Self.odd[index]
        switch outcome {
        case .reads(let count):
            let table = try PM2ProcessTable(jlistOutput: Array(stdout.utf8), nowMilliseconds: 0)
            #expect(table.processes.count == count, "\(label)")
        case .refused(let reason):
            do {
                _ = try PM2ProcessTable(jlistOutput: Array(stdout.utf8), nowMilliseconds: 0)
                Issue.record("\(label): was read")
            } catch {
                guard case .unreadableTable(let actual, _) = error else {
                    Issue.record("\(label): \(error)")
                    return
                }
                #expect(actual.localizedCaseInsensitiveContains(reason), "\(label): \(actual)")
            }
        }
    }

    @Test("without pm2_env.instances, an app's instances are the elements of its name in its namespace, in a big table too")
    func instancesAreCountedPerNamespaceAndName() throws {
        var elements: [String] = []
        var pmId = 0
        for (namespace, name, count) in [("ferry", "api", 3), ("shop", "api", 2), ("ferry", "worker", 1)] {
            for _ in 0..<count {
                elements.append(#"{"name":"\#(name)","pm_id":\#(pmId),"pm2_env":{"status":"online","namespace":"\#(namespace)"}}"#)
                pmId += 1
            }
        }
        // 20,000 more, none printing its count: each one's count was a pass over the whole table.
        for index in 0..<20_000 {
            elements.append(#"{"name":"app-\#(index % 5_000)","pm_id":\#(pmId),"pm2_env":{"status":"stopped","namespace":"other"}}"#)
            pmId += 1
        }
        let table = try PM2ProcessTable(jlistOutput: Array("[\(elements.joined(separator: ","))]".utf8), nowMilliseconds: 0)
        let counts = Dictionary(table.processes.prefix(6).map { ("\($0.namespace)/\($0.name)", $0.instances) }) { first, _ in first }
        #expect(counts == ["ferry/api": 3, "shop/api": 2, "ferry/worker": 1])
        #expect(table.processes.dropFirst(6).allSatisfy { $0.instances == 4 })
    }
}

/// Exits read from a daemon's log are kept by instance, restart count and status, for that daemon only: a new daemon
/// hands out the same pm_ids and restart counts again, and its job that ended cleanly must not read as the old one's
/// OOM kill.
@Suite struct PM2ExplainedExitsTests {
    @Test func anExitReadUnderOneDaemonIsForgottenUnderTheNext() throws {
        try TestPaths.withTemporaryDirectorySync("ferry-exits") { dir in
            // Two socket files as two daemons bind them (two inodes).
            let first = dir.appendingPathComponent("rpc-1.sock").path
            let second = dir.appendingPathComponent("rpc-2.sock").path
            for path in [first, second] { try Data().write(to: URL(fileURLWithPath: path)) }
            let daemonA = try #require(PM2ProcessManager.SocketFile(path: first))
            let daemonB = try #require(PM2ProcessManager.SocketFile(path: second))
            var job = RestartWatchTests.process("nightly", pmId: 0, restarts: 0)
            job.status = .stopped
            let exits = PM2ProcessManager.ExplainedExits()
            exits.follow(daemon: daemonA)
            exits.record(PM2DaemonLog.Exit(code: nil, signal: "SIGKILL"), of: job)
            exits.follow(daemon: daemonA)
            #expect(exits.exit(of: job) == PM2DaemonLog.Exit(code: nil, signal: "SIGKILL"), "the same daemon: kept")
            exits.follow(daemon: nil)
            #expect(exits.exit(of: job) != nil, "no socket to look at (a daemon starting): kept")
            exits.follow(daemon: daemonB)
            #expect(exits.exit(of: job) == nil, "another daemon: its pm_id 0 with 0 restarts is another run")
        }
    }
}
