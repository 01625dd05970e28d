import Shared
import Testing

@testable import Agent

@Suite("AppSpec.specs(for:): a release's PM2 apps as this instance runs them")
struct AppSpecReleaseTests {
    static let current = "/var/lib/ferry/services/api/current"
    static let cpus = 8

    /// The spec of a one-app release whose app has `options` and `script`.
    static func spec(script: String = "server.js", options: [String: JSONValue] = [:]) -> AppSpec? {
        let release = Release(
            service: "api",
            serial: 3,
            version: "3.0.0",
            createdAt: CoreFixture.now,
            expiresAt: CoreFixture.now.addingTimeInterval(60),
            artifact: CoreFixture.release(serial: 3).artifact,
            pm2: PM2Config(apps: [PM2App(name: "api", script: script, options: options)])
        )
        return AppSpec.specs(for: release, currentLink: current, instanceEnv: [:], cpuCount: cpus).first
    }

    /// What an app with no options becomes: PM2's defaults.
    static let defaults = AppSpec(
        name: "api",
        service: "api",
        script: current + "/server.js",
        cwd: current,
        args: [],
        interpreter: "node",
        interpreterArgs: [],
        instances: 1,
        execMode: .fork,
        env: [:],
        autorestart: true,
        maxRestarts: 16,
        minUptimeMilliseconds: 1000,
        restartDelayMilliseconds: 0,
        killTimeoutMilliseconds: 1600,
        maxMemoryBytes: nil,
        pm2Options: [:]
    )

    struct Case: Sendable, CustomStringConvertible {
        var description: String
        var script = "server.js"
        var options: [String: JSONValue] = [:]
        /// The changes from `defaults` (besides `pm2Options`, which is always the options as given).
        var change: @Sendable (inout AppSpec) -> Void = { _ in }
    }

    static let cases: [Case] = [
        Case(description: "no options: PM2's defaults"),
        Case(description: "script and cwd under the current link", script: "dist/http/main.js") { $0.script = current + "/dist/http/main.js" },
        Case(description: ".mjs runs with node", script: "server.mjs") { $0.script = current + "/server.mjs" },
        Case(description: ".cjs runs with node", script: "server.cjs") { $0.script = current + "/server.cjs" },
        Case(description: "a binary runs directly", script: "bin/api") {
            $0.script = current + "/bin/api"
            $0.interpreter = nil
        },
        Case(description: ".jsx is not .js", script: "app.jsx") {
            $0.script = current + "/app.jsx"
            $0.interpreter = nil
        },
        Case(description: "interpreter none runs a .js directly", options: ["interpreter": .string("none")]) { $0.interpreter = nil },
        Case(description: "an explicit interpreter wins", script: "app.py", options: ["interpreter": .string("/usr/bin/python3")]) {
            $0.script = current + "/app.py"
            $0.interpreter = "/usr/bin/python3"
        },
        Case(description: "instances as a number", options: ["instances": .integer(4)]) { $0.instances = 4 },
        Case(description: "instances as a whole JSON number", options: ["instances": .number(3)]) { $0.instances = 3 },
        Case(description: "instances max: every CPU", options: ["instances": .string("max")]) { $0.instances = cpus },
        Case(description: "instances 0: every CPU", options: ["instances": .integer(0)]) { $0.instances = cpus },
        Case(description: "instances -1: every CPU but one", options: ["instances": .integer(-1)]) { $0.instances = cpus - 1 },
        Case(description: "instances below minus the CPUs: still one", options: ["instances": .integer(-20)]) { $0.instances = 1 },
        Case(description: "exec_mode cluster", options: ["exec_mode": .string("cluster")]) { $0.execMode = .cluster },
        Case(description: "exec_mode cluster_mode", options: ["exec_mode": .string("cluster_mode")]) { $0.execMode = .cluster },
        Case(description: "args as a string are split on blanks", options: ["args": .string("--port 3000   --verbose\t-x")]) {
            $0.args = ["--port", "3000", "--verbose", "-x"]
        },
        Case(description: "args as a list are kept as given", options: ["args": .array([.string("--name"), .string("a b")])]) {
            $0.args = ["--name", "a b"]
        },
        Case(description: "interpreter_args", options: ["interpreter_args": .string("--max-old-space-size=512 --trace-warnings")]) {
            $0.interpreterArgs = ["--max-old-space-size=512", "--trace-warnings"]
        },
        Case(description: "node_args when interpreter_args is absent", options: ["node_args": .array([.string("--inspect")])]) {
            $0.interpreterArgs = ["--inspect"]
        },
        Case(
            description: "interpreter_args wins over node_args",
            options: ["node_args": .array([.string("--inspect")]), "interpreter_args": .array([.string("--no-warnings")])]
        ) { $0.interpreterArgs = ["--no-warnings"] },
        // A string where a list goes, as PM2 splits it (quotes group words): it was split at every space.
        Case(description: "args as a string with a quoted word", options: ["args": .string("--title 'my app' --port=3000")]) {
            $0.args = ["--title", "my app", "--port=3000"]
        },
        Case(description: "node_args as a string with a quoted value", options: ["node_args": .string(#"--require "./boot file.js""#)]) {
            $0.interpreterArgs = ["--require", "./boot file.js"]
        },
        Case(description: "autorestart false", options: ["autorestart": .bool(false)]) { $0.autorestart = false },
        Case(description: "max_restarts", options: ["max_restarts": .integer(3)]) { $0.maxRestarts = 3 },
        Case(description: "min_uptime 2s", options: ["min_uptime": .string("2s")]) { $0.minUptimeMilliseconds = 2000 },
        Case(description: "min_uptime 500ms", options: ["min_uptime": .string("500ms")]) { $0.minUptimeMilliseconds = 500 },
        Case(description: "min_uptime 1m", options: ["min_uptime": .string("1m")]) { $0.minUptimeMilliseconds = 60_000 },
        Case(description: "min_uptime as milliseconds", options: ["min_uptime": .integer(750)]) { $0.minUptimeMilliseconds = 750 },
        Case(description: "restart_delay", options: ["restart_delay": .integer(250)]) { $0.restartDelayMilliseconds = 250 },
        Case(description: "kill_timeout", options: ["kill_timeout": .integer(5000)]) { $0.killTimeoutMilliseconds = 5000 },
        Case(description: "max_memory_restart 300M", options: ["max_memory_restart": .string("300M")]) { $0.maxMemoryBytes = 300 << 20 },
        Case(description: "max_memory_restart 1G", options: ["max_memory_restart": .string("1G")]) { $0.maxMemoryBytes = 1 << 30 },
        Case(description: "max_memory_restart 512K", options: ["max_memory_restart": .string("512K")]) { $0.maxMemoryBytes = 512 << 10 },
        Case(description: "max_memory_restart in bytes", options: ["max_memory_restart": .integer(1_048_576)]) { $0.maxMemoryBytes = 1_048_576 },
        Case(description: "app env", options: ["env": .object(["PORT": .string("3000")])]) { $0.env = ["PORT": "3000"] },
    ]

    @Test(arguments: cases)
    func resolves(_ testCase: Case) throws {
        var expected = Self.defaults
        testCase.change(&expected)
        expected.pm2Options = testCase.options
        #expect(Self.spec(script: testCase.script, options: testCase.options) == expected)
    }

    @Test func environmentPrecedenceIsReleaseThenAppThenInstanceFile() throws {
        let release = CoreFixture.release(
            serial: 4,
            apps: ["api", "worker"],
            env: ["NODE_ENV": "production", "PORT": "80", "DB_URL": "postgres://release", "LOG": "info"]
        )
        var apps = release.pm2.apps
        apps[0].options["env"] = .object(["PORT": .string("3000"), "DB_URL": .string("postgres://app")])
        apps[1].options["env"] = .object(["QUEUE": .string("jobs"), "LOG": .string("debug")])
        var withAppEnv = release
        withAppEnv.pm2 = PM2Config(apps: apps)
        let specs = AppSpec.specs(
            for: withAppEnv,
            currentLink: Self.current,
            instanceEnv: ["DB_URL": "postgres://instance-secret", "QUEUE": "jobs-eu"],
            cpuCount: 2
        )
        #expect(specs.map(\.name) == ["api", "worker"])
        #expect(
            specs[0].env == ["NODE_ENV": "production", "PORT": "3000", "DB_URL": "postgres://instance-secret", "LOG": "info", "QUEUE": "jobs-eu"]
        )
        #expect(
            specs[1].env == [
                "NODE_ENV": "production", "PORT": "80", "DB_URL": "postgres://instance-secret", "LOG": "debug", "QUEUE": "jobs-eu",
            ]
        )
        #expect(specs.allSatisfy { $0.service == "api" && $0.cwd == Self.current })
        #expect(specs[1].script == Self.current + "/worker.js")
    }
}
