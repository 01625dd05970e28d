import Foundation
import Shared
import TestSupport
import Testing

@testable import Controller

/// The loose inputs of `publish`: ecosystem files, env files, expiry, and how they become a strict release.
@Suite struct OperatorInputTests {
    static let artifact = ArtifactReference(url: "/v1/artifacts/\(SHA256.hash([1]).hex)", sha256: SHA256.hash([1]), size: 1)

    /// An artifact holding `server.js`, `worker.js` and `a.js`, as the composer checks scripts against it.
    static let tree = ArtifactTree(entries: [
        "server.js": .init(kind: .file, mode: 0o644, head: Array("require('http')".utf8)),
        "worker.js": .init(kind: .file, mode: 0o644, head: Array("setInterval(() => {}, 1000)".utf8)),
        "a.js": .init(kind: .file, mode: 0o644, head: Array("1".utf8)),
    ])

    static func input(_ apps: [JSONValue]) -> ReleaseComposer.Input {
        ReleaseComposer.Input(
            service: "api",
            version: "1.0.0",
            serial: 4,
            artifact: artifact,
            ecosystem: .init(document: .object(["apps": .array(apps)])),
            releaseRoot: "/srv/app",
            artifactTree: tree,
            createdAt: Date(timeIntervalSince1970: 1_800_000_000),
            expiresIn: .seconds(86_400)
        )
    }

    @Test func composerAppliesPM2Coercions() throws {
        var input = Self.input([
            .object([
                "name": .string("api"), "script": .string("./server.js"), "cwd": .string("/srv/app"), "out_file": .string("/var/log/x"),
                "instances": .string("max"),
                "env": .object(["PORT": .integer(3000), "RATIO": .number(0.5), "DEBUG": .bool(false), "GONE": .null]),
                "env_production": .object(["NODE_ENV": .string("production"), "PORT": .integer(80)]),
                "env_staging": .object(["NODE_ENV": .string("staging")]),
            ]),
            .object(["name": .string("worker"), "script": .string("worker.js")]),
        ])
        input.appNames = ["api"]
        input.environmentName = "production"
        input.environment = ["REGION": "eu"]
        input.healthURL = "http://127.0.0.1:3000/healthz"
        let output = try ReleaseComposer.compose(input, which: { _ in nil })
        let app = try #require(output.release.pm2.apps.first)
        #expect(output.release.pm2.apps.count == 1)
        // PM2 passes every env value as text; null becomes "null" (mergeEnvironmentVariables stringifies objects).
        #expect(
            app.options["env"]
                == .object([
                    "PORT": .string("80"), "RATIO": .string("0.5"), "DEBUG": .string("false"), "GONE": .string("null"),
                    "NODE_ENV": .string("production"),
                ])
        )
        // "max" is PM2's 0 (one per CPU), and a node app that sets instances runs in cluster mode.
        #expect(app.options["instances"] == .integer(0))
        #expect(app.options["exec_mode"] == .string("cluster"))
        #expect(app.options["interpreter"] == .string("node"))
        #expect(app.script == "server.js")
        #expect(app.options["cwd"] == nil && app.options["env_staging"] == nil)
        #expect(output.warnings == ["apps[0].out_file: dropped: Ferry owns log paths on the instance (PM2_HOME/logs, or the supervisor's logs)"])
        #expect(output.release.env == ["REGION": "eu"])
        // Variables that only look like PM2's fields are an app's own: upper case, or not a field PM2 keeps.
        let lookalikes = ["NAME": "a", "NODE_APP_INSTANCE": "0", "port": "80", "http_proxy": "http://proxy:3128"]
        var plain = Self.input([
            .object(["name": .string("api"), "script": .string("server.js"), "env": .object(lookalikes.mapValues(JSONValue.string))])
        ])
        plain.environment = lookalikes
        let composed = try ReleaseComposer.compose(plain, which: { _ in nil })
        #expect(
            composed.release.env == lookalikes && composed.release.pm2.apps.first?.options["env"] == .object(lookalikes.mapValues(JSONValue.string))
        )
        #expect(output.release.health.http == "http://127.0.0.1:3000/healthz")
        #expect(output.release.serial == 4)
        #expect(output.release.expiresAt.timeIntervalSince(output.release.createdAt) == 86_400)
    }

    struct BadEcosystem: Sendable, CustomTestStringConvertible {
        let name: String
        let apps: [JSONValue]
        var appNames: [String] = []
        /// The release-wide environment (`--env`, `--env-file`).
        var environment: [String: String] = [:]
        /// Every message the refusal must contain (one per problem: all are reported at once).
        let messages: [String]
        var testDescription: String { name }
    }

    static let badEcosystems: [BadEcosystem] = [
        BadEcosystem(name: "no apps", apps: [], messages: ["apps: the ecosystem file has no apps"]),
        BadEcosystem(name: "app is not an object", apps: [.string("api")], messages: ["apps[0]: an app must be an object, got string"]),
        BadEcosystem(name: "app without script", apps: [.object(["name": .string("api")])], messages: ["apps[0].script: required"]),
        BadEcosystem(
            name: "unknown --app",
            apps: [.object(["name": .string("api"), "script": .string("a.js")])],
            appNames: ["web"],
            messages: ["--app: web: not in the ecosystem file (it has api)"]
        ),
        BadEcosystem(
            name: "a type PM2 refuses",
            apps: [.object(["name": .string("api"), "script": .string("a.js"), "log_date_format": .bool(true)])],
            messages: ["apps[0].log_date_format: expected string, got boolean"]
        ),
        BadEcosystem(
            name: "script neither in the artifact nor on PATH",
            apps: [.object(["name": .string("api"), "script": .string("missing.js")])],
            messages: ["apps[0].script: missing.js is not in the artifact, and no program missing.js is on PATH (PM2: Script not found)"]
        ),
        BadEcosystem(
            name: "object in an env_<name> block",
            apps: [.object(["name": .string("api"), "script": .string("a.js"), "env_production": .object(["A": .object([:])])])],
            messages: ["apps[0].env_production.A: is an object: PM2 would pass the text [object Object]"]
        ),
        BadEcosystem(
            name: "env variables PM2 copies over its process entry",
            apps: [
                .object([
                    "name": .string("api"), "script": .string("a.js"),
                    "env": .object(["name": .string("renamed"), "namespace": .string("default"), "cwd": .string("/")]),
                    "env_production": .object(["exec_mode": .string("cluster"), "PORT": .integer(80)]),
                ])
            ],
            messages: [
                "the ecosystem file has 4 problems", "apps[0].env.cwd: \"cwd\" is a field of PM2's process entry",
                "apps[0].env.exec_mode: \"exec_mode\" is a field", "apps[0].env.name: \"name\" is a field",
                "apps[0].env.namespace: \"namespace\" is a field", "rename the variable",
            ]
        ),
        // PM2 sets these variables on its process entry (`God.injectVariables`): "namespace" moved every instance to
        // namespace 0, out of Ferry's reach, "pm_id" made PM2 overwrite the entry of another app.
        BadEcosystem(
            name: "instance_var or increment_var naming a field of PM2's process entry",
            apps: [
                .object([
                    "name": .string("api"), "script": .string("a.js"), "instances": .integer(2), "instance_var": .string("namespace"),
                    "increment_var": .string("pm_id"),
                ])
            ],
            messages: [
                "apps[0].instance_var: instance_var \"namespace\" names a field of PM2's process entry",
                "apps[0].increment_var: increment_var \"pm_id\" names a field", "name an env variable, such as NODE_APP_INSTANCE or PORT",
            ]
        ),
        BadEcosystem(
            name: "a release-wide --env naming a field of PM2's process entry",
            apps: [.object(["name": .string("api"), "script": .string("a.js")])],
            environment: ["instances": "4", "REGION": "eu"],
            messages: ["--env instances: \"instances\" is a field of PM2's process entry"]
        ),
        BadEcosystem(
            name: "three problems, all in one run",
            apps: [
                .object(["name": .string("api"), "script": .string("a.js"), "exec_mode": .string("forked"), "min_uptime": .integer(50)]),
                .object(["name": .string("api"), "script": .string("server.js")]),
            ],
            messages: [
                "the ecosystem file has 3 problems", "apps[0].exec_mode: \"forked\"", "apps[0].min_uptime: the minimum is 100, got 50",
                "apps[1].name: \"api\" is also the name of apps[0]",
            ]
        ),
    ]

    @Test(arguments: badEcosystems)
    func badEcosystemsAreRefusedBeforeAnythingIsUploaded(_ bad: BadEcosystem) {
        var input = Self.input(bad.apps)
        input.appNames = bad.appNames
        input.environment = bad.environment
        input.environmentName = "production"
        do {
            _ = try ReleaseComposer.compose(input, which: { _ in nil })
            Issue.record("composed a release from \(bad.name)")
        } catch {
            for message in bad.messages { #expect("\(error)".contains(message), "\(error)") }
        }
    }

    @Test func ecosystemFilesInEveryFormat() async throws {
        try await TestPaths.withTemporaryDirectory { directory in
            let files: [(String, String)] = [
                ("ecosystem.config.js", "module.exports = { apps: [{ name: 'api', script: 'server.js', instances: 2 }] }"),
                ("ecosystem.config.cjs", "module.exports = () => ({ apps: [{ name: 'api', script: 'server.js', instances: 2 }] })"),
                ("ecosystem.json", #"{"apps": [{"name": "api", "script": "server.js", "instances": 2}]}"#),
                ("ecosystem.yml", "apps:\n  - name: api\n    script: server.js\n    instances: 2\n"),
                ("single.json", #"{"name": "api", "script": "server.js", "instances": 2}"#),
                ("list.yaml", "- name: api\n  script: server.js\n  instances: 2\n"),
            ]
            let app: JSONValue = .object(["name": .string("api"), "script": .string("server.js"), "instances": .integer(2)])
            for (name, text) in files {
                let path = directory.appendingPathComponent(name).path
                try Data(text.utf8).write(to: URL(fileURLWithPath: path))
                let document = try await EcosystemReader.evaluate(at: path).document
                let normalised = EcosystemNormalizer(configuration: .init(releaseRoot: directory.path)).normalize(document)
                #expect(normalised.errors.isEmpty && normalised.apps.map(\.app).count == 1, "\(name): \(normalised.problems)")
                #expect(document == app || document == .object(["apps": .array([app])]) || document == .array([app]), "\(name)")
            }
            // A file that prints as it loads (a console.log, dotenv 17's "injecting env" line on stdout, a required
            // module's banner, an ES module): read as PM2 reads it, whatever it printed.
            let chatty: [(String, String)] = [
                (
                    "chatty.config.js",
                    "console.log('[dotenv@17.2.0] injecting env (3) from .env');\nprocess.stdout.write('{\"not\": \"the result\"}\\n');\n"
                        + "module.exports = { apps: [{ name: 'api', script: 'server.js', instances: 2 }] };\nconsole.log('loaded');\n"
                ),
                (
                    "chatty.config.mjs",
                    "console.info('building apps');\nexport default { apps: [{ name: 'api', script: 'server.js', instances: 2 }] };\n"
                ),
            ]
            for (name, text) in chatty {
                let path = directory.appendingPathComponent(name).path
                try Data(text.utf8).write(to: URL(fileURLWithPath: path))
                #expect(try await EcosystemReader.evaluate(at: path).document == .object(["apps": .array([app])]), "\(name)")
            }
            // A relative path, as operators type it: node runs in the file's directory and still finds it.
            let depth = FileManager.default.currentDirectoryPath.split(separator: "/").count
            let relative = String(repeating: "../", count: depth) + directory.appendingPathComponent("ecosystem.config.js").path.dropFirst()
            #expect(try await EcosystemReader.evaluate(at: relative).document == .object(["apps": .array([app])]))
            let broken = directory.appendingPathComponent("broken.config.js").path
            try Data("module.exports = {".utf8).write(to: URL(fileURLWithPath: broken))
            await #expect {
                _ = try await EcosystemReader.evaluate(at: broken)
            } throws: { error in
                "\(error)".contains("exited with status 1") && "\(error)".contains("SyntaxError")
            }
            let text = directory.appendingPathComponent("ecosystem.txt").path
            try Data("apps".utf8).write(to: URL(fileURLWithPath: text))
            await #expect(throws: ConfigurationError.self) { _ = try await EcosystemReader.evaluate(at: text) }
        }
    }

    /// A file that spreads `...process.env` gets nothing of the publisher's environment but what `--pass-env` names,
    /// and publish says what the file read.
    @Test func theEcosystemFileSeesOnlyPassedVariables() async throws {
        try await TestPaths.withTemporaryDirectory { directory in
            let path = directory.appendingPathComponent("ecosystem.config.js").path
            try Data(
                """
                module.exports = { apps: [{ name: 'api', script: 'server.js',
                  env: { ...process.env, API_URL: process.env.API_URL, MISSING: process.env.NOT_PASSED || 'default' } }] };
                """.utf8
            ).write(to: URL(fileURLWithPath: path))
            var host = ProcessInfo.processInfo.environment
            host["FERRY_TOKEN"] = "fyt_operator-secret"
            host["AWS_SECRET_ACCESS_KEY"] = "ci-secret"
            host["API_URL"] = "https://api.example.invalid"
            host["NOT_PASSED"] = "publisher-only"
            let evaluation = try await EcosystemReader.evaluate(at: path, passEnvironment: ["API_URL"], hostEnvironment: host)
            #expect(Set(evaluation.environment.keys) == ["API_URL", "PATH", "HOME"])
            #expect(evaluation.enumeratedEnvironment)
            #expect(evaluation.readVariables.contains("NOT_PASSED") && evaluation.readVariables.contains("API_URL"))
            let report = try #require(evaluation.readReport)
            #expect(report.contains("enumerated process.env"))
            #expect(report.contains("read API_URL (passed with --pass-env)"))
            #expect(report.contains("NOT_PASSED"), "\(report)")

            var input = Self.input([])
            input.ecosystem = evaluation
            input.releaseRoot = directory.path
            input.passedEnvironment = ["API_URL"]
            let output = try ReleaseComposer.compose(input, which: { _ in nil })
            let env = try #require(output.release.pm2.apps.first?.options["env"])
            #expect(env == .object(["API_URL": .string("https://api.example.invalid"), "MISSING": .string("default")]))
            let payload = String(decoding: output.release.payload(), as: UTF8.self)
            for secret in ["fyt_operator-secret", "ci-secret", "publisher-only"] { #expect(!payload.contains(secret)) }
            #expect(output.warnings.contains { $0.hasPrefix("apps[0].env.PATH: dropped: it is the publishing machine's own PATH") })
            #expect(output.warnings.contains { $0.hasPrefix("apps[0].env.HOME: dropped") })
        }
    }

    @Test func aJSONFileWithCommentsIsReadAsPM2ReadsIt() async throws {
        try await TestPaths.withTemporaryDirectory { directory in
            let path = directory.appendingPathComponent("ecosystem.json").path
            try Data("// PM2 evaluates .json as JavaScript\n{ apps: [ { name: 'api', script: 'server.js', }, ], /* trailing */ }\n".utf8)
                .write(to: URL(fileURLWithPath: path))
            let evaluation = try await EcosystemReader.evaluate(at: path)
            #expect(evaluation.document == .object(["apps": .array([.object(["name": .string("api"), "script": .string("server.js")])])]))
            try Data("{ apps: [ { name: 'api' ".utf8).write(to: URL(fileURLWithPath: path))
            await #expect {
                _ = try await EcosystemReader.evaluate(at: path)
            } throws: { error in
                "\(error)".contains("not strict JSON") && "\(error)".contains("as PM2 reads it")
            }
        }
    }

    @Test func environmentFiles() throws {
        // The dialect is Shared's DotEnvFile (SharedTests/DotEnvFileTests walks it); this is what publish read before.
        let parsed = try DotEnvFile.parse(
            Array(
                """
                # comment
                export A=1
                B = two words # trailing comment
                C='single # kept'
                D="line\\nbreak"

                E=
                """.utf8
            ),
            path: "test.env"
        )
        #expect(parsed == ["A": "1", "B": "two words", "C": "single # kept", "D": "line\nbreak", "E": ""])
        #expect(throws: DotEnvFileError(path: "bad.env", line: 1, problem: .invalidName(column: 1, character: "1"))) {
            try DotEnvFile.parse(Array("1BAD=x".utf8), path: "bad.env")
        }
        #expect(throws: DotEnvFileError(path: "bad.env", line: 1, problem: .expectedAssignment)) {
            try DotEnvFile.parse(Array("NOEQUALS".utf8), path: "bad.env")
        }
        #expect(try ReleaseEnvironment.pair("K=a=b", source: "--env") == ("K", "a=b"))
    }

    /// `--env` errors say what is wrong and never quote the argument: without its `KEY=` it is the secret alone.
    @Test func anEnvFlagErrorNeverShowsItsText() {
        let secret = "hunter2-s3cr3t"
        let rows: [(text: String, message: String)] = [
            (secret, "--env: expected KEY=VALUE (the text is not shown: it may be a secret)"),
            (
                "export DB_PASSWORD=\(secret)",
                "--env: the variable name has a blank at column 7 (a name is letters, digits and _, not starting with a digit)"
            ),
            ("DB-PASS=\(secret)", "--env: the variable name has \"-\" at column 3 (a name is letters, digits and _, not starting with a digit)"),
            ("=\(secret)", "--env: no variable name before = (a name is letters, digits and _, not starting with a digit)"),
            ("\(secret)=", "--env: the variable name has \"-\" at column 8 (a name is letters, digits and _, not starting with a digit)"),
        ]
        for row in rows {
            #expect {
                try ReleaseEnvironment.pair(row.text, source: "--env")
            } throws: { error in
                "\(error)" == row.message && !"\(error)".contains(secret)
            }
        }
    }

    @Test func anEnvFileIsReadInTheSharedDialectAndEnvFlagsWin() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-env-file") { directory in
            let artifact = try await CommandLineEndToEndTests.makeArtifact(in: directory, version: "1.0.0")
            let ecosystem = directory.appendingPathComponent("ecosystem.yaml")
            try Data("apps:\n  - name: api\n    script: server.js\n".utf8).write(to: ecosystem)
            let envFile = directory.appendingPathComponent("release.env")
            try Data("\u{FEFF}# release\r\nexport NODE_ENV = production # always\r\nGREETING=\"hello\\nworld\"\r\nREGION=us-east-1\r\n".utf8)
                .write(to: envFile)
            func options(envFile: String) throws -> ReleaseOptions {
                try ReleaseOptions.parse([
                    "--service", "api", "--version", "1.0.0", "--artifact", artifact.path, "--ecosystem", ecosystem.path,
                    "--env-file", envFile, "--env", "REGION=eu-west-1",
                ])
            }
            let input = try await options(envFile: envFile.path).composeInput()
            #expect(input.environment == ["NODE_ENV": "production", "GREETING": "hello\nworld", "REGION": "eu-west-1"])

            // A name set twice used to mean "the last one"; it is now an error naming both lines, as on the agent.
            try Data("A=1\nB=2\nA=3\n".utf8).write(to: envFile)
            await #expect(throws: DotEnvFileError(path: envFile.path, line: 3, problem: .duplicate(name: "A", firstLine: 1))) {
                try await options(envFile: envFile.path).composeInput()
            }
            let absent = directory.appendingPathComponent("absent.env").path
            await #expect(throws: DotEnvFileError(path: absent, line: nil, problem: .missing)) {
                try await options(envFile: absent).composeInput()
            }

            // A pipe, as `--env-file <(sops -d release.env)` gives: read to its end.
            let fifo = directory.appendingPathComponent("piped.env").path
            #expect(mkfifo(fifo, 0o600) == 0)
            let writer = try SpawnedProcess(executable: "/bin/sh", arguments: ["-c", "printf 'FROM_PIPE=yes\\n' > \"$0\"", fifo])
            #expect(try ReleaseEnvironment.read(envFile: fifo) == ["FROM_PIPE": "yes"])
            writer.waitUntilExit()
        }
    }

    @Test func expiryDurations() throws {
        #expect(try ExpiryText.parse("90d") == .seconds(90 * 86_400))
        #expect(try ExpiryText.parse("12h") == .seconds(12 * 3_600))
        #expect(try ExpiryText.parse("30m") == .seconds(1_800))
        for bad in ["", "90", "0d", "-1d", "1w", "99999d", "d"] {
            #expect(throws: ConfigurationError.self, "\(bad)") { try ExpiryText.parse(bad) }
        }
    }

    @Test func commandLinesParse() throws {
        let publish = try #require(
            try ControllerCommand.parseAsRoot([
                "publish", "--service", "api", "--version", "1.2.3", "--artifact", "a.tgz", "--ecosystem", "e.js", "--app", "api", "--app", "worker",
                "--env", "A=1", "--env", "B=2", "--env-name", "production", "--key", "a.key", "--key", "b.key",
            ]) as? PublishCommand
        )
        #expect(publish.release.app == ["api", "worker"])
        #expect(publish.release.env == ["A=1", "B=2"])
        #expect(try publish.signing.keyPaths(environment: [:]) == ["a.key", "b.key"])
        #expect(publish.release.expiresIn == "90d")
        #expect(throws: (any Error).self) {
            try ControllerCommand.parseAsRoot(["publish", "--service", "Bad", "--version", "1", "--artifact", "a", "--ecosystem", "e"])
        }
        #expect(throws: (any Error).self) { try ControllerCommand.parseAsRoot(["rollback", "--service", "api"]) }
        #expect(throws: (any Error).self) {
            try ControllerCommand.parseAsRoot(["rollback", "--service", "api", "--to-serial", "1", "--to-version", "1"])
        }
        let status = try #require(try ControllerCommand.parseAsRoot(["status", "--service", "api", "--json"]) as? FleetStatusCommand)
        #expect(status.json && status.service == "api")
        let options = status.controller
        let client = try options.client(environment: ["FERRY_CONTROLLER_URL": "http://127.0.0.1:1/", "FERRY_TOKEN": "fyt_x"])
        #expect(client.baseURL == "http://127.0.0.1:1")
        #expect(throws: (any Error).self) { try options.client(environment: ["FERRY_TOKEN": "t"]) }
        #expect(throws: (any Error).self) { try options.client(environment: ["FERRY_CONTROLLER_URL": "ftp://x", "FERRY_TOKEN": "t"]) }
        let keys = try SigningKeyOptions.parse([])
        #expect(try keys.keyPaths(environment: ["FERRY_KEY": "a.key, b.key"]) == ["a.key", "b.key"])
    }

    /// The token from a file (`--token-file`, `FERRY_TOKEN_FILE`), so it is on no command line: its first line, trimmed;
    /// a flag before the environment; both flags, a missing, empty or oversized file refused with the file named and
    /// its text never quoted.
    @Test func theTokenComesFromAFileWithoutBeingQuoted() throws {
        let directory = try TestPaths.makeTemporaryDirectory("ferry-token-file")
        defer { try? FileManager.default.removeItem(at: directory) }
        func file(_ name: String, _ text: String) throws -> String {
            let path = directory.appendingPathComponent(name).path
            try Data(text.utf8).write(to: URL(fileURLWithPath: path))
            return path
        }
        let crlf = try file("crlf", "fyt_from-file\r\nsecond line\n")
        let other = try file("other", "fyt_from-environment-file\n")
        let blank = try file("blank", "  \n")
        let secret = "fyt_secret-that-must-not-leak"
        let large = try file("large", secret + String(repeating: "x", count: ControllerOptions.maximumTokenFileBytes))
        let long = try file("long", "fyt_first-line\n" + String(repeating: "x", count: 2 * ControllerOptions.maximumTokenFileBytes))
        let fifo = directory.appendingPathComponent("fifo").path
        #expect(mkfifo(fifo, 0o600) == 0)
        let missing = directory.appendingPathComponent("missing").path
        let url = ["FERRY_CONTROLLER_URL": "http://127.0.0.1:1/"]
        struct Accepted {
            var arguments: [String]
            var environment: [String: String]
            var token: String
        }
        let accepted = [
            Accepted(arguments: ["--token-file", crlf], environment: [:], token: "fyt_from-file"),
            Accepted(arguments: ["--token-file", crlf], environment: ["FERRY_TOKEN": "fyt_env", "FERRY_TOKEN_FILE": other], token: "fyt_from-file"),
            Accepted(arguments: [], environment: ["FERRY_TOKEN_FILE": other], token: "fyt_from-environment-file"),
            Accepted(arguments: [], environment: ["FERRY_TOKEN": "fyt_env", "FERRY_TOKEN_FILE": other], token: "fyt_env"),
            Accepted(arguments: ["--token", "fyt_flag"], environment: ["FERRY_TOKEN_FILE": other], token: "fyt_flag"),
            // Only the first line is read: what follows it (however long) is not.
            Accepted(arguments: ["--token-file", long], environment: [:], token: "fyt_first-line"),
        ]
        for row in accepted {
            let client = try ControllerOptions.parse(row.arguments).client(environment: url.merging(row.environment) { $1 })
            #expect(client.token == row.token, "\(row.arguments) \(row.environment)")
        }
        let refused: [(arguments: [String], environment: [String: String], message: String)] = [
            (["--token", "fyt_a", "--token-file", crlf], [:], "give --token or --token-file, not both"),
            (["--token-file", missing], [:], "--token-file \(missing): No such file or directory"),
            (["--token-file", blank], [:], "the API token given with --token-file \(blank) is empty"),
            (["--token-file", large], [:], "--token-file \(large): over 65536 bytes, not a token file (its text is not shown)"),
            (["--token-file", secret], [:], "--token-file takes a file's path, and the value given looks like a token itself (not shown)"),
            ([], ["FERRY_TOKEN_FILE": secret], "FERRY_TOKEN_FILE takes a file's path, and the value given looks like a token itself"),
            (["--token-file", directory.path], [:], "not a regular file or a pipe"),
            // A FIFO nobody writes to reads as empty at once (it used to be waited on for good).
            (["--token-file", fifo], [:], "is empty"),
            ([], ["FERRY_TOKEN_FILE": missing], "FERRY_TOKEN_FILE \(missing): No such file or directory"),
            ([], [:], "give an API token with --token-file FILE"),
        ]
        for row in refused {
            do {
                _ = try ControllerOptions.parse(row.arguments).client(environment: url.merging(row.environment) { $1 })
                Issue.record("\(row.arguments) \(row.environment): accepted")
            } catch {
                let text = ControllerCommand.fullMessage(for: error)
                #expect(text.contains(row.message), "\(text)")
                #expect(!text.contains(secret), "\(text)")
            }
        }
    }

    /// `FERRY_KEY` holding the private key itself (a CI secret pasted whole) is used as the key; key text that is not a
    /// usable key, or pasted into `--key`, is refused without quoting it (it used to be read as a path, and "no such
    /// file" printed the whole private key into the build log).
    @Test func aKeyGivenAsTextIsUsedOrRefusedWithoutQuotingIt() throws {
        let key = try SigningKey.generate()
        let pem = try key.pemRepresentation()
        let fromEnvironment = try SigningKeyOptions.parse([]).keys(environment: ["FERRY_KEY": pem])
        #expect(fromEnvironment.map(\.publicKey.keyID) == [key.publicKey.keyID])

        let secret = "c2VjcmV0LWtleS1tYXRlcmlhbC10aGF0LW11c3Qtbm90LWxlYWs"
        let body = pem.split(separator: "\n")[1]
        let cases: [(label: String, options: [String], environment: [String: String], leaks: [Substring])] = [
            ("a damaged key in FERRY_KEY", [], ["FERRY_KEY": "-----BEGIN PRIVATE KEY-----\n\(secret)\n-----END PRIVATE KEY-----\n"], [secret[...]]),
            ("a key pasted into --key", ["--key", pem], [:], [body]),
            ("a key pasted into --key=", ["--key=\(pem)"], [:], [body]),
            ("two lines in --key", ["--key", "\(secret)\nmore"], [:], [secret[...]]),
        ]
        for (label, arguments, environment, leaks) in cases {
            do {
                _ = try SigningKeyOptions.parse(arguments).keys(environment: environment)
                Issue.record("\(label): accepted")
            } catch {
                // As `ferry-controller` prints it.
                let text = ControllerCommand.withoutKeyText(ControllerCommand.fullMessage(for: error))
                #expect(leaks.allSatisfy { !text.contains($0) } && !text.contains("BEGIN"), "\(label): \(text)")
                #expect(text.contains("not shown"), "\(label): \(text)")
            }
        }
    }

    /// Flags win over the environment (`FERRY_TRUST_ROOT` exported as the README says, `--trusted-key` on the command
    /// line): it was refused as "not both". Both flags, or both variables, still are.
    @Test func flagsWinOverTheEnvironment() async throws {
        let rootKey = try SigningKey.generate()
        let ciKey = try SigningKey.generate()
        try await TestPaths.withTemporaryDirectory("operator-trust-env") { directory in
            let root = directory.appendingPathComponent("root-1.json").path
            let ci = directory.appendingPathComponent("ci.pub").path
            try TestRoots.root(version: 1, rootKeys: [rootKey], releaseKeys: [ciKey], signers: [rootKey]).encoded().write(
                to: URL(fileURLWithPath: root)
            )
            try KeyFile.create(ci, contents: try ciKey.publicKey.pemRepresentation(), mode: 0o644)
            let byFlag = try OperatorTrustOptions.parse(["--trusted-key", ci]).pinned(for: "approve", environment: ["FERRY_TRUST_ROOT": root])
            #expect(byFlag.isFromTrustedKeys && byFlag.root.releaseRole.keyIDs == [ciKey.publicKey.keyID])
            let byRoot = try OperatorTrustOptions.parse(["--trust-root", root]).pinned(for: "approve", environment: ["FERRY_TRUSTED_KEYS": ci])
            #expect(!byRoot.isFromTrustedKeys && byRoot.version == 1)
            let fromEnvironment = try OperatorTrustOptions.parse([]).pinned(for: "approve", environment: ["FERRY_TRUST_ROOT": root])
            #expect(!fromEnvironment.isFromTrustedKeys)
            #expect(throws: (any Error).self) { try OperatorTrustOptions.parse(["--trust-root", root, "--trusted-key", ci]).pinned(for: "approve") }
            #expect(throws: (any Error).self) {
                try OperatorTrustOptions.parse([]).pinned(for: "approve", environment: ["FERRY_TRUST_ROOT": root, "FERRY_TRUSTED_KEYS": ci])
            }
        }
    }

}
