import Foundation
import Shared
import TestSupport
import Testing

@testable import Controller

/// An ecosystem file means to Ferry what it means to `pm2 start` (PM2 7.0.3's `verifyConfs`, `validateJSON`,
/// `prepareAppConf`): one table of apps, each with the release app PM2's reading gives, or every problem it has.
@Suite("Ecosystem files read as PM2 reads them")
struct EcosystemNormalizerTests {
    static let root = "/srv/app"

    static func file(_ text: String, mode: UInt32 = 0o644) -> ArtifactTree.Entry {
        .init(kind: .file, mode: mode, head: Array(text.utf8))
    }

    /// The artifact every row is checked against.
    static let tree = ArtifactTree(entries: [
        "server.js": file("require('http')"),
        "api": .init(kind: .directory, mode: 0o755, head: []),
        "api/index.js": file("module.exports = 1"),
        "bin": .init(kind: .directory, mode: 0o755, head: []),
        "bin/www": file("#!/usr/bin/env node\nrequire('../server')"),
        "bin/start": file("#!/bin/bash\nexec node server.js", mode: 0o755),
        "start.sh": file("node server.js"),
        "run.py": file("print(1)"),
        "tool": .init(kind: .file, mode: 0o755, head: [0x7F, 0x45, 0x4C, 0x46, 0, 0, 0]),
        "tool-noexec": .init(kind: .file, mode: 0o644, head: [0x7F, 0x45, 0x4C, 0x46, 0, 0, 0]),
        "venv": .init(kind: .directory, mode: 0o755, head: []),
        "venv/bin": .init(kind: .directory, mode: 0o755, head: []),
        "venv/bin/python": .init(kind: .file, mode: 0o755, head: [0x7F, 0x45, 0x4C, 0x46, 0]),
        "node_modules": .init(kind: .directory, mode: 0o755, head: []),
        "node_modules/.bin": .init(kind: .directory, mode: 0o755, head: []),
        "node_modules/.bin/next": .init(kind: .symlink(target: "../next/dist/bin/next"), mode: 0o777, head: []),
        "node_modules/next": .init(kind: .directory, mode: 0o755, head: []),
        "node_modules/next/dist": .init(kind: .directory, mode: 0o755, head: []),
        "node_modules/next/dist/bin": .init(kind: .directory, mode: 0o755, head: []),
        "node_modules/next/dist/bin/next": file("#!/usr/bin/env node\nrequire('../server')", mode: 0o755),
        "escape": .init(kind: .symlink(target: "../../etc/passwd"), mode: 0o777, head: []),
    ])

    /// This machine's PATH, as far as the rows are concerned.
    static let programs: [String: (path: String, head: [UInt8])] = [
        "npm": ("/usr/bin/npm", Array("#!/usr/bin/env node\nrequire('npm')".utf8)),
        "bash": ("/usr/bin/bash", [0x7F, 0x45, 0x4C, 0x46, 0, 1, 2]),
        "sleep": ("/usr/bin/sleep", [0x7F, 0x45, 0x4C, 0x46, 0, 1, 2]),
    ]

    static func normalize(_ document: JSONValue, environment: String? = nil) -> EcosystemNormalizer.Result {
        let configuration = EcosystemNormalizer.Configuration(
            environmentName: environment,
            releaseRoot: root,
            artifact: tree,
            which: { name in programs[name]?.path ?? (name.hasPrefix("/") && programs.values.contains { $0.path == name } ? name : nil) },
            head: { path in programs.values.first { $0.path == path }?.head }
        )
        return EcosystemNormalizer(configuration: configuration).normalize(document)
    }

    struct Row: Sendable, CustomTestStringConvertible {
        var label: String
        var app: [String: JSONValue]
        var environment: String? = nil
        /// The release app, exactly; `nil` when the row expects errors.
        var expected: [String: JSONValue]? = nil
        /// Every error, exactly, as `field: message` prefixes.
        var errors: [String] = []
        /// Every warning, as `field: message` prefixes.
        var warnings: [String] = []
        var testDescription: String { label }
    }

    static let rows: [Row] = [
        Row(
            label: "the name is the script's base name without its extension",
            app: ["script": "api/index.js"],
            expected: ["name": "index", "script": "api/index.js", "interpreter": "node", "exec_mode": "fork", "merge_logs": nil]
        ),
        Row(
            label: "a node app that sets instances runs in cluster mode",
            app: ["name": "web", "script": "server.js", "instances": 4],
            expected: ["name": "web", "script": "server.js", "interpreter": "node", "exec_mode": "cluster", "instances": 4]
        ),
        Row(
            label: "instances as a numeric string, as PM2 parses it",
            app: ["name": "web", "script": "server.js", "instances": "2"],
            expected: ["name": "web", "script": "server.js", "interpreter": "node", "exec_mode": "cluster", "instances": 2]
        ),
        Row(
            label: "instances max is 0: one per CPU, cluster",
            app: ["name": "web", "script": "server.js", "instances": "max"],
            expected: ["name": "web", "script": "server.js", "interpreter": "node", "exec_mode": "cluster", "instances": 0]
        ),
        Row(
            label: "instances -2 keeps fork mode (PM2 defaults to cluster for >= 1, 0 and -1 only)",
            app: ["name": "web", "script": "server.js", "instances": -2],
            expected: ["name": "web", "script": "server.js", "interpreter": "node", "exec_mode": "fork", "instances": -2]
        ),
        Row(
            label: "an explicit exec_mode wins",
            app: ["name": "web", "script": "server.js", "instances": 2, "exec_mode": "fork_mode"],
            expected: ["name": "web", "script": "server.js", "interpreter": "node", "exec_mode": "fork", "instances": 2]
        ),
        Row(
            label: "bash runs a .sh, executable bit or not",
            app: ["name": "sh", "script": "start.sh", "instances": 2],
            expected: ["name": "sh", "script": "start.sh", "interpreter": "bash", "exec_mode": "fork", "instances": 2]
        ),
        Row(
            label: "python runs a .py, unbuffered",
            app: ["name": "py", "script": "run.py"],
            expected: ["name": "py", "script": "run.py", "interpreter": "python", "exec_mode": "fork", "env": ["PYTHONUNBUFFERED": "1"]]
        ),
        Row(
            label: "node runs a text file without an extension (./bin/www)",
            app: ["name": "www", "script": "./bin/www"],
            expected: ["name": "www", "script": "bin/www", "interpreter": "node", "exec_mode": "fork"]
        ),
        Row(
            label: "a binary runs directly",
            app: ["name": "tool", "script": "tool"],
            expected: ["name": "tool", "script": "tool", "interpreter": "none", "exec_mode": "fork"]
        ),
        Row(
            label: "a binary without its executable bit cannot run",
            app: ["name": "tool", "script": "tool-noexec"],
            errors: ["apps[0].script: tool-noexec runs directly (interpreter none) but has no executable bit in the artifact"]
        ),
        Row(
            label: "a bash script without extension would be run by node",
            app: ["name": "start", "script": "bin/start"],
            errors: ["apps[0].script: PM2 runs bin/start with node (it has no extension PM2 knows), but its #! line asks for bash"]
        ),
        Row(
            label: "a symlink inside the release is followed",
            app: ["name": "next", "script": "node_modules/.bin/next", "args": "start"],
            expected: ["name": "next", "script": "node_modules/next/dist/bin/next", "interpreter": "node", "exec_mode": "fork", "args": ["start"]]
        ),
        // Real PM2 7.0.3 started it as `--port 3000 true 1.5`; it was refused ("expected string, got number").
        Row(
            label: "numbers and booleans in args are passed as JavaScript writes them",
            app: [
                "name": "next", "script": "node_modules/.bin/next", "args": ["--port", 3000, true, 1.5], "node_args": ["--max-old-space-size", 512],
            ],
            expected: [
                "name": "next", "script": "node_modules/next/dist/bin/next", "interpreter": "node", "exec_mode": "fork",
                "args": ["--port", "3000", "true", "1.5"], "node_args": ["--max-old-space-size", "512"],
            ]
        ),
        Row(
            label: "a symlink leaving the release is refused",
            app: ["name": "x", "script": "escape"],
            errors: ["apps[0].script: escape is a symbolic link that leaves the release tree or loops"]
        ),
        Row(
            label: "a directory is not a script",
            app: ["name": "x", "script": "api"],
            errors: ["apps[0].script: api is a directory in the artifact"]
        ),
        Row(
            label: "npm is a program on PATH (PM2's which), run with node as PM2 does for a text file",
            app: ["name": "web", "script": "npm", "args": "start", "instances": 2],
            expected: [
                "name": "web", "script": "npm", "script_source": "path", "interpreter": "node", "exec_mode": "cluster", "instances": 2,
                "args": ["start"],
            ],
            warnings: ["apps[0].script: npm is not a file of the release but a program on PATH (here /usr/bin/npm)"]
        ),
        Row(
            label: "a command with spaces runs through bash -c, and names the app",
            app: ["script": "npm run start"],
            expected: [
                "name": "npm run start", "script": "bash", "script_source": "path", "interpreter": "none", "exec_mode": "fork",
                "args": ["-c", "npm run start"],
            ],
            warnings: ["apps[0].script: \"npm run start\" runs through bash -c (a command with spaces); bash is not a file of the release"]
        ),
        Row(
            label: "neither in the artifact nor on PATH",
            app: ["name": "web", "script": "pnpm"],
            errors: ["apps[0].script: pnpm is not in the artifact, and no program pnpm is on PATH (PM2: Script not found)"]
        ),
        Row(
            label: "cwd relative to the release root; the script is found under it",
            app: ["name": "api", "cwd": "api", "script": "index.js"],
            expected: ["name": "api", "cwd": "api", "script": "api/index.js", "interpreter": "node", "exec_mode": "fork"]
        ),
        Row(
            label: "cwd: __dirname + '/api' (absolute, inside the release root)",
            app: ["name": "api", "cwd": "/srv/app/api", "script": "index.js"],
            expected: ["name": "api", "cwd": "api", "script": "api/index.js", "interpreter": "node", "exec_mode": "fork"]
        ),
        Row(
            label: "cwd outside the release",
            app: ["name": "api", "cwd": "/var/www/api", "script": "index.js"],
            errors: ["apps[0].cwd: /var/www/api is outside the release (/srv/app)"]
        ),
        Row(
            label: "cwd that is not a directory of the artifact",
            app: ["name": "api", "cwd": "web", "script": "index.js"],
            errors: ["apps[0].cwd: web is not a directory in the artifact"]
        ),
        Row(
            label: "PM2's aliases: cmd, interpreter, combine_logs, interpreterArgs, camelCase keys",
            app: [
                "name": "web", "cmd": "server.js", "interpreter": "node", "combine_logs": true, "interpreterArgs": "--max-old-space-size=512",
                "execMode": "cluster", "maxMemoryRestart": "1G", "killTimeout": "3000",
            ],
            expected: [
                "name": "web", "script": "server.js", "interpreter": "node", "exec_mode": "cluster", "merge_logs": true,
                "node_args": ["--max-old-space-size=512"], "max_memory_restart": 1_073_741_824, "kill_timeout": 3000,
            ]
        ),
        Row(
            label: "args given as one string are split as PM2 splits them",
            app: ["name": "web", "script": "server.js", "args": #"--name "my app" --port=3000 --x='a b' 'q'"#],
            expected: [
                "name": "web", "script": "server.js", "interpreter": "node", "exec_mode": "fork",
                "args": ["--name", "my app", "--port=3000", "--x='a b'", "q"],
            ]
        ),
        Row(
            label: "sizes and times with units become bytes and milliseconds",
            app: ["name": "web", "script": "server.js", "max_memory_restart": "300M", "min_uptime": "2s", "restart_delay": "500"],
            expected: [
                "name": "web", "script": "server.js", "interpreter": "node", "exec_mode": "fork", "max_memory_restart": 314_572_800,
                "min_uptime": 2000, "restart_delay": 500,
            ]
        ),
        Row(
            label: "max_restarts 0 and kill_timeout 0 fall back to PM2's defaults (its `||` alias lookup)",
            app: ["name": "web", "script": "server.js", "max_restarts": 0, "kill_timeout": 0, "autorestart": false],
            expected: ["name": "web", "script": "server.js", "interpreter": "node", "exec_mode": "fork", "autorestart": false]
        ),
        Row(
            label: "a falsy key gives way to its alias: merge_logs false, combine_logs true",
            app: ["name": "web", "script": "server.js", "merge_logs": false, "combine_logs": true],
            expected: ["name": "web", "script": "server.js", "interpreter": "node", "exec_mode": "fork", "merge_logs": true]
        ),
        Row(
            label: "what Ferry owns is dropped, one warning each, under the name the file used",
            app: [
                "name": "web", "script": "server.js", "namespace": "prod", "out_file": "/var/log/out.log", "error": "/var/log/err.log",
                "log": true, "pid": "/run/web.pid", "watch": ["src"], "ignore_watch": ["node_modules"], "username": "deploy",
            ],
            expected: ["name": "web", "script": "server.js", "interpreter": "node", "exec_mode": "fork"],
            warnings: [
                "apps[0].error: dropped: Ferry owns log paths", "apps[0].ignore_watch: dropped: watching is off",
                "apps[0].log: dropped: Ferry owns log paths", "apps[0].namespace: dropped: Ferry puts every app in its own PM2 namespace",
                "apps[0].out_file: dropped: Ferry owns log paths", "apps[0].pid: dropped: Ferry owns pid files",
                "apps[0].username: dropped: PM2 sets it", "apps[0].watch: dropped: a release tree never changes in place",
            ]
        ),
        Row(
            label: "an unknown option is ignored, as PM2 ignores it, with a suggestion",
            app: ["name": "web", "script": "server.js", "instanses": 2],
            expected: ["name": "web", "script": "server.js", "interpreter": "node", "exec_mode": "fork"],
            warnings: ["apps[0].instanses: not a PM2 option: PM2 ignores it, and so does Ferry (did you mean instances?)"]
        ),
        Row(
            label: "every type PM2 refuses is reported, all in one run",
            app: [
                "name": "web", "script": "server.js", "log_date_format": true, "exec_mode": "forked", "min_uptime": 50, "restart_delay": "soon",
            ],
            errors: [
                "apps[0].exec_mode: \"forked\": it should be", "apps[0].log_date_format: expected string, got boolean",
                "apps[0].min_uptime: the minimum is 100, got 50", "apps[0].restart_delay: expected number, got string",
            ]
        ),
        Row(
            label: "a size given as a numeric string is bytes (PM2 parses numbers before units)",
            app: ["name": "web", "script": "server.js", "max_memory_restart": "300"],
            expected: ["name": "web", "script": "server.js", "interpreter": "node", "exec_mode": "fork", "max_memory_restart": 300]
        ),
        Row(
            label: "env values become text as PM2 passes them; objects as JSON; port sets PORT",
            app: [
                "name": "web", "script": "server.js", "port": 8080,
                "env": ["N": 3000, "F": 0.5, "B": false, "Z": .null, "O": ["a": 1], "L": [1, 2]],
            ],
            expected: [
                "name": "web", "script": "server.js", "interpreter": "node", "exec_mode": "fork",
                "env": ["N": "3000", "F": "0.5", "B": "false", "Z": "null", "O": #"{"a":1}"#, "L": "[1,2]", "PORT": "8080"],
            ]
        ),
        Row(
            label: "env numbers become the text JavaScript's String() gives them",
            app: [
                "name": "web", "script": "server.js",
                "env": ["SMALL": 0.00005, "TINY": 1e-7, "BIG": 1e21, "HUGE": 1.2345678901234568e20],
            ],
            expected: [
                "name": "web", "script": "server.js", "interpreter": "node", "exec_mode": "fork",
                "env": ["SMALL": "0.00005", "TINY": "1e-7", "BIG": "1e+21", "HUGE": "123456789012345680000"],
            ]
        ),
        Row(
            label: "--env-name merges env_<name> over env; append_env_to_name renames",
            app: [
                "name": "web", "script": "server.js", "append_env_to_name": true, "env": ["A": "1", "B": "1"], "env_production": ["B": "2"],
                "env_staging": ["B": "3"],
            ],
            environment: "production",
            expected: ["name": "web-production", "script": "server.js", "interpreter": "node", "exec_mode": "fork", "env": ["A": "1", "B": "2"]]
        ),
        Row(
            label: "time sets PM2's log date format; automation false turns pmx off; disable_trace turns trace off",
            app: ["name": "web", "script": "server.js", "time": true, "automation": false, "disable_trace": true],
            expected: [
                "name": "web", "script": "server.js", "interpreter": "node", "exec_mode": "fork", "time": true,
                "log_date_format": "YYYY-MM-DDTHH:mm:ss", "automation": false, "pmx": false, "trace": false,
            ]
        ),
        Row(
            label: "execute_command forces fork mode",
            app: ["name": "web", "script": "server.js", "instances": 2, "execute_command": true],
            expected: ["name": "web", "script": "server.js", "interpreter": "node", "exec_mode": "fork", "instances": 2]
        ),
        Row(
            label: "an interpreter inside the release",
            app: ["name": "py", "script": "run.py", "interpreter": "./venv/bin/python"],
            expected: [
                "name": "py", "script": "run.py", "interpreter": "venv/bin/python", "exec_mode": "fork", "env": ["PYTHONUNBUFFERED": "1"],
            ]
        ),
        Row(
            label: "nvm's node@ interpreters are PM2 installing Node: refused",
            app: ["name": "web", "script": "server.js", "interpreter": "node@18"],
            errors: ["apps[0].interpreter: node@18: Ferry does not install Node versions through nvm"]
        ),
        Row(
            label: "a name with spaces is PM2's to allow",
            app: ["name": "my api", "script": "server.js"],
            expected: ["name": "my api", "script": "server.js", "interpreter": "node", "exec_mode": "fork"]
        ),
        Row(
            label: "\"all\" is every app to PM2",
            app: ["name": "all", "script": "server.js"],
            errors: ["apps[0].name: \"all\" means every app to PM2"]
        ),
        Row(
            label: "uid, gid and user: PM2 switches users only as root",
            app: ["name": "web", "script": "server.js", "uid": "www-data", "gid": 33],
            errors: ["apps[0].gid: Ferry runs every app as the agent's own user", "apps[0].uid: Ferry runs every app as the agent's own user"]
        ),
        Row(
            label: "autostart false would leave the app stopped",
            app: ["name": "web", "script": "server.js", "autostart": false],
            errors: ["apps[0].autostart: false would leave the app registered but stopped"]
        ),
        Row(
            label: "cron_restart is checked like PM2's croner",
            app: ["name": "web", "script": "server.js", "cron_restart": "every day"],
            errors: ["apps[0].cron_restart: \"every day\" is not a cron pattern"]
        ),
        Row(
            label: "a valid cron pattern is kept",
            app: ["name": "web", "script": "server.js", "cron": "0 3 * * *"],
            expected: ["name": "web", "script": "server.js", "interpreter": "node", "exec_mode": "fork", "cron_restart": "0 3 * * *"]
        ),
        Row(
            label: "no script at all",
            app: ["name": "web"],
            errors: ["apps[0].script: required"]
        ),
        Row(
            label: "exec_mode must be a string (PM2 crashes on anything else)",
            app: ["name": "web", "script": "server.js", "exec_mode": 1],
            errors: ["apps[0].exec_mode: must be a string"]
        ),
    ]

    @Test("normalises like PM2", arguments: rows)
    func normalises(_ row: Row) {
        let result = Self.normalize(.object(["apps": .array([.object(row.app)])]), environment: row.environment)
        let errors = result.errors.map(\.description)
        let warnings = result.warnings.map(\.description)
        #expect(errors.count == row.errors.count, "errors: \(errors)")
        for (error, expected) in zip(errors.sorted(), row.errors.sorted()) { #expect(error.hasPrefix(expected), "\(error)") }
        #expect(warnings.count == row.warnings.count, "warnings: \(warnings)")
        for (warning, expected) in zip(warnings.sorted(), row.warnings.sorted()) { #expect(warning.hasPrefix(expected), "\(warning)") }
        if let expected = row.expected {
            var wanted = expected.filter { $0.value != .null }
            // PM2's default merge_logs for fork apps without instances is kept only when the file sets it.
            if expected["merge_logs"] == .null { wanted["merge_logs"] = nil }
            #expect(result.apps.map(\.app) == [.object(wanted)])
            if let app = result.apps.first?.app {
                #expect(throws: Never.self) { try PM2App(json: app, path: "pm2.apps[0]") }
            }
        } else {
            #expect(result.apps.isEmpty)
        }
    }

    /// One `cron_restart` pattern and whether PM2 7.0.3's croner 4.1.97 parses it (each verdict checked against the real
    /// croner by `cronPatternsAsRealCroner`).
    struct CronRow: Sendable, CustomTestStringConvertible {
        var pattern: String
        var accepted: Bool
        var testDescription: String { "\(accepted ? "accepts" : "refuses") \"\(pattern)\"" }
    }

    static let cronRows: [CronRow] = [
        CronRow(pattern: "0 3 * * *", accepted: true),
        CronRow(pattern: "*/5 * * * *", accepted: true),
        CronRow(pattern: "0 0 3 * * *", accepted: true),
        CronRow(pattern: "0 3 * * MON", accepted: true),
        CronRow(pattern: "0 3 * * mon-fri", accepted: true),
        CronRow(pattern: "0 3 * jan-mar *", accepted: true),
        CronRow(pattern: "0 3 * * sun,sat", accepted: true),
        CronRow(pattern: "0 3 L * *", accepted: true),
        CronRow(pattern: "0 3 ? * *", accepted: true),
        CronRow(pattern: "0 0 * * 7", accepted: true),
        CronRow(pattern: "0-59/5 * * * *", accepted: true),
        CronRow(pattern: "30/5 * * * *", accepted: true),
        CronRow(pattern: " 0  3 * * * ", accepted: true),
        CronRow(pattern: "@daily", accepted: false),
        CronRow(pattern: "@hourly", accepted: false),
        CronRow(pattern: "0 25 * * *", accepted: false),
        CronRow(pattern: "0 24 * * *", accepted: false),
        CronRow(pattern: "0 0 3 * * * *", accepted: false),
        CronRow(pattern: "0 3 * * *  2026", accepted: false),
        CronRow(pattern: "0 3 * * MON#1", accepted: false),
        CronRow(pattern: "0 3 LW * *", accepted: false),
        CronRow(pattern: "0 3 * * MONDAY", accepted: false),
        CronRow(pattern: "0 3 1-5,10 * *", accepted: false),
        CronRow(pattern: "*/0 * * * *", accepted: false),
        CronRow(pattern: "*/61 * * * *", accepted: false),
        CronRow(pattern: "5-2 * * * *", accepted: false),
        CronRow(pattern: "0 0 32 * *", accepted: false),
        CronRow(pattern: "0 0 0 * *", accepted: false),
        CronRow(pattern: "0 0 * 13 *", accepted: false),
        CronRow(pattern: "0 0 * * 8", accepted: false),
        CronRow(pattern: "* * * *", accepted: false),
    ]

    @Test("cron_restart is refused where PM2's croner refuses it, naming apps[N].cron_restart", arguments: cronRows)
    func cronPatterns(_ row: CronRow) {
        let apps: JSONValue = [
            ["name": "ok", "script": "server.js"],
            ["name": "web", "script": "server.js", "cron_restart": .string(row.pattern)],
        ]
        let result = Self.normalize(.object(["apps": apps]))
        let errors = result.errors.map(\.description)
        if row.accepted {
            #expect(errors.isEmpty, "\(errors)")
            guard case .object(let app)? = result.apps.last?.app else {
                Issue.record("no app")
                return
            }
            #expect(app["cron_restart"] == .string(row.pattern))
        } else {
            #expect(errors.count == 1, "\(errors)")
            #expect(errors.first?.hasPrefix("apps[1].cron_restart: \"\(row.pattern)\" is not a cron pattern PM2 accepts (") == true, "\(errors)")
        }
        // The agent's check of a signed release says the same.
        let signed = PM2App(name: "web", script: "server.js", options: ["cron_restart": .string(row.pattern)])
        if row.accepted {
            #expect(throws: Never.self) { try PM2App(json: signed.json, path: "pm2.apps[0]") }
        } else {
            #expect(throws: DocumentError.self) { try PM2App(json: signed.json, path: "pm2.apps[0]") }
        }
    }

    /// The table's verdicts are the real croner's: each pattern goes through `Croner(pattern)` as PM2's
    /// `Common.sink.determineCron` calls it, with the croner PM2 7.0.3 ships.
    @Test("the cron table's verdicts are those of PM2's own croner")
    func cronPatternsAsRealCroner() throws {
        let pm2 = try #require(try Backend.pm2Binary())
        let root = URL(fileURLWithPath: pm2).resolvingSymlinksInPath().deletingLastPathComponent().appendingPathComponent("..")
            .standardizedFileURL.path
        let script = """
            const Croner = require(process.argv[1] + '/node_modules/croner');
            for (const p of JSON.parse(process.argv[2])) { try { Croner(p); console.log('ok'); } catch (e) { console.log('refused'); } }
            """
        let patterns = String(decoding: JSONValue.array(Self.cronRows.map { .string($0.pattern) }).encodedBytes(), as: UTF8.self)
        let node = Process()
        node.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        node.arguments = ["node", "-e", script, root, patterns]
        let output = Pipe()
        node.standardOutput = output
        try node.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        node.waitUntilExit()
        let verdicts = String(decoding: data, as: UTF8.self).split(separator: "\n").map { $0 == "ok" }
        #expect(verdicts.count == Self.cronRows.count)
        for (row, accepted) in zip(Self.cronRows, verdicts) {
            #expect(row.accepted == accepted, "croner \(accepted ? "accepts" : "refuses") \"\(row.pattern)\"")
            #expect((CronPattern.problem(in: row.pattern) == nil) == accepted, "\(row.pattern)")
        }
    }

    @Test("the document's shapes: {apps}, {pm2}, an array, one app; static servers refused; duplicate names")
    func documentShapes() {
        let app: JSONValue = .object(["name": "web", "script": "server.js"])
        for document in [JSONValue.object(["apps": [app]]), .object(["pm2": [app]]), .array([app]), app] {
            #expect(Self.normalize(document).apps.count == 1, "\(document)")
        }
        let withStatic = Self.normalize(.object(["apps": [app], "static": [["port": 8080]]]))
        #expect(
            withStatic.errors.map(\.description) == [
                "static: PM2's static file servers (pm2 serve) are not part of a release: serve the files from an app"
            ]
        )
        let duplicate = Self.normalize(.array([app, app]))
        #expect(duplicate.errors.map(\.description) == ["[1].name: \"web\" is also the name of [0]; app names must be unique"])
    }

    /// Documents with a duplicate app name, and the one error expected: the later app's path and the earlier one's,
    /// also when an entry before them has no name (it is not an object).
    static let duplicateNameCases: [(JSONValue, String)] = [
        (
            .object(["apps": [false, ["name": "api", "script": "server.js"], ["name": "api", "script": "server.js"]]]),
            "apps[2].name: \"api\" is also the name of apps[1]; app names must be unique"
        ),
        (
            .array(["server.js", ["name": "web", "script": "server.js"], .null, ["name": "web", "script": "server.js"]]),
            "[3].name: \"web\" is also the name of [1]; app names must be unique"
        ),
        (
            .object(["pm2": [["name": "web", "script": "server.js"], 7, ["name": "web", "script": "server.js"]]]),
            "pm2[2].name: \"web\" is also the name of pm2[0]; app names must be unique"
        ),
    ]

    @Test("a duplicate app name names both apps by their place in the file", arguments: duplicateNameCases)
    func duplicateNames(_ document: JSONValue, _ expected: String) {
        let duplicates = Self.normalize(document).errors.map(\.description).filter { $0.hasSuffix("app names must be unique") }
        #expect(duplicates == [expected])
    }

    /// What real PM2 7.0.3 gave `pm2 start eco.config.js --env production` (pm2 jlist): PM2's comment calls the deploy
    /// block the "least priority", but it is assigned into the app's own `env` object and wins over it; `env_production`
    /// wins over both, and over the `port` option, which wins over `env` only. Ferry had the deploy block under `env`,
    /// and `port` over everything.
    @Test(
        "the env layers under --env-name as real PM2 merges them",
        arguments: [
            (
                ["env": ["A": "app"], "env_production": ["B": "block"]] as JSONValue,
                ["A": "deploy", "B": "block", "C": "deploy"] as JSONValue
            ),
            (["port": 3000, "env": ["PORT": 1]], ["A": "deploy", "C": "deploy", "PORT": "3000"]),
            (["port": 3000, "env_production": ["PORT": 80]], ["A": "deploy", "C": "deploy", "PORT": "80"]),
        ] as [(JSONValue, JSONValue)]
    )
    func deployEnvironment(_ options: JSONValue, _ expected: JSONValue) {
        var app: [String: JSONValue] = ["name": "web", "script": "server.js"]
        for (key, value) in options.object ?? [:] { app[key] = value }
        let document: JSONValue = .object([
            "apps": .array([.object(app)]),
            "deploy": ["production": ["env": ["A": "deploy", "C": "deploy"]]],
        ])
        let result = Self.normalize(document, environment: "production")
        #expect(result.errors.isEmpty, "\(result.errors)")
        #expect(result.apps.first?.app.object?["env"] == expected)
    }

    @Test(
        "PM2's binary test and shebangs",
        arguments: [
            ("#!/usr/bin/env node\n", false, "node"), ("#!/bin/bash -e\n", false, "bash"), ("#!/usr/bin/env -S python3 -u\n", false, "python3"),
            ("plain text é ü", false, nil), ("\u{7F}ELF\u{0}", true, nil),
        ] as [(String, Bool, String?)]
    )
    func binaryAndShebang(_ text: String, _ binary: Bool, _ shebang: String?) {
        #expect(PM2Interpreter.isBinary(Array(text.utf8)) == binary)
        #expect(PM2Interpreter.shebangProgram(Array(text.utf8)) == shebang)
    }

    @Test("JavaScript's coercions, as PM2 relies on them")
    func javaScriptSemantics() {
        typealias JS = JavaScriptSemantics
        #expect(JS.number(.string(" 12 ")) == 12)
        #expect(JS.number(.string("")) == 0)
        #expect(JS.number(.string("0x10")) == 16)
        #expect(JS.number(.string("12px")) == nil)
        #expect(JS.number(.array([.integer(5)])) == 5)
        #expect(JS.number(.array([.integer(1), .integer(2)])) == nil)
        #expect(JS.parseFloat(.string("2.5s")) == 2.5)
        #expect(JS.parseFloat(.string("s")) == nil)
        #expect(JS.parseInt("42abc") == 42)
        #expect(JS.parseInt("four") == nil)
        #expect(JS.string(.number(1e-7)) == "1e-7")
        #expect(JS.string(.number(3000)) == "3000")
        #expect(JS.string(.number(0.00005)) == "0.00005")
        #expect(JS.string(.array([.number(1e21), .null, .integer(2)])) == "1e+21,,2")
        #expect(PM2Schema.camelCase("max_memory_restart") == "maxMemoryRestart")
        #expect(PM2Schema.byKey["node_args"]?.aliases == ["interpreter_args", "interpreterArgs", "nodeArgs"])
    }

    /// `scripts/pm2-conformance conformance/ecosystems` runs in CI; its corpus sets every option of PM2's schema.
    @Test("the conformance corpus covers every option of PM2's schema")
    func corpusCoversTheSchema() throws {
        let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../conformance/ecosystems")
            .standardizedFileURL
        let names = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { !$0.hasSuffix(".d") }
        let text = try names.map { try String(contentsOf: directory.appendingPathComponent($0), encoding: .utf8) }.joined(separator: "\n")
        func sets(_ key: String) -> Bool {
            var searchRange = text.startIndex..<text.endIndex
            while let found = text.range(of: key, range: searchRange) {
                let before = found.lowerBound == text.startIndex ? " " : text[text.index(before: found.lowerBound)]
                let after = text[found.upperBound...].drop { $0 == "\"" || $0 == "'" }.first
                if !(before.isLetter || before.isNumber || before == "_"), after == ":" { return true }
                searchRange = found.upperBound..<text.endIndex
            }
            return false
        }
        let missing = PM2Schema.options.map(\.key).filter { !sets($0) } + (sets("env_production") ? [] : ["env_<name>"])
        #expect(missing.isEmpty, "options no corpus file sets: \(missing)")
    }

    /// The table above is PM2's own: the schema of the real PM2 the tests run, key by key, type by type.
    @Test("PM2Schema is the schema.json of the real PM2 7.0.3")
    func schemaMatchesRealPM2() throws {
        let pm2 = try #require(try Backend.pm2Binary())
        let schemaPath = URL(fileURLWithPath: pm2).resolvingSymlinksInPath().deletingLastPathComponent()
            .appendingPathComponent("../lib/API/schema.json").standardizedFileURL.path
        let schema = try JSONValue.parse(Array(try Data(contentsOf: URL(fileURLWithPath: schemaPath))))
        guard case .object(let entries) = schema else { throw HarnessError("\(schemaPath) is not an object") }
        let keys = Set(entries.keys.filter { !$0.contains("\\") })
        #expect(keys == Set(PM2Schema.options.map(\.key)))
        for option in PM2Schema.options {
            guard case .object(let entry)? = entries[option.key] else { continue }
            let types: [String]
            switch entry["type"] {
            case .string(let one)?: types = [one]
            case .array(let many)?: types = many.compactMap { if case .string(let text) = $0 { text } else { nil } }
            default: types = []
            }
            #expect(types == option.types.map(\.rawValue), "\(option.key)")
            let aliases: [String]
            switch entry["alias"] {
            case .string(let one)?: aliases = [one]
            case .array(let many)?: aliases = many.compactMap { if case .string(let text) = $0 { text } else { nil } }
            default: aliases = []
            }
            #expect(aliases == option.explicitAliases, "\(option.key)")
            #expect(entry["default"] == option.defaultValue, "\(option.key)")
            #expect((entry["regex"] != nil) == (option.pattern != nil), "\(option.key)")
            if case .integer(let minimum)? = entry["min"] { #expect(option.minimum == Double(minimum), "\(option.key)") }
        }
    }
}

/// Where the real PM2 is, for the test that reads its schema.
private enum Backend {
    static func pm2Binary() throws -> String? {
        if let binary = ProcessInfo.processInfo.environment["FERRY_TEST_PM2"], !binary.isEmpty { return binary }
        let reason = "FERRY_TEST_PM2 is not set: run scripts/test (scripts/real-pm2 unpacks PM2 7.0.3) to compare with PM2's schema"
        if ProcessInfo.processInfo.environment["CI"] == "true" { throw HarnessError("CI must run real PM2: \(reason)") }
        try Test.cancel(Comment(rawValue: reason))
    }
}

private struct HarnessError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

// Literals for the tables above: an ecosystem file reads best as the JSON it is.
extension JSONValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral,
    ExpressibleByFloatLiteral, ExpressibleByBooleanLiteral, ExpressibleByArrayLiteral,
    ExpressibleByDictionaryLiteral, ExpressibleByNilLiteral
{
    package init(stringLiteral value: String) { self = .string(value) }
    package init(integerLiteral value: Int64) { self = .integer(value) }
    package init(floatLiteral value: Double) { self = .number(value) }
    package init(booleanLiteral value: Bool) { self = .bool(value) }
    package init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    package init(dictionaryLiteral elements: (String, JSONValue)...) { self = .object(Dictionary(elements, uniquingKeysWith: { _, new in new })) }
    package init(nilLiteral: ()) { self = .null }
}
