import Shared
import TestSupport
import Testing

@testable import Agent

@Suite("AppAction: what to do with one app, from desired, observed and whether it needs a refresh")
struct AppActionTests {
    static let current = "/var/lib/ferry/services/api/current"
    static let app = AppSpec.pm2TestApp("api", script: current + "/server.js", cwd: current, mode: .cluster, instances: 2)

    /// An observed instance of `app` as PM2 reports it.
    static func instance(
        _ pmId: Int,
        status: ProcessStatus = .online,
        script: String = current + "/server.js",
        cwd: String = current,
        interpreter: String? = "node",
        mode: ExecMode = .cluster,
        of instances: Int = 2
    ) -> ManagedProcess {
        ManagedProcess(
            name: "api",
            namespace: "ferry",
            pmId: pmId,
            pid: status == .online ? Int32(1000 + pmId) : nil,
            status: status,
            restarts: 0,
            uptimeSeconds: nil,
            memoryBytes: 0,
            cpuPercent: 0,
            execMode: mode,
            instances: instances,
            instanceIndex: pmId,
            scriptPath: script,
            cwd: cwd,
            interpreter: interpreter
        )
    }

    static func with(_ change: (inout AppSpec) -> Void) -> AppSpec {
        var spec = app
        change(&spec)
        return spec
    }

    static let cases: [(label: String, desired: AppSpec?, observed: [ManagedProcess], refresh: Bool, expected: AppAction)] = [
        ("not desired, absent", nil, [], true, .none),
        ("not desired, present: delete", nil, [instance(0), instance(1)], false, .delete),
        ("desired, absent: start", app, [], false, .start),
        ("desired, absent, new release: start", app, [], true, .start),
        ("unchanged and online", app, [instance(0), instance(1)], false, .none),
        ("new release behind the same current path: reload", app, [instance(0), instance(1)], true, .reload),
        (
            "script moved (path-10): replace", app, [instance(0, script: "/srv/old/server.js"), instance(1, script: "/srv/old/server.js")], true,
            .replace(reason: "script changed from /srv/old/server.js to \(current)/server.js")
        ),
        (
            "one instance still on the old script: replace", app, [instance(0), instance(1, script: "/srv/old/server.js")], false,
            .replace(reason: "script changed from /srv/old/server.js to \(current)/server.js")
        ),
        (
            "same script written differently (path.resolve form): reload", app,
            [instance(0, script: "/var/lib/ferry//services/api/./current/server.js"), instance(1)], true, .reload
        ),
        (
            "symlink targets are not resolved: the stored current path is what counts", app,
            [instance(0, script: "/var/lib/ferry/services/api/releases/7-abc/server.js"), instance(1)], true,
            .replace(reason: "script changed from /var/lib/ferry/services/api/releases/7-abc/server.js to \(current)/server.js")
        ),
        (
            "cwd moved inside the release (PM2 keeps the old one on reload): replace", with { $0.cwd = current + "/api" },
            [instance(0), instance(1)], true, .replace(reason: "cwd changed from \(current) to \(current)/api")
        ),
        (
            "a program on PATH is stored by PM2 as the file its which found", with { $0.script = "npm" },
            [instance(0, script: "/usr/bin/npm"), instance(1, script: "/usr/local/bin/npm")], true, .reload
        ),
        (
            "a different program: replace", with { $0.script = "pnpm" }, [instance(0, script: "/usr/bin/npm"), instance(1, script: "/usr/bin/npm")],
            true, .replace(reason: "script changed from /usr/bin/npm to pnpm")
        ),
        // PM2's two rewrites of a program (real PM2 7.0.3: `sleep 1000` ran as /usr/bin/bash, `serve` as its Serve.js):
        // each was read as a changed script, and the app deleted and started again at every drift check.
        (
            "a command line with a space runs as bash -c: reload", with { $0.script = "npm start" },
            [instance(0, script: "/usr/bin/bash"), instance(1, script: "/bin/sh")], true, .reload
        ),
        (
            "serve runs as PM2's own static server: reload", with { $0.script = "serve" },
            [instance(0, script: "/usr/lib/node_modules/pm2/lib/API/Serve.js"), instance(1, script: "/usr/local/bin/serve")], true, .reload
        ),
        (
            "a command line changed to a program: replace", with { $0.script = "npm" },
            [instance(0, script: "/usr/bin/bash"), instance(1, script: "/usr/bin/bash")], true,
            .replace(reason: "script changed from /usr/bin/bash to npm")
        ),
        (
            "fork to cluster: replace", app, [instance(0, mode: .fork), instance(1, mode: .fork)], true,
            .replace(reason: "exec mode changed from fork to cluster")
        ),
        (
            "two instances to three: replace", with { $0.instances = 3 }, [instance(0), instance(1)], true,
            .replace(reason: "instances changed from 2 to 3")
        ),
        ("an instance is missing: replace", app, [instance(0)], false, .replace(reason: "instances changed from 1 to 2")),
        (
            "node by absolute path is node", app, [instance(0, interpreter: "/usr/bin/node"), instance(1, interpreter: "/opt/n/bin/node")], false,
            .none
        ),
        (
            "interpreter unknown (PM2 did not print it): not a difference", app, [instance(0, interpreter: nil), instance(1, interpreter: nil)],
            true, .reload
        ),
        (
            "node to direct execution: replace", with { $0.interpreter = nil }, [instance(0), instance(1)], true,
            .replace(reason: "interpreter changed from node to none")
        ),
        ("none stays none", with { $0.interpreter = nil }, [instance(0, interpreter: "none"), instance(1, interpreter: "none")], false, .none),
        (
            "python by path or by name is the same", with { $0.interpreter = "python3" },
            [instance(0, interpreter: "/usr/bin/python3"), instance(1, interpreter: "python3")], false, .none
        ),
        (
            "several differences at once",
            with {
                $0.instances = 1
                $0.execMode = .fork
            }, [instance(0), instance(1)], true,
            .replace(reason: "exec mode changed from cluster to fork; instances changed from 2 to 1")
        ),
        ("errored, nothing new: restart", app, [instance(0, status: .errored), instance(1, status: .errored)], false, .restart),
        ("stopped, nothing new: restart", app, [instance(0, status: .stopped), instance(1)], false, .restart),
        (
            "stopped with autorestart off: the operator's choice, leave it",
            with {
                $0.autorestart = false
                $0.instances = 1
            },
            [instance(0, status: .stopped, of: 1)], false, .none
        ),
        (
            "stopped with autorestart off and a new release: reload",
            with {
                $0.autorestart = false
                $0.instances = 1
            },
            [instance(0, status: .stopped, of: 1)], true, .reload
        ),
        (
            "errored and a new release: reload (it starts errored apps, symlink-11)", app,
            [instance(0, status: .errored), instance(1, status: .errored)], true, .reload
        ),
        ("launching (wait_ready): leave it", app, [instance(0, status: .launching), instance(1)], false, .none),
        ("waiting restart: PM2 is on it", app, [instance(0, status: .waitingRestart), instance(1)], false, .none),
        ("stopping: leave it", app, [instance(0, status: .stopping), instance(1)], false, .none),
    ]

    @Test("decides by the table", arguments: cases.indices)
    func decides(_ index: Int) {
        let row = Self.cases[index]
        #expect(AppAction.decide(desired: row.desired, observed: row.observed, needsRefresh: row.refresh) == row.expected, "\(row.label)")
    }

    /// A worker PM2 stops instead of restarting when it exits 3 (`stop_exit_codes`).
    static let worker = AppSpec.pm2TestApp(
        "api",
        script: current + "/server.js",
        cwd: current,
        mode: .cluster,
        instances: 1,
        pm2Options: ["stop_exit_codes": .array([.integer(3)])]
    )

    static func exited(_ code: Int32, status: ProcessStatus = .stopped) -> ManagedProcess {
        var process = instance(0, status: status, of: 1)
        process.lastExitCode = code
        return process
    }

    static let stopCodeCases: [(label: String, desired: AppSpec, observed: [ManagedProcess], expected: AppAction)] = [
        ("stopped with a stop_exit_code: PM2 stopped it on purpose, leave it", worker, [exited(3)], .none),
        ("stopped with another code: it crashed, restart", worker, [exited(1)], .restart),
        ("stopped with exit 0, not a listed code: restart", worker, [exited(0)], .restart),
        ("errored, whatever its code: restart", worker, [exited(3, status: .errored)], .restart),
        ("no stop_exit_codes: stopped is a crash", with { $0.instances = 1 }, [exited(3)], .restart),
    ]

    @Test("stop_exit_codes: an instance that exited with one is not restarted", arguments: stopCodeCases.indices)
    func stopExitCodes(_ index: Int) {
        let row = Self.stopCodeCases[index]
        #expect(AppAction.decide(desired: row.desired, observed: row.observed, needsRefresh: false) == row.expected, "\(row.label)")
    }

    static let freshStartCases: [(label: String, action: AppAction, variables: Set<String>, options: Set<String>, expected: AppAction)] = [
        ("a reload with nothing dropped stays a reload", .reload, [], [], .reload),
        (
            "a dropped variable: replace", .reload, ["GREETING"], [],
            .replace(reason: "its env no longer names GREETING, which a reload would keep")
        ),
        (
            "a dropped max_memory_restart: replace", .reload, [], ["max_memory_restart"],
            .replace(reason: "its ecosystem entry no longer sets max_memory_restart, which a reload would keep")
        ),
        (
            "several dropped options, named in order", .reload, [], ["wait_ready", "cron_restart", "stop_exit_codes"],
            .replace(reason: "its ecosystem entry no longer sets cron_restart, stop_exit_codes, wait_ready, which a reload would keep")
        ),
        (
            "variables and options", .reload, ["B", "A"], ["listen_timeout"],
            .replace(
                reason: "its env no longer names A, B, which a reload would keep; "
                    + "its ecosystem entry no longer sets listen_timeout, which a reload would keep"
            )
        ),
        ("a start is already fresh", .start, ["A"], ["cron_restart"], .start),
        (
            "a replace keeps its own reason", .replace(reason: "instances changed from 1 to 2"), [], ["cron_restart"],
            .replace(reason: "instances changed from 1 to 2")
        ),
        ("a restart (nothing new) stays a restart", .restart, [], ["cron_restart"], .restart),
        ("nothing to do stays nothing", .none, [], ["cron_restart"], .none),
    ]

    @Test("a reload that would keep dropped env variables or PM2 options becomes a replace", arguments: freshStartCases.indices)
    func startingAfresh(_ index: Int) {
        let row = Self.freshStartCases[index]
        #expect(row.action.startingAfresh(droppedVariables: row.variables, droppedOptions: row.options) == row.expected, "\(row.label)")
    }

    /// Which options of an ecosystem entry PM2 keeps from the file: what a reload can leave behind when a newer entry
    /// no longer has them.
    static let keptOptionCases: [(label: String, key: String, value: JSONValue, kept: Bool)] = [
        ("a set max_memory_restart", "max_memory_restart", .integer(300 << 20), true),
        ("a cron pattern", "cron_restart", .string("0 3 * * *"), true),
        ("wait_ready: true", "wait_ready", .bool(true), true),
        ("wait_ready: false is dropped (validateJSON falls back to waitReady)", "wait_ready", .bool(false), false),
        ("restart_delay: 0 is dropped", "restart_delay", .integer(0), false),
        ("restart_delay: 0.0 is dropped", "restart_delay", .number(0), false),
        ("an empty string under an underscore name is dropped", "log_date_format", .string(""), false),
        ("null is dropped", "max_memory_restart", .null, false),
        ("autorestart: false is kept (its camel-case alias is itself)", "autorestart", .bool(false), true),
        ("vizion: false is kept", "vizion", .bool(false), true),
        ("an empty list is kept (truthy in JavaScript)", "node_args", .array([]), true),
    ]

    @Test("options PM2 keeps from an ecosystem file", arguments: keptOptionCases.indices)
    func keptOptions(_ index: Int) {
        let row = Self.keptOptionCases[index]
        let file = JSONValue.object(["apps": .array([.object(["name": .string("api"), "env": .object([:]), row.key: row.value])])])
        let kept = Reconciler.options(inEcosystem: file.encodedBytes())["api"]
        #expect(kept == (row.kept ? [row.key] : []), "\(row.label)")
    }

    @Test("a replace says in the report that it costs a restart")
    func replaceDescription() {
        #expect(
            AppAction.replace(reason: "instances changed from 1 to 2").description
                == "replace (delete + start, costs a restart): instances changed from 1 to 2"
        )
        #expect(!AppAction.none.changesTable)
        #expect(AppAction.reload.changesTable)
    }

    @Test("perform refuses to start an app without its spec")
    func performNeedsSpec() async throws {
        let standIn = try PM2StandIn()
        defer { standIn.cleanUp() }
        let manager = try standIn.manager()
        await #expect(throws: AppActionError.missingDesiredApp(name: "api", action: "start")) {
            _ = try await AppAction.start.perform(on: manager, appNamed: "api", desired: nil, ecosystem: standIn.ecosystem)
        }
        await #expect(throws: AppActionError.missingDesiredApp(name: "web", action: "reload")) {
            _ = try await AppAction.reload.perform(on: manager, appNamed: "web", desired: Self.app, ecosystem: standIn.ecosystem)
        }
        #expect(try standIn.invocations().isEmpty)
    }
}
