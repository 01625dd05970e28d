import Foundation
import Shared
import TestSupport
import Testing

@testable import Controller

/// The loose inputs of `publish`: ecosystem files, env files, expiry, and how they become a strict release.
@Suite struct OperatorInputTests {
    static let artifact = ArtifactReference(url: "/v1/artifacts/\(SHA256.hash([1]).hex)", sha256: SHA256.hash([1]), size: 1)

    static func input(_ apps: [JSONValue]) -> ReleaseComposer.Input {
        ReleaseComposer.Input(
            service: "api",
            version: "1.0.0",
            serial: 4,
            artifact: artifact,
            apps: apps,
            createdAt: Date(timeIntervalSince1970: 1_800_000_000),
            expiresIn: .seconds(86_400)
        )
    }

    @Test func composerAppliesPM2Coercions() throws {
        var input = Self.input([
            .object([
                "name": .string("api"), "script": .string("./server.js"), "cwd": .string("/srv"), "out_file": .string("/var/log/x"),
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
        let output = try ReleaseComposer.compose(input)
        let app = try #require(output.release.pm2.apps.first)
        #expect(output.release.pm2.apps.count == 1)
        #expect(
            app.options["env"]
                == .object(["PORT": .string("80"), "RATIO": .string("0.5"), "DEBUG": .string("false"), "NODE_ENV": .string("production")])
        )
        #expect(app.options["instances"] == .string("max"))
        #expect(app.options["cwd"] == nil && app.options["env_staging"] == nil)
        #expect(
            output.warnings == ["app api: dropped cwd (Ferry sets it on the instance)", "app api: dropped out_file (Ferry sets it on the instance)"]
        )
        #expect(output.release.env == ["REGION": "eu"])
        #expect(output.release.health.http == "http://127.0.0.1:3000/healthz")
        #expect(output.release.serial == 4)
        #expect(output.release.expiresAt.timeIntervalSince(output.release.createdAt) == 86_400)
    }

    struct BadEcosystem: Sendable, CustomTestStringConvertible {
        let name: String
        let apps: [JSONValue]
        var appNames: [String] = []
        let message: String
        var testDescription: String { name }
    }

    static let badEcosystems: [BadEcosystem] = [
        BadEcosystem(name: "no apps", apps: [], message: "has no apps"),
        BadEcosystem(name: "app is not an object", apps: [.string("api")], message: "apps[0]: an app must be an object"),
        BadEcosystem(name: "app without name", apps: [.object(["script": .string("a.js")])], message: "needs a string \"name\""),
        BadEcosystem(
            name: "unknown --app",
            apps: [.object(["name": .string("api"), "script": .string("a.js")])],
            appNames: ["web"],
            message: "--app web: not in the ecosystem file (it has api)"
        ),
        BadEcosystem(
            name: "typo in an option",
            apps: [.object(["name": .string("api"), "script": .string("a.js"), "instanses": .integer(2)])],
            message: "pm2.apps[0].instanses: unknown field"
        ),
        BadEcosystem(
            name: "absolute script",
            apps: [.object(["name": .string("api"), "script": .string("/usr/bin/node")])],
            message: "must be relative to the release root"
        ),
        BadEcosystem(
            name: "object in env",
            apps: [.object(["name": .string("api"), "script": .string("a.js"), "env": .object(["A": .object([:])])])],
            message: "env.A is an object"
        ),
    ]

    @Test(arguments: badEcosystems)
    func badEcosystemsAreRefusedBeforeAnythingIsUploaded(_ bad: BadEcosystem) {
        var input = Self.input(bad.apps)
        input.appNames = bad.appNames
        do {
            _ = try ReleaseComposer.compose(input)
            Issue.record("composed a release from \(bad.name)")
        } catch {
            #expect("\(error)".contains(bad.message), "\(error)")
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
            let expected: [JSONValue] = [.object(["name": .string("api"), "script": .string("server.js"), "instances": .integer(2)])]
            for (name, text) in files {
                let path = directory.appendingPathComponent(name).path
                try Data(text.utf8).write(to: URL(fileURLWithPath: path))
                #expect(try await EcosystemFile.apps(at: path) == expected, "\(name)")
            }
            let broken = directory.appendingPathComponent("broken.config.js").path
            try Data("module.exports = {".utf8).write(to: URL(fileURLWithPath: broken))
            await #expect {
                _ = try await EcosystemFile.apps(at: broken)
            } throws: { error in
                "\(error)".contains("exited with status 1") && "\(error)".contains("SyntaxError")
            }
            let text = directory.appendingPathComponent("ecosystem.txt").path
            try Data("apps".utf8).write(to: URL(fileURLWithPath: text))
            await #expect(throws: ConfigurationError.self) { _ = try await EcosystemFile.apps(at: text) }
        }
    }

    @Test func environmentFiles() throws {
        let parsed = try EnvironmentFile.parse(
            """
            # comment
            export A=1
            B = two words # trailing comment
            C='single # kept'
            D="line\\nbreak"

            E=
            """,
            path: "test.env"
        )
        #expect(parsed == ["A": "1", "B": "two words", "C": "single # kept", "D": "line\nbreak", "E": ""])
        #expect(throws: ConfigurationError.self) { try EnvironmentFile.parse("1BAD=x", path: "bad.env") }
        #expect(throws: ConfigurationError.self) { try EnvironmentFile.parse("NOEQUALS", path: "bad.env") }
        #expect(try EnvironmentFile.pair("K=a=b", source: "--env") == ("K", "a=b"))
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
        let status = try #require(try ControllerCommand.parseAsRoot(["status", "--service", "api", "--json"]) as? StatusCommand)
        #expect(status.json && status.service == "api")
        let options = status.controller
        let client = try options.client(environment: ["FERRY_CONTROLLER_URL": "http://127.0.0.1:1/", "FERRY_TOKEN": "fyt_x"])
        #expect(client.baseURL == "http://127.0.0.1:1")
        #expect(throws: (any Error).self) { try options.client(environment: ["FERRY_TOKEN": "t"]) }
        #expect(throws: (any Error).self) { try options.client(environment: ["FERRY_CONTROLLER_URL": "ftp://x", "FERRY_TOKEN": "t"]) }
        let keys = try SigningKeyOptions.parse([])
        #expect(try keys.keyPaths(environment: ["FERRY_KEY": "a.key, b.key"]) == ["a.key", "b.key"])
    }
}
