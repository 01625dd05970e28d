import Foundation
import Shared
import Synchronization
import TestSupport
import Testing

@testable import Agent

@Suite("PM2ProcessManager touches only Ferry's namespace and reports pm2's failures")
struct PM2ProcessManagerTests {
    /// The table of `jlist-namespace`: ns-a (fork, pm_id 0) and ns-b (cluster, pm_id 1 and 2), namespace `shop`.
    static let shopTable = "jlist-namespace.json"

    static func app(_ name: String) -> AppSpec {
        .pm2TestApp(name, script: "/srv/ferry/services/svc/current/server.js", cwd: "/srv/ferry/services/svc/current")
    }

    /// Operations that would reach apps of the `shop` namespace, and what the manager answers instead. Nothing but
    /// `jlist` may reach pm2 in any of them.
    static let refused: [(label: String, act: @Sendable (PM2ProcessManager, String) async throws -> Void, error: PM2Error?)] = [
        (
            "start an app whose name another namespace uses", { try await $0.start(app("ns-a"), ecosystem: $1) },
            .foreignNameClash(app: "ns-a", namespaces: ["shop"], ferryNamespace: "ferry")
        ),
        (
            "reload an app whose name another namespace uses", { try await $0.reload(app("ns-b"), ecosystem: $1) },
            .foreignNameClash(app: "ns-b", namespaces: ["shop"], ferryNamespace: "ferry")
        ),
        (
            "delete an app whose name another namespace uses", { manager, _ in try await manager.delete(appNamed: "ns-b") },
            .foreignNameClash(app: "ns-b", namespaces: ["shop"], ferryNamespace: "ferry")
        ),
        (
            "restart an app whose name another namespace uses", { manager, _ in try await manager.restart(appNamed: "ns-a") },
            .foreignNameClash(app: "ns-a", namespaces: ["shop"], ferryNamespace: "ferry")
        ),
        // `pm2 delete shop` would delete the whole namespace (delete-namespace): an absent app is simply gone.
        (
            "delete a name Ferry does not have (it is a namespace to PM2)", { manager, _ in try await manager.delete(appNamed: "shop") },
            nil
        ),
        (
            "restart a name Ferry does not have", { manager, _ in try await manager.restart(appNamed: "shop") },
            .appNotFound(app: "shop", namespace: "ferry")
        ),
        // `pm2 delete all` deletes every app: Ferry has none called that, so nothing is sent.
        ("delete `all`", { manager, _ in try await manager.delete(appNamed: "all") }, nil),
        (
            "start from a relative ecosystem path", { manager, _ in try await manager.start(app("api"), ecosystem: "eco.json") },
            .ecosystemNotAbsolute("eco.json")
        ),
        // PM2 runs a script whose path holds a space through `bash -c`, which cuts it at the space.
        (
            "start an app whose script path holds a space",
            { try await $0.start(.pm2TestApp("api", script: "/srv/my ferry/current/server.js", cwd: "/srv/my ferry/current"), ecosystem: $1) },
            .scriptPathWithSpace(app: "api", script: "/srv/my ferry/current/server.js")
        ),
        // The app's PM2_HOME replaces the daemon's in its environment: a process of it left behind is not found by it.
        (
            "start an app whose env sets PM2_HOME",
            {
                try await $0.start(
                    .pm2TestApp("api", script: "/srv/ferry/current/server.js", cwd: "/srv/ferry/current", env: ["PM2_HOME": "/tmp/x"]),
                    ecosystem: $1
                )
            },
            .envReplacesProcessFields(app: "api", keys: ["PM2_HOME"])
        ),
    ]

    @Test("apps outside Ferry's namespace are never touched", arguments: refused.indices)
    func foreignAppsUntouched(_ index: Int) async throws {
        let (label, act, expected) = Self.refused[index]
        let standIn = try PM2StandIn()
        defer { standIn.cleanUp() }
        try standIn.setTable(fromCapture: Self.shopTable)
        let manager = try standIn.manager()
        #expect(try await manager.processes().isEmpty, "the shop apps are not Ferry's")
        do {
            try await act(manager, standIn.ecosystem)
            #expect(expected == nil, "\(label) went through")
        } catch let error as PM2Error {
            #expect(error == expected, "\(label)")
        }
        #expect(try standIn.invocations().allSatisfy { $0.argv == ["jlist"] }, "\(label) reached pm2")
    }

    /// An app whose name PM2 turns into the log file name of an app of another namespace (`ns_a` and shop's fork-mode
    /// `ns-a`: both `ns-a-out.log`) is refused before pm2 is asked: the agent would rotate that app's log and quote its
    /// lines in a failure's diagnosis. A cluster app's per-instance files (`ns-b-out-1.log`) are not the merged one.
    @Test func anAppWritingAnotherNamespacesLogFilesIsRefused() async throws {
        let standIn = try PM2StandIn()
        defer { standIn.cleanUp() }
        // The capture's PM2_HOME is this stand-in's: its shop apps write their logs where the agent's apps would.
        try standIn.setTable(raw: try PM2Fixtures.capture(Self.shopTable).stdout.replacing("$PM2_PEER/home", with: standIn.pm2Home))
        let manager = try standIn.manager()
        var refusal: PM2Error?
        do throws(PM2Error) {
            try await manager.start(Self.app("ns_a"), ecosystem: standIn.ecosystem)
        } catch {
            refusal = error
        }
        let file = "\(standIn.pm2Home)/logs/ns-a-out.log"
        #expect(refusal == PM2Error.foreignLogClash(app: "ns_a", other: "ns-a", namespace: "shop", file: file), "\(String(describing: refusal))")
        #expect(try standIn.invocations().allSatisfy { $0.argv == ["jlist"] }, "nothing but jlist reached pm2")
    }

    /// An exit read from PM2's daemon log is kept for that instance and restart: once its line has left the log's tail
    /// (other apps' exits, a rotated log), a job the OOM killer ended still reads as ended by SIGKILL, not as a clean
    /// exit (its service flipped back to healthy); and the log is not read again for it at every pass.
    @Test func anExitReadFromTheDaemonLogIsKept() async throws {
        let standIn = try PM2StandIn()
        defer { standIn.cleanUp() }
        let manager = try standIn.manager()
        let log = URL(fileURLWithPath: standIn.pm2Home + "/pm2.log")
        let job = ProcessTableCheckTests.process("job", 3, .stopped, exit: 0)
        try Data("2026-12-07T08:29:18: PM2 log: App [job:3] exited with code [0] via signal [SIGKILL]\n".utf8).write(to: log)
        #expect(await manager.explainingExits([job]).map(\.lastExitSignal) == ["SIGKILL"])
        try Data("2026-12-07T09:00:00: PM2 log: App [other:4] exited with code [1] via signal [SIGINT]\n".utf8).write(to: log)
        let later = await manager.explainingExits([job])
        #expect(later.map(\.lastExitSignal) == ["SIGKILL"] && later.map(\.lastExitCode) == [nil], "\(later)")
        // Started again (a restart counted): another exit, read from the log as it is now.
        let again = ProcessTableCheckTests.process("job", 3, .stopped, restarts: 1, exit: 0)
        #expect(await manager.explainingExits([again]).map(\.lastExitSignal) == [nil])
    }

    @Test("a failing pm2 command keeps its argv, exit status and stderr, without colour codes")
    func commandFailure() async throws {
        let standIn = try PM2StandIn()
        defer { standIn.cleanUp() }
        try standIn.setTable(fromCapture: Self.shopTable)
        try standIn.queue([.init(["restart", "ns-a"], "restart-unknown.json")])
        let manager = try standIn.manager(namespace: "shop")
        await #expect(
            throws: PM2Error.commandFailed(
                command: manager.command(for: .restart(app: "ns-a")).description,
                status: "exit status 1",
                stderr: "[PM2][ERROR] Process or Namespace no-such-app not found",
                stdout: "Use --update-env to update environment variables"
            )
        ) {
            try await manager.restart(appNamed: "ns-a")
        }
    }

    @Test("a start whose script is missing fails with pm2's message (start-bad-script)")
    func startFailure() async throws {
        let standIn = try PM2StandIn()
        defer { standIn.cleanUp() }
        try standIn.setTable(raw: "[]")
        try standIn.queue([.init(["start", standIn.ecosystem, "--only", "api"], "start-bad-script.json")])
        let manager = try standIn.manager()
        do {
            try await manager.start(Self.app("api"), ecosystem: standIn.ecosystem)
            Issue.record("start succeeded")
        } catch {
            #expect("\(error)".contains("[PM2][ERROR] Error: Script not found: $PM2_PEER/apps/does-not-exist.js"))
            #expect("\(error)".contains("exit status 1"))
        }
    }

    @Test("against real PM2 (FERRY_TEST_PM2): start, reload, check, delete in a private PM2_HOME")
    func realPM2RoundTrip() async throws {
        let pm2 = try #require(try Backend.pm2.pm2Binary())
        let root = try TestPaths.makeTemporaryDirectory("ferry-real-pm2")
        defer { try? FileManager.default.removeItem(at: root) }
        let release = root.appendingPathComponent("releases/1")
        try FileManager.default.createDirectory(at: release, withIntermediateDirectories: true)
        let current = root.appendingPathComponent("current").path
        try FileManager.default.createSymbolicLink(atPath: current, withDestinationPath: release.path)
        try Data("require('http').createServer((q, s) => s.end('ok')).listen(0, '127.0.0.1');\n".utf8)
            .write(to: release.appendingPathComponent("server.js"))
        let app = AppSpec.pm2TestApp("ferry-e2e", script: current + "/server.js", cwd: current, mode: .cluster, instances: 2)
        let ecosystem = root.appendingPathComponent("ecosystem.json").path
        try Data(EcosystemWriter.render(apps: [app], namespace: "ferry-test")).write(to: URL(fileURLWithPath: ecosystem))
        let manager = try PM2ProcessManager(
            configuration: .init(executable: pm2, pm2Home: root.appendingPathComponent("pm2home").path, namespace: "ferry-test"),
            logger: .init(label: "test.pm2")
        )
        do {
            try await Self.roundTrip(manager, app, ecosystem: ecosystem, current: current)
        } catch {
            await Self.killDaemon(manager)
            throw error
        }
        await Self.killDaemon(manager)
    }

    @Test("against real PM2: a name --only cannot select (spaces, commas) starts, reloads and deletes from a file of its own")
    func realPM2NameWithSpaces() async throws {
        let pm2 = try #require(try Backend.pm2.pm2Binary())
        let root = try TestPaths.makeTemporaryDirectory("ferry-real-pm2-names")
        defer { try? FileManager.default.removeItem(at: root) }
        try Data("setInterval(() => {}, 1000);\n".utf8).write(to: root.appendingPathComponent("idle.js"))
        let spaced = AppSpec.pm2TestApp("my api, v2", script: root.path + "/idle.js", cwd: root.path)
        // A plain neighbour in the same service file: --only must not start it along.
        let neighbour = AppSpec.pm2TestApp("neighbour", script: root.path + "/idle.js", cwd: root.path)
        let ecosystem = root.appendingPathComponent("ecosystem.json").path
        try Data(EcosystemWriter.render(apps: [spaced, neighbour], namespace: "ferry-test")).write(to: URL(fileURLWithPath: ecosystem))
        let manager = try PM2ProcessManager(
            configuration: .init(executable: pm2, pm2Home: root.appendingPathComponent("pm2home").path, namespace: "ferry-test"),
            logger: .init(label: "test.pm2")
        )
        do {
            try await manager.start(spaced, ecosystem: ecosystem)
            let own = root.appendingPathComponent("apps/\(PM2App.fileSafeName("my api, v2")).json").path
            #expect(manager.command(for: .start(app: spaced.name, ecosystem: own)).arguments == ["start", own])
            var table = try await Self.settle(manager, spaced)
            #expect(table.map(\.name) == ["my api, v2"], "only the app asked for, under its full name")
            // The file holds the app's env (instance secrets too): it lives for the call only.
            #expect(!FileManager.default.fileExists(atPath: own), "the app's file is removed once pm2 has read it")
            try await manager.reload(spaced, ecosystem: ecosystem)
            table = try await Self.settle(manager, spaced)
            #expect(table.count == 1 && table[0].restarts >= 1)
            #expect(!FileManager.default.fileExists(atPath: own), "and again after a reload")
            #expect(FileManager.default.fileExists(atPath: ecosystem), "the service's own file stays")
            try await manager.delete(appNamed: spaced.name)
            #expect(try await manager.processes().isEmpty)
        } catch {
            await Self.killDaemon(manager)
            throw error
        }
        await Self.killDaemon(manager)
    }

    /// Processes in Ferry's namespace whose names PM2 reads as something else (started there by hand, or by an app
    /// that shares the agent's user): `/.*/` is a regular expression over every namespace, `feed.json` a config file
    /// to load, `all` every app. A restart and a delete of each (an orphan's delete, an errored app's restart) must act
    /// on that app alone: `pm2 delete /.*/` deleted the other namespace's app too, and `feed.json` could never go.
    @Test("against real PM2: apps named like a regex, a config file or `all` are restarted and deleted by pm_id, alone")
    func realPM2NamesPM2ReadsOtherwise() async throws {
        let pm2 = try #require(try Backend.pm2.pm2Binary())
        let root = try TestPaths.makeTemporaryDirectory("ferry-real-pm2-odd")
        defer { try? FileManager.default.removeItem(at: root) }
        try Data("setInterval(() => {}, 1000);\n".utf8).write(to: root.appendingPathComponent("idle.js"))
        let manager = try PM2ProcessManager(
            configuration: .init(executable: pm2, pm2Home: root.appendingPathComponent("pm2home").path, namespace: "ferry-test"),
            logger: .init(label: "test.pm2")
        )
        func pm2Start(_ name: String, namespace: String) async throws {
            let started = try await Command.run(
                pm2,
                ["start", root.path + "/idle.js", "--name", name, "--namespace", namespace],
                environment: manager.invocation.environment,
                currentDirectory: root
            )
            #expect(started.status == 0, "pm2 start \(name): \(started.stderr)")
        }
        do {
            try await pm2Start("victim", namespace: "shop")
            let odd = ["/.*/", "feed.json", "all"]
            for name in odd { try await pm2Start(name, namespace: "ferry-test") }
            #expect(Set(try await manager.processes().map(\.name)) == Set(odd))
            var restarted: Set<String> = []
            for name in odd {
                #expect(!PM2Command.Operation.canName(name))
                try await manager.restart(appNamed: name)
                restarted.insert(name)
                let counts = try await manager.table().processes.map { ($0.name, $0.restarts) }
                #expect(counts.allSatisfy { $0.1 == (restarted.contains($0.0) ? 1 : 0) }, "after restarting \(name): \(counts)")
            }
            for name in odd { try await manager.delete(appNamed: name) }
            let left = try await manager.table().processes
            #expect(left.map(\.name) == ["victim"] && left.allSatisfy { $0.namespace == "shop" && $0.status == .online }, "\(left)")
        } catch {
            await Self.killDaemon(manager)
            throw error
        }
        await Self.killDaemon(manager)
    }

    /// PM2 copies an app's env over its process entry (`God.executeApp`): `name=renamed` in the env renamed the app in
    /// PM2's table (Ferry then saw its app gone, and started it again at every pass), `namespace` moved it out of
    /// Ferry's. Such an env (from an instance env file, or a release signed before publish refused it) is refused
    /// before anything reaches pm2: a start starts nothing, a reload or a replace leaves the running app as it was.
    @Test("against real PM2: an env naming a field of PM2's process entry is refused before pm2 sees it")
    func realPM2EnvNamingProcessFields() async throws {
        let pm2 = try #require(try Backend.pm2.pm2Binary())
        let root = try TestPaths.makeTemporaryDirectory("ferry-real-pm2-envfields")
        defer { try? FileManager.default.removeItem(at: root) }
        try Data("setInterval(() => {}, 1000);\n".utf8).write(to: root.appendingPathComponent("idle.js"))
        let plain = AppSpec.pm2TestApp("envfields", script: root.path + "/idle.js", cwd: root.path, env: ["MARK": "one"])
        let hostile = AppSpec.pm2TestApp(
            "envfields",
            script: root.path + "/idle.js",
            cwd: root.path,
            env: ["MARK": "two", "name": "renamed", "namespace": "default"]
        )
        let newcomer = AppSpec.pm2TestApp("newcomer", script: root.path + "/idle.js", cwd: root.path, env: ["cwd": "/"])
        let ecosystem = root.appendingPathComponent("ecosystem.json").path
        try Data(EcosystemWriter.render(apps: [plain], namespace: "ferry-test")).write(to: URL(fileURLWithPath: ecosystem))
        let manager = try PM2ProcessManager(
            configuration: .init(executable: pm2, pm2Home: root.appendingPathComponent("pm2home").path, namespace: "ferry-test"),
            logger: .init(label: "test.pm2")
        )
        do {
            try await manager.start(plain, ecosystem: ecosystem)
            let before = try await Self.settle(manager, plain)
            #expect(before.map(\.name) == ["envfields"] && before.allSatisfy { $0.status == .online })
            try Data(EcosystemWriter.render(apps: [hostile, newcomer], namespace: "ferry-test")).write(to: URL(fileURLWithPath: ecosystem))
            let attempts: [(String, @Sendable () async throws -> Void, PM2Error)] = [
                (
                    "reload", { try await manager.reload(hostile, ecosystem: ecosystem) },
                    .envReplacesProcessFields(app: "envfields", keys: ["name", "namespace"])
                ),
                (
                    "replace",
                    {
                        try await AppAction.replace(reason: "the test").carryOut(
                            on: manager,
                            appNamed: "envfields",
                            desired: hostile,
                            ecosystem: ecosystem
                        )
                    },
                    .envReplacesProcessFields(app: "envfields", keys: ["name", "namespace"])
                ),
                ("start", { try await manager.start(newcomer, ecosystem: ecosystem) }, .envReplacesProcessFields(app: "newcomer", keys: ["cwd"])),
            ]
            for (label, attempt, expected) in attempts {
                do {
                    try await attempt()
                    Issue.record("\(label) was carried out")
                } catch let error as PM2Error {
                    #expect(error == expected, "\(label)")
                    #expect("\(error)".contains("rename the variable(s)"), "\(label): \(error)")
                }
            }
            // PM2 never heard of it: the same process, under its name, in Ferry's namespace; nothing else started.
            let after = try await manager.processes()
            #expect(after.map(\.name) == ["envfields"], "\(after.map(\.name))")
            #expect(after.map(\.pid) == before.map(\.pid) && after.allSatisfy { $0.restarts == 0 && $0.status == .online })
        } catch {
            await Self.killDaemon(manager)
            throw error
        }
        await Self.killDaemon(manager)
    }

    /// `PM2_HOME` in an app's env is refused when it names another daemon's home; an instance env file that names the
    /// agent's own (written before the variable was refused) moves nothing and still runs after an upgrade.
    @Test(arguments: [("/var/lib/ferry/.pm2", false), ("/tmp/x", true), ("", true)])
    func pm2HomeInTheEnvIsRefusedUnlessItIsTheDaemonsOwn(_ value: String, _ refused: Bool) {
        let app = AppSpec.pm2TestApp("api", script: "/srv/a.js", cwd: "/srv", env: ["PM2_HOME": value])
        #expect((PM2ProcessManager.refusal(app, home: "/var/lib/ferry/.pm2") != nil) == refused, "\(value)")
    }

    /// A release signed before publish refused them: `instance_var` or `increment_var` naming a field that moves the
    /// app (PM2 sets it on its process entry) is refused before pm2 is asked; an env variable is not.
    @Test(arguments: [
        ("instance_var", "namespace", true), ("increment_var", "pm_id", true), ("instance_var", "name", true),
        ("instance_var", "NODE_APP_INSTANCE", false), ("increment_var", "PORT", false), ("instance_var", "INSTANCE_ID", false),
    ])
    func aVariableOptionNamingAProcessFieldIsRefused(_ option: String, _ variable: String, _ refused: Bool) {
        var app = AppSpec.pm2TestApp("api", script: "/srv/a.js", cwd: "/srv")
        app.pm2Options[option] = .string(variable)
        let refusal = PM2ProcessManager.envRefusal(app)
        #expect((refusal != nil) == refused, "\(option) \(variable)")
        if refused {
            #expect(refusal == .injectedVariableNamesProcessField(app: "api", option: option, variable: variable))
        }
    }

    /// A graceful app: PM2 waits for each old instance to exit (up to its `kill_timeout`) before the next, so a reload of
    /// two instances that drain for 4 s takes about 8 s. Bounded by the configured pm2 timeout alone (here 3 s, as 60 s
    /// was for a 45 s drain), the pm2 CLI was killed mid-reload and the release failed; each call is now bounded from
    /// the app's own timeouts.
    @Test("against real PM2: a reload of instances that drain longer than the pm2 timeout completes", .timeLimit(.minutes(3)))
    func realPM2ReloadOfADrainingAppOutlastsThePM2Timeout() async throws {
        let pm2 = try #require(try Backend.pm2.pm2Binary())
        let root = try TestPaths.makeTemporaryDirectory("ferry-real-pm2-drain")
        defer { try? FileManager.default.removeItem(at: root) }
        let script = "process.on('SIGINT', () => setTimeout(() => process.exit(0), 4000));\nsetInterval(() => {}, 1000);\n"
        try Data(script.utf8).write(to: root.appendingPathComponent("drain.js"))
        var app = AppSpec.pm2TestApp(
            "drain",
            script: root.path + "/drain.js",
            cwd: root.path,
            instances: 2,
            env: ["MARK": "one"],
            pm2Options: ["listen_timeout": .integer(500)]
        )
        app.killTimeoutMilliseconds = 8_000
        let ecosystem = root.appendingPathComponent("ecosystem.json").path
        let manager = try PM2ProcessManager(
            configuration: .init(
                executable: pm2,
                pm2Home: root.appendingPathComponent("pm2home").path,
                namespace: "ferry-test",
                commandTimeout: .seconds(3)
            ),
            logger: .init(label: "test.pm2")
        )
        do {
            try Data(EcosystemWriter.render(apps: [app], namespace: "ferry-test")).write(to: URL(fileURLWithPath: ecosystem))
            try await manager.start(app, ecosystem: ecosystem)
            let before = try await Self.settle(manager, app)
            #expect(before.count == 2 && before.allSatisfy { $0.status == .online })
            app.env["MARK"] = "two"
            try Data(EcosystemWriter.render(apps: [app], namespace: "ferry-test")).write(to: URL(fileURLWithPath: ecosystem))
            let started = ContinuousClock.now
            try await manager.reload(app, ecosystem: ecosystem)
            let took = ContinuousClock.now - started
            #expect(took > .seconds(3), "the reload waited for both drains (\(took)): the test shows what it should")
            let after = try await Self.settle(manager, app)
            #expect(after.count == 2 && after.allSatisfy { $0.status == .online })
            #expect(Set(after.compactMap(\.pid)).isDisjoint(with: Set(before.compactMap(\.pid))), "both instances were replaced")
        } catch {
            await Self.killDaemon(manager)
            throw error
        }
        await Self.killDaemon(manager)
    }

    /// Instances, kill_timeout, listen_timeout (ms) → seconds past the base.
    static let bounds: [(Int, Int64, Int64, Double)] = [
        (1, 1_600, 3_000, 9.6), (3, 45_000, 3_000, 159), (0, 1_600, 3_000, 0), (2, .max, .max, 2 * (7_200 + 5)),
        (.max, -1, -1, Double(1_025 * 5)),
    ]

    @Test(arguments: bounds)
    func aCallIsBoundedByItsAppsTimeouts(_ instances: Int, _ kill: Int64, _ listen: Int64, _ extra: Double) {
        let bound = PM2ProcessManager.timeout(
            instances: instances,
            killTimeoutMilliseconds: kill,
            listenTimeoutMilliseconds: listen,
            base: .seconds(60)
        )
        #expect(bound == .seconds(60) + .milliseconds(Int64(extra * 1000)))
    }

    @Test("against real PM2: calls that overlap while no daemon runs start exactly one daemon")
    func realPM2OneDaemon() async throws {
        let pm2 = try #require(try Backend.pm2.pm2Binary())
        let root = try TestPaths.makeTemporaryDirectory("ferry-real-pm2-one-daemon")
        defer { try? FileManager.default.removeItem(at: root) }
        let home = root.appendingPathComponent("pm2home").path
        // Two managers for the same home, as the agent's pass and a report hold: the gate is per home, not per value.
        let managers = try (0..<2).map { _ in
            try PM2ProcessManager(
                configuration: .init(executable: pm2, pm2Home: home, namespace: "ferry-test"),
                logger: .init(label: "test.pm2")
            )
        }
        defer {
            // Whatever the outcome, no daemon of this home outlives the test (a second one `pm2 kill` cannot reach).
            for pid in DaemonDeathTests.pm2Daemons(home: home) { kill(pid, SIGKILL) }
        }
        let tables = try await withThrowingTaskGroup(of: [ManagedProcess].self) { group in
            for index in 0..<6 { group.addTask { try await managers[index % 2].processes() } }
            return try await group.reduce(into: [[ManagedProcess]]()) { $0.append($1) }
        }
        #expect(tables.count == 6 && tables.allSatisfy(\.isEmpty))
        let daemons = DaemonDeathTests.pm2Daemons(home: home)
        await Self.killDaemon(managers[0])
        #expect(daemons.count == 1, "God Daemons of \(home): \(daemons.sorted())")
    }

    @Test(
        "against real PM2: a second God Daemon for the home, holding neither socket, is stopped by the first table read once the count is due, and reported once"
    )
    func realPM2StrayDaemonStopped() async throws {
        let pm2 = try #require(try Backend.pm2.pm2Binary())
        let root = try TestPaths.makeTemporaryDirectory("ferry-real-pm2-stray")
        defer { try? FileManager.default.removeItem(at: root) }
        let home = root.appendingPathComponent("pm2home").path
        defer { for pid in DaemonDeathTests.pm2Daemons(home: home) { kill(pid, SIGKILL) } }
        try Data("setInterval(() => {}, 1000);\n".utf8).write(to: root.appendingPathComponent("idle.js"))
        let app = AppSpec.pm2TestApp("idle", script: root.path + "/idle.js", cwd: root.path)
        let ecosystem = root.appendingPathComponent("ecosystem.json").path
        try Data(EcosystemWriter.render(apps: [app], namespace: "ferry-test")).write(to: URL(fileURLWithPath: ecosystem))
        // The manager's monotonic clock, which the test moves on to make the next count of daemons due.
        let clockOffset = Mutex<Duration>(.zero)
        let manager = try PM2ProcessManager(
            // An interval no loaded machine outlasts between the count in `settle` and the read "within" it below (a
            // spawn of up to 10 s and up to 20 s for the second daemon to boot came close to 30 s).
            configuration: .init(executable: pm2, pm2Home: home, namespace: "ferry-test", strayCheckInterval: .seconds(600)),
            logger: .init(label: "test.pm2"),
            monotonicNow: { ContinuousClock.now + clockOffset.withLock { $0 } }
        )
        try await manager.start(app, ecosystem: ecosystem)
        let before = try await Self.settle(manager, app)
        let appPid = try #require(before.first?.pid)
        let daemon = try #require(DaemonDeathTests.pm2Daemons(home: home).first)
        #expect(PM2Daemons.look(home: home) == PM2Daemons(running: [daemon], rpcOwner: daemon, pubOwner: daemon))

        // A second daemon as an overlapping `pm2` call spawns it: PM2's own Daemon.js, detached, same PM2_HOME.
        let daemonScript = URL(fileURLWithPath: pm2).resolvingSymlinksInPath().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("lib/Daemon.js").path
        let spawn = try await CommandRunner.run(
            .init(
                executable: "/bin/sh",
                arguments: ["-c", "exec setsid -f node \"$0\" </dev/null >/dev/null 2>&1", daemonScript],
                environment: manager.invocation.environment.merging(["SILENT": "true"]) { $1 },
                workingDirectory: "/",
                timeout: .seconds(10)
            )
        )
        #expect(spawn.termination.isSuccess)
        // The first daemon keeps both sockets whatever the second one tries: it is a stray from its first instant.
        let stray = try await eventually("the second daemon running", timeout: .seconds(20)) { () -> Int32? in
            guard let stray = DaemonDeathTests.pm2Daemons(home: home).subtracting([daemon]).first else { return nil }
            return PM2Daemons.look(home: home).verdict == .strays([stray], keep: daemon) ? stray : nil
        }
        #expect(manager.takeNotices().isEmpty, "nothing stopped before the next table read")

        // Read from the daemon's socket within the interval of the last count: the daemons are not counted again.
        let within = try await manager.processes()
        #expect(within.compactMap(\.pid) == [appPid])
        #expect(DaemonDeathTests.isRunning(stray), "the stray outlives a read within the interval")
        #expect(manager.takeNotices().isEmpty)

        clockOffset.withLock { $0 = .seconds(601) }
        let after = try await manager.processes()
        #expect(after.compactMap(\.pid) == [appPid], "the daemon that answers and its app are untouched")
        // SIGKILL takes effect asynchronously: a daemon with many threads can take a moment to finish exiting (a loaded
        // machine showed both daemons right after the jlist), so the daemons are counted once the stray is gone.
        _ = try await eventually("the stray daemon gone after its SIGKILL", timeout: .seconds(5)) { () -> Bool? in
            DaemonDeathTests.isRunning(stray) ? nil : true
        }
        #expect(DaemonDeathTests.pm2Daemons(home: home) == [daemon])
        let notices = manager.takeNotices()
        #expect(notices.count == 1 && notices.first?.contains("a second PM2 daemon (pid \(stray))") == true, "\(notices)")
        #expect(manager.takeNotices().isEmpty, "reported once")
        await Self.killDaemon(manager)
    }

    @Test(
        "the God Daemons are counted after a socket read when none was counted yet or the interval has gone by",
        arguments: [
            (nil, .zero, true),
            (Duration.zero, .zero, false),
            (Duration.zero, .milliseconds(29_999), false),
            (Duration.zero, .seconds(30), true),
            (Duration.zero, .seconds(3600), true),
        ] as [(Duration?, Duration, Bool)]
    )
    func strayCountDue(lastAfter: Duration?, nowAfter: Duration, due: Bool) {
        let start = ContinuousClock.now
        let count = PM2ProcessManager.StrayCount()
        if let lastAfter { count.record(start + lastAfter) }
        #expect(count.isDue(now: start + nowAfter, interval: .seconds(30)) == due)
    }

    @Test(
        "which God Daemons go: none while one runs or a daemon is between its binds; the strays of the socket holder; all when the sockets split",
        arguments: [
            (PM2Daemons(running: [], rpcOwner: nil, pubOwner: nil), PM2Daemons.Verdict.fine),
            (PM2Daemons(running: [10], rpcOwner: 10, pubOwner: 10), .fine),
            (PM2Daemons(running: [10], rpcOwner: nil, pubOwner: nil), .fine),
            (PM2Daemons(running: [10, 20], rpcOwner: 10, pubOwner: 10), .strays([20], keep: 10)),
            (PM2Daemons(running: [10, 20, 30], rpcOwner: 20, pubOwner: 20), .strays([10, 30], keep: 20)),
            (PM2Daemons(running: [10, 20], rpcOwner: 10, pubOwner: nil), .fine),
            (PM2Daemons(running: [10, 20], rpcOwner: nil, pubOwner: 20), .fine),
            (PM2Daemons(running: [10, 20], rpcOwner: 10, pubOwner: 20), .split([10, 20])),
            // A listener that is not a God Daemon of this home (another user's, or gone): nothing is judged.
            (PM2Daemons(running: [10, 20], rpcOwner: 99, pubOwner: 99), .fine),
        ]
    )
    func strayDaemonVerdict(daemons: PM2Daemons, expected: PM2Daemons.Verdict) {
        #expect(daemons.verdict == expected)
    }

    static func roundTrip(_ manager: PM2ProcessManager, _ app: AppSpec, ecosystem: String, current: String) async throws {
        #expect(AppAction.decide(desired: app, observed: try await manager.processes(), needsRefresh: true) == .start)
        _ = try await AppAction.start.perform(on: manager, appNamed: app.name, desired: app, ecosystem: ecosystem)
        var table = try await Self.settle(manager, app)
        #expect(ProcessTableCheck(evaluating: table, against: [app]) == .allOnline)
        #expect(table.allSatisfy { $0.scriptPath == current + "/server.js" && $0.interpreter == "node" && $0.execMode == .cluster })
        #expect(AppAction.decide(desired: app, observed: table, needsRefresh: true) == .reload)
        _ = try await AppAction.reload.perform(on: manager, appNamed: app.name, desired: app, ecosystem: ecosystem)
        table = try await Self.settle(manager, app)
        #expect(table.allSatisfy { $0.restarts >= 1 })
        try await manager.save()
        _ = try await AppAction.delete.perform(on: manager, appNamed: app.name, desired: nil, ecosystem: ecosystem)
        #expect(try await manager.processes().isEmpty)
    }

    /// Stops the private daemon the real-pm2 test spawned (`pm2 kill` with that test's PM2_HOME only).
    /// Apps that end on their own under real PM2, each with how PM2 leaves it and how the health gate must read it.
    /// PM2 (`God.handleExit`) restarts neither an `autorestart: false` app nor one that exits with a code of its
    /// `stop_exit_codes`; with `restart_delay` set it shows them `waiting restart` (pid 0) for ever instead of `stopped`.
    /// `end`: the code the app exits with, or the signal it sends itself. A signal's exit shows code 0 in the table (PM2
    /// records `code || 0`), and `explainingExits` reads the signal from PM2's log: `code` and `signal` are as read then.
    static let endedApps:
        [(
            name: String, end: String, options: [String: JSONValue], autorestart: Bool, status: ProcessStatus, code: Int32?, signal: String?,
            gate: String
        )] = [
            ("oneshot", "0", [:], false, .stopped, 0, nil, "all online"),
            ("oneshot-delay", "0", ["restart_delay": .integer(60_000)], false, .waitingRestart, 0, nil, "all online"),
            ("oneshot-delay-fails", "1", ["restart_delay": .integer(60_000)], false, .waitingRestart, 1, nil, "failed"),
            ("stop-code", "3", ["stop_exit_codes": .array([.integer(3)])], true, .stopped, 3, nil, "all online"),
            (
                "stop-code-delay", "3", ["stop_exit_codes": .array([.integer(3)]), "restart_delay": .integer(60_000)], true, .waitingRestart, 3, nil,
                "all online"
            ),
            // A crash loop PM2 gives up on (3 unstable restarts), shown `waiting restart` for ever because of restart_delay.
            ("crash-loop-delay", "1", ["restart_delay": .integer(100), "max_restarts": .integer(3)], true, .errored, 1, nil, "failed"),
            // A one-shot job the OOM killer ends: not one that ran to completion (it used to pass the gate).
            ("oneshot-killed", "SIGKILL", [:], false, .stopped, nil, "SIGKILL", "failed"),
            ("oneshot-segfault", "SIGSEGV", [:], false, .stopped, nil, "SIGSEGV", "failed"),
        ]

    /// Deleting the last app and saving leaves an empty `dump.pm2`, so a reboot's `pm2 resurrect` brings nothing back.
    /// PM2 skips a save of an empty table (exit 0, "PM2 is not managing any process") unless forced: the dump kept the
    /// deleted apps, and every boot started them again. Real PM2 7.0.3.
    @Test("against real PM2: a save after the last app is deleted empties the dump")
    func realPM2SaveOfAnEmptyTable() async throws {
        try await Self.withRealPM2("ferry-real-pm2-save") { root in
            try Data("setInterval(() => {}, 1000);\n".utf8).write(to: root.appendingPathComponent("idle.js"))
            return [AppSpec.pm2TestApp("idle", script: root.path + "/idle.js", cwd: root.path)]
        } check: { manager, apps in
            let dump = try #require(manager.invocation.environment["PM2_HOME"]) + "/dump.pm2"
            try await manager.save()
            let saved = try JSONValue.parse(Array(try Data(contentsOf: URL(fileURLWithPath: dump))))
            #expect(saved.arrayValue.count == 1, "the running app is saved")
            try await manager.delete(appNamed: apps[0].name)
            try await manager.save()
            let emptied = try JSONValue.parse(Array(try Data(contentsOf: URL(fileURLWithPath: dump))))
            #expect(emptied == .array([]), "the dump still holds \(emptied)")
        }
    }

    @Test("against real PM2: apps PM2 stops on purpose pass the gate, and fork apps keep PM2's merged log file")
    func realPM2EndedApps() async throws {
        try await Self.withRealPM2("ferry-real-pm2-ended") { root in
            try Data(
                "const end = process.env.END;\nif (end.startsWith('SIG')) process.kill(process.pid, end); else process.exit(Number(end));\n".utf8
            ).write(to: root.appendingPathComponent("end.js"))
            return Self.endedApps.map { row in
                var app = AppSpec.pm2TestApp(
                    row.name,
                    script: root.path + "/end.js",
                    cwd: root.path,
                    env: ["END": row.end],
                    autorestart: row.autorestart,
                    pm2Options: row.options
                )
                // As AppSpec.specs(for:) derives it from the release's option.
                if case .integer(let delay)? = row.options["restart_delay"] { app.restartDelayMilliseconds = delay }
                if case .integer(let restarts)? = row.options["max_restarts"] { app.maxRestarts = Int(restarts) }
                return app
            }
        } check: { manager, apps in
            // Every app has exited once PM2 recorded an exit code for each.
            let deadline = ContinuousClock.now + .seconds(30)
            var table = try await manager.processes()
            // The crash loop takes a few restarts to be given up on.
            func settled(_ table: [ManagedProcess]) -> Bool {
                Self.endedApps.allSatisfy { row in table.contains { $0.name == row.name && $0.status == row.status } }
            }
            while table.count < apps.count || table.contains(where: { $0.lastExitCode == nil }) || !settled(table),
                ContinuousClock.now < deadline
            {
                try await Task.sleep(for: .milliseconds(200))
                table = try await manager.processes()
            }
            for (row, app) in zip(Self.endedApps, apps) {
                let instances = await manager.explainingExits(table.filter { $0.name == row.name })
                #expect(instances.map(\.status) == [row.status], "\(row.name)")
                #expect(instances.map(\.lastExitCode) == [row.code], "\(row.name)")
                #expect(instances.map(\.lastExitSignal) == [row.signal], "\(row.name)")
                let check = ProcessTableCheck(evaluating: instances, against: [app])
                #expect(check.description.hasPrefix(row.gate), "\(row.name): \(check)")
                // PM2's default for a fork app without instances: one merged file, not one per pm_id.
                #expect(instances.first?.outLogPath?.hasSuffix("/\(row.name)-out.log") == true, "\(instances.first?.outLogPath ?? "none")")
            }
        }
    }

    /// Programs PM2 rewrites as it starts them (a command line with a space runs as `bash -c`, `serve` as PM2's own
    /// static server): the drift check reads them as running what the release asked for. Each was read as a changed
    /// script, and the app was deleted and started again at every drift check.
    @Test("against real PM2: programs PM2 rewrites are not read as drift")
    func realPM2RewrittenPrograms() async throws {
        let port = try freeLoopbackPort()
        try await Self.withRealPM2("ferry-real-pm2-programs") { root in
            [
                AppSpec.pm2TestApp(
                    "command-line",
                    script: "sleep 600",
                    cwd: root.path,
                    interpreter: nil,
                    pm2Options: ["script_source": .string("path")]
                ),
                AppSpec.pm2TestApp(
                    "static",
                    script: "serve",
                    cwd: root.path,
                    interpreter: nil,
                    env: ["PM2_SERVE_PORT": "\(port)", "PM2_SERVE_PATH": root.path],
                    pm2Options: ["script_source": .string("path")]
                ),
            ]
        } check: { manager, apps in
            let table = try await eventually("both online", timeout: .seconds(30), interval: .milliseconds(200)) { () -> [ManagedProcess]? in
                let table = try await manager.processes()
                return apps.allSatisfy { app in table.contains { $0.name == app.name && $0.status == .online } } ? table : nil
            }
            for app in apps {
                let observed = table.filter { $0.name == app.name }
                #expect(observed.map(\.status) == [.online], "\(app.name): \(observed.map(\.scriptPath))")
                #expect(
                    AppAction.decide(desired: app, observed: observed, needsRefresh: false) == .none,
                    "\(app.name): \(observed.map(\.scriptPath))"
                )
            }
        }
    }

    /// A manager that only looks (`ferry-agent status`) reads no table where no PM2 daemon runs, and starts none: `pm2
    /// jlist` would start a daemon (as root, with sudo) that resurrects every saved app. With a daemon, it reads the
    /// table as before, over the socket or through `pm2 jlist`. Real PM2 7.0.3.
    @Test(arguments: [true, false])
    func aManagerThatOnlyLooksStartsNoDaemon(fromSocket: Bool) async throws {
        let pm2 = try #require(try Backend.pm2.pm2Binary())
        try await TestPaths.withTemporaryDirectory("ferry-pm2-look") { root in
            let home = root.appendingPathComponent("pm2home").path
            var configuration = PM2ProcessManager.Configuration(executable: pm2, pm2Home: home, namespace: "ferry-test")
            configuration.readsTableFromDaemon = fromSocket
            configuration.startsDaemon = false
            let looking = try PM2ProcessManager(configuration: configuration, logger: .init(label: "test.pm2"))
            do throws(PM2Error) {
                let table = try await looking.table()
                Issue.record("read a table of \(table.processes.count) without a daemon")
            } catch {
                #expect(error == .notRunning(home: home), "\(error)")
            }
            #expect(!FileManager.default.fileExists(atPath: "\(home)/pm2.pid"), "a daemon was started")
            #expect(!FileManager.default.fileExists(atPath: "\(home)/rpc.sock"), "a daemon was started")
            // With a daemon (started by a manager that may), the table is read.
            configuration.startsDaemon = true
            let starting = try PM2ProcessManager(configuration: configuration, logger: .init(label: "test.pm2"))
            do {
                _ = try await starting.processes()
                #expect(try await looking.processes().isEmpty)
            } catch {
                await Self.killDaemon(starting)
                throw error
            }
            await Self.killDaemon(starting)
        }
    }

    /// Starts the apps `make` writes into a directory of its own under a private real PM2 daemon (its own PM2_HOME,
    /// namespace `ferry-test`), runs `check`, then kills that daemon and removes the directory.
    static func withRealPM2(
        _ label: String,
        apps make: (URL) throws -> [AppSpec],
        check: (PM2ProcessManager, [AppSpec]) async throws -> Void
    ) async throws {
        let pm2 = try #require(try Backend.pm2.pm2Binary())
        let root = try TestPaths.makeTemporaryDirectory(label)
        defer { try? FileManager.default.removeItem(at: root) }
        let apps = try make(root)
        let ecosystem = root.appendingPathComponent("ecosystem.json").path
        try Data(EcosystemWriter.render(apps: apps, namespace: "ferry-test")).write(to: URL(fileURLWithPath: ecosystem))
        let manager = try PM2ProcessManager(
            configuration: .init(executable: pm2, pm2Home: root.appendingPathComponent("pm2home").path, namespace: "ferry-test"),
            logger: .init(label: "test.pm2")
        )
        do {
            for app in apps { try await manager.start(app, ecosystem: ecosystem) }
            try await check(manager, apps)
        } catch {
            await Self.killDaemon(manager)
            throw error
        }
        await Self.killDaemon(manager)
    }

    static func killDaemon(_ manager: PM2ProcessManager) async {
        let kill = PM2Command(
            executable: manager.invocation.executable,
            arguments: ["kill"],
            environment: manager.invocation.environment,
            workingDirectory: "/",
            timeout: .seconds(30)
        )
        _ = try? await PM2CommandRunner().run(kill)
    }

    /// Polls the table until the check is no longer pending (bounded).
    static func settle(_ manager: PM2ProcessManager, _ app: AppSpec) async throws -> [ManagedProcess] {
        let deadline = ContinuousClock.now + .seconds(30)
        while true {
            let table = try await manager.processes()
            if case .pending = ProcessTableCheck(evaluating: table, against: [app]), ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(200))
                continue
            }
            return table
        }
    }
}
