import ArgumentParser
import Foundation
import Shared
import TestSupport
import Testing

@testable import Controller

/// `ferry-controller token create|list|revoke` and `agents remove`: parsing, and the built binary against a running
/// server.
@Suite struct TokenCommandTests {
    typealias CLI = CommandLineEndToEndTests

    /// Refused `token create` arguments, each with the message that says why.
    static let refusedCreations: [(arguments: [String], message: String)] = [
        (["--role", "enroll"], "an enroll token needs a scope: --service NAME (repeatable) for the services it may enroll, or --any-service"),
        (["--role", "enroll", "--service", "api", "--any-service"], "give --service or --any-service, not both"),
        (["--role", "enroll", "--service", "API"], "--service API must match"),
        (["--role", "operator", "--service", "api"], "--service, --any-service and --max-uses are for enroll tokens only"),
        (["--role", "viewer", "--any-service"], "--service, --any-service and --max-uses are for enroll tokens only"),
        (["--role", "operator", "--max-uses", "3"], "--service, --any-service and --max-uses are for enroll tokens only"),
        (["--role", "enroll", "--any-service", "--max-uses", "0"], "--max-uses must be from 1 to 1000000"),
        (["--role", "enroll", "--any-service", "--expires", "7"], "--expires"),
        (["--role", "viewer", "--expires", "99999999999999999d"], "longer than ten years"),
        (["--role", "agent"], "--role must be one of operator, enroll, viewer"),
    ]

    @Test func refusedCreationsNameTheProblem() {
        for (arguments, message) in Self.refusedCreations {
            do {
                _ = try ControllerCommand.parseAsRoot(["token", "create", "--data-dir", "/nonexistent"] + arguments)
                Issue.record("accepted \(arguments)")
            } catch {
                let text = ControllerCommand.message(for: error)
                #expect(text.contains(message), "\(arguments): \(text)")
            }
        }
    }

    @Test func creationsThatParse() throws {
        let scoped = try #require(
            try ControllerCommand.parseAsRoot(["token", "create", "--role", "enroll", "--service", "api", "--service", "worker", "--max-uses", "5"])
                as? TokenCreateCommand
        )
        #expect(scoped.service == ["api", "worker"] && scoped.maxUses == 5 && !scoped.anyService)
        let any = try #require(try ControllerCommand.parseAsRoot(["token", "create", "--role", "enroll", "--any-service"]) as? TokenCreateCommand)
        #expect(any.anyService)
        let expiring = try #require(
            try ControllerCommand.parseAsRoot(["token", "create", "--role", "viewer", "--expires", "12h"]) as? TokenCreateCommand
        )
        #expect(expiring.expires == "12h")
        // `agents` alone still lists (the default subcommand), `agents remove NAME` removes.
        #expect(try ControllerCommand.parseAsRoot(["agents", "--json"]) is AgentsListCommand)
        let remove = try #require(try ControllerCommand.parseAsRoot(["agents", "remove", "web-1"]) as? AgentsRemoveCommand)
        #expect(remove.name == "web-1")
    }

    @Test func revokeResolvesIdsAndNamesAndRefusesAmbiguity() throws {
        let now = Date()
        let tokens = [
            TokenRecord(id: "tok_00000000000000a1", name: "ci", role: .operator, createdAt: now),
            TokenRecord(id: "tok_00000000000000a2", name: "ci", role: .operator, createdAt: now),
            TokenRecord(id: "tok_00000000000000b1", name: "old", role: .viewer, createdAt: now, revokedAt: now),
            TokenRecord(id: "tok_00000000000000c1", name: "dash", role: .viewer, createdAt: now),
        ]
        #expect(try TokenRevokeCommand.resolve("tok_00000000000000a2", in: tokens).id == "tok_00000000000000a2")
        #expect(try TokenRevokeCommand.resolve("dash", in: tokens).id == "tok_00000000000000c1")
        let refusals: [(String, String)] = [
            ("ci", "2 tokens are named ci: tok_00000000000000a1, tok_00000000000000a2; revoke one by its id"),
            ("old", "token old was already revoked"),
            ("tok_00000000000000b1", "token tok_00000000000000b1 was already revoked"),
            ("nobody", "no token has the id or name nobody"),
        ]
        for (selector, message) in refusals {
            let error = #expect(throws: CLIError.self) { try TokenRevokeCommand.resolve(selector, in: tokens) }
            #expect(error?.description.contains(message) == true, "\(selector): \(error?.description ?? "")")
        }
    }

    /// The token commands open the store `serve` opens with the same config file: its data directory (relative to the
    /// file), its PostgreSQL URL, and its CA file, so the database password is not sent to a server checked against
    /// nothing (they read `--data-dir` and `--database` only, and a `databaseCAFile` was ignored). The environment wins
    /// over the file and the flags over both, as for `serve`; a setting only `serve` uses is not read.
    @Test func theServersConfigFileNamesTheStore() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-token-config") { directory in
            let ca = directory.appendingPathComponent("db-ca.pem")
            try Data("-----BEGIN CERTIFICATE-----\n".utf8).write(to: ca)
            let postgresFile = directory.appendingPathComponent("controller.yml")
            try "database: postgres://ferry@db.internal:5432/ferry\ndatabaseCAFile: db-ca.pem\ndataDir: data\n".write(
                to: postgresFile,
                atomically: true,
                encoding: .utf8
            )
            let list = try #require(try ControllerCommand.parseAsRoot(["token", "list", "--config", postgresFile.path]) as? TokenListCommand)
            let settings = try list.data.storeSettings(environment: ["FERRY_POLL_SECONDS": "not a number"])
            guard case .postgres(let postgres) = try settings.databaseSelection() else {
                Issue.record("the file's database was not chosen: \(settings)")
                return
            }
            #expect(postgres.host == "db.internal" && postgres.caFile == ca.path && postgres.tls == .verifyFull)
            #expect(try list.data.namesTheDatabase(environment: [:]))
            // FERRY_CONFIG when there is no --config; the environment over the file; the flags over both.
            let bare = try #require(try ControllerCommand.parseAsRoot(["token", "list"]) as? TokenListCommand)
            #expect(try bare.data.storeSettings(environment: ["FERRY_CONFIG": postgresFile.path]).databaseCAFile == ca.path)
            #expect(try !bare.data.namesTheDatabase(environment: [:]))
            let overridden = try list.data.storeSettings(environment: [
                "FERRY_DATABASE": "postgres://other@127.0.0.1/ferry", "FERRY_DATA_DIR": "/srv/env",
            ])
            #expect(overridden.database == "postgres://other@127.0.0.1/ferry" && overridden.dataDirectory == "/srv/env")
            let flagged = try #require(
                try ControllerCommand.parseAsRoot(["token", "list", "--config", postgresFile.path, "--data-dir", "/srv/flag"]) as? TokenListCommand
            )
            #expect(try flagged.data.storeSettings(environment: ["FERRY_DATA_DIR": "/srv/env"]).dataDirectory == "/srv/flag")
            let broken = try #require(
                try ControllerCommand.parseAsRoot(["token", "list", "--config", directory.appendingPathComponent("none.yml").path])
                    as? TokenListCommand
            )
            #expect(throws: CLIError.self) { try broken.data.storeSettings(environment: [:]) }

            // Through the binary, SQLite: the token lands in the file's data directory, and a server started with the
            // same file accepts it.
            let sqliteFile = directory.appendingPathComponent("sqlite.yml")
            try "dataDir: data\n".write(to: sqliteFile, atomically: true, encoding: .utf8)
            let created = try await CLI.cli(["token", "create", "--config", sqliteFile.path, "--role", "viewer", "--name", "dash"])
            #expect(created.status == 0, "\(created.errors)")
            let token = created.output.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(FileManager.default.fileExists(atPath: directory.appendingPathComponent("data/ferry.sqlite").path))
            let listed = try await CLI.cli(["token", "list"], environment: ["FERRY_CONFIG": sqliteFile.path])
            #expect(listed.status == 0 && listed.output.contains(" dash "), "\(listed.output)\(listed.errors)")
            let keyPrefix = directory.appendingPathComponent("operator").path
            #expect(try await CLI.cli(["keygen", "--out", keyPrefix]).status == 0)
            let server = try await ServerProcess(
                arguments: ["--config", sqliteFile.path, "--trusted-key", keyPrefix + ".pub"],
                logDirectory: directory
            )
            defer { server.stop() }
            #expect(try await LiveHTTP().send("GET", server.baseURL + "/v1/fleet", token: token).status == 200)
        }
    }

    /// A token command does not migrate a database of an older schema (an upgraded package while the older `serve` still
    /// runs on it): it says to start this version's `serve` first, and leaves the database as it was. Before, it
    /// migrated the live database under that server. A new database it makes, as before.
    @Test func aTokenCommandDoesNotMigrateAnOlderDatabase() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-token-schema") { directory in
            let data = directory.appendingPathComponent("data").path
            let made = try await CLI.cli(["token", "create", "--data-dir", data, "--role", "viewer", "--name", "dash"])
            #expect(made.status == 0, "\(made.errors)")
            // As an older Ferry left it: its last migration not applied (its row gone is what this binary reads).
            let path = "\(data)/ferry.sqlite"
            let latest = SchemaMigrations.latestVersion
            try await Self.sqlite(path, "DELETE FROM ferry_schema WHERE version = \(latest)")
            let refused = try await CLI.cli(["token", "create", "--data-dir", data, "--role", "viewer", "--name", "dash2"])
            #expect(refused.status != 0)
            #expect(
                refused.errors.contains(
                    "has schema version \(latest - 1) and this ferry-controller uses \(latest): start this version's ferry-controller serve first"
                ),
                "\(refused.errors)"
            )
            #expect(try await Self.sqlite(path, "SELECT MAX(version) FROM ferry_schema") == "\(latest - 1)", "the schema was left as it was")
            #expect(try await Self.sqlite(path, "SELECT COUNT(*) FROM tokens") == "1", "no token was made")
        }
    }

    /// Runs `sql` on the SQLite database at `path` (Python's sqlite3, outside any store); the first column of the first
    /// row, as text, or "".
    static func sqlite(_ path: String, _ sql: String) async throws -> String {
        let run = try await CommandRunner.run(
            CommandRunner.Request(
                executable: "/usr/bin/env",
                arguments: [
                    "python3", "-c",
                    "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); r=c.execute(sys.argv[2]).fetchone(); c.commit(); print('' if r is None else r[0])",
                    path, sql,
                ],
                environment: ProcessInfo.processInfo.environment,
                timeout: .seconds(30)
            )
        )
        guard run.termination == .exited(0) else { throw HarnessError("sqlite3 failed: \(String(decoding: run.standardError, as: UTF8.self))") }
        return String(decoding: run.standardOutput, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// The built binary: tokens listed without their secrets, and `token revoke --data-dir` in another process is
    /// effective at once on every route of the running server, although the server had the token cached.
    @Test func revokeThroughTheBinaryWhileTheServerRuns() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-token-cli") { directory in
            let data = directory.appendingPathComponent("data").path
            let keyPrefix = directory.appendingPathComponent("operator").path
            #expect(try await CLI.cli(["keygen", "--out", keyPrefix]).status == 0)
            var secrets: [String] = []
            func create(_ arguments: [String]) async throws -> String {
                let run = try await CLI.cli(["token", "create", "--data-dir", data] + arguments)
                #expect(run.status == 0, "\(run.errors)")
                let token = run.output.trimmingCharacters(in: .whitespacesAndNewlines)
                #expect(Token.isWellFormed(token))
                #expect(run.errors.contains("created token tok_"))
                #expect(run.errors.contains("made a new one") == secrets.isEmpty, "only the first creation makes the database: \(run.errors)")
                secrets.append(token)
                return token
            }
            let ci = try await create(["--role", "operator", "--name", "ci"])
            let admin = try await create(["--role", "operator", "--name", "admin"])
            _ = try await create([
                "--role", "enroll", "--name", "api-workers", "--service", "worker", "--service", "api", "--max-uses", "5", "--expires", "7d",
            ])
            _ = try await create(["--role", "enroll", "--name", "anything", "--any-service"])
            _ = try await create(["--role", "viewer", "--name", "dash", "--expires", "30m"])
            _ = try await create(["--role", "viewer", "--name", "dash"])

            var server = try await ServerProcess(arguments: ["--data-dir", data, "--trusted-key", keyPrefix + ".pub"], logDirectory: directory)
            defer { server.stop() }
            let http = LiveHTTP()
            for _ in 0..<3 {
                #expect(try await http.send("GET", server.baseURL + "/v1/fleet", token: ci).status == 200)
            }

            let table = try await CLI.cli(["token", "list", "--data-dir", data])
            #expect(table.status == 0, "\(table.errors)")
            let lines = table.output.split(separator: "\n")
            #expect(
                lines.first?.split(separator: " ", omittingEmptySubsequences: true) == [
                    "ID", "NAME", "ROLE", "SCOPE", "CREATED", "LAST", "USED", "EXPIRES", "USES", "STATE",
                ]
            )
            #expect(lines.count == 7)
            let scoped = try #require(lines.first { $0.contains("api-workers") })
            #expect(scoped.contains("api, worker") && scoped.contains("0/5") && scoped.contains("active"))
            #expect(try #require(lines.first { $0.contains("anything") }).contains("any service"))
            let json = try await CLI.cli(["token", "list", "--data-dir", data, "--json"])
            let listed = FleetDocument.array(try JSONValue.parse(Array(json.output.utf8)))
            #expect(listed.count == 6)
            #expect(listed.allSatisfy { Token.isWellFormedID(FleetDocument.text($0.object?["id"])) })
            let apiWorkers = try #require(listed.first { $0.object?["name"] == .string("api-workers") }?.object)
            #expect(apiWorkers["services"] == .array([.string("api"), .string("worker")]))
            #expect(apiWorkers["maxUses"] == .integer(5))
            #expect(apiWorkers["expiresAt"] != .null)
            // Neither the secrets nor their hashes, in the table, the JSON or the server's answer.
            let apiListing = try await http.send("GET", server.baseURL + "/v1/tokens", token: admin)
            #expect(apiListing.status == 200)
            for secret in secrets {
                for output in [table.output, json.output, String(decoding: apiListing.body, as: UTF8.self)] {
                    #expect(!output.contains(secret) && !output.contains(Token.digest(secret)))
                    #expect(!output.contains(String(secret.dropFirst(Token.prefix.count).prefix(12))))
                }
            }

            let ambiguous = try await CLI.cli(["token", "revoke", "--data-dir", data, "dash"])
            #expect(ambiguous.status != 0)
            #expect(ambiguous.errors.contains("2 tokens are named dash"))

            let revoke = try await CLI.cli(["token", "revoke", "--data-dir", data, "ci"])
            #expect(revoke.status == 0, "\(revoke.errors)")
            #expect(revoke.output.contains("revoked token tok_"))
            // At once, on every route, although the server answered this token from its cache a moment ago.
            let fleet = try await http.send("GET", server.baseURL + "/v1/fleet", token: ci)
            #expect(fleet.status == 401)
            #expect(ControllerFixture.errorCode(fleet.body) == "token_revoked")
            let publish = try await http.send("POST", server.baseURL + "/v1/releases", token: ci, body: Data("{}".utf8))
            #expect(publish.status == 401)
            let upload = try await http.send("POST", server.baseURL + "/v1/artifacts", token: ci, body: Data("x".utf8))
            #expect(upload.status == 401)
            #expect(try await http.send("GET", server.baseURL + "/v1/fleet", token: admin).status == 200)
            let again = try await CLI.cli(["token", "revoke", "--data-dir", data, "ci"])
            #expect(again.errors.contains("already revoked"))
            let after = try await CLI.cli(["token", "list", "--data-dir", data])
            #expect(try #require(after.output.split(separator: "\n").first { $0.contains(" ci ") }).contains("revoked"))

            // A restarted server does not bring it back.
            #expect(server.stop() == 0, "\(server.log)")
            server = try await ServerProcess(arguments: ["--data-dir", data, "--trusted-key", keyPrefix + ".pub"], logDirectory: directory)
            #expect(try await http.send("GET", server.baseURL + "/v1/fleet", token: ci).status == 401)

            let missing = try await CLI.cli(["token", "list", "--data-dir", directory.appendingPathComponent("nowhere").path])
            #expect(missing.status != 0)
            #expect(missing.errors.contains("no controller database at"))
            #expect(!FileManager.default.fileExists(atPath: directory.appendingPathComponent("nowhere").path))

            // A fresh volume mounted as the data directory holds lost+found (and hidden entries): it is empty.
            let volume = directory.appendingPathComponent("volume")
            try FileManager.default.createDirectory(at: volume.appendingPathComponent("lost+found"), withIntermediateDirectories: true)
            try FileManager.default.createDirectory(at: volume.appendingPathComponent(".snapshot"), withIntermediateDirectories: true)
            let onVolume = try await CLI.cli(["token", "create", "--data-dir", volume.path, "--role", "operator"])
            #expect(onVolume.status == 0 && onVolume.errors.contains("made a new one"), "\(onVolume.errors)")
            // A mistyped --data-dir naming a directory in use: nothing made there, its mode untouched.
            let inUse = directory.appendingPathComponent("in-use")
            try FileManager.default.createDirectory(at: inUse, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o755])
            try Data("x".utf8).write(to: inUse.appendingPathComponent("notes.txt"))
            let mistyped = try await CLI.cli(["token", "create", "--data-dir", inUse.path, "--role", "operator"])
            #expect(mistyped.status != 0)
            #expect(mistyped.errors.contains("holds notes.txt, which is not a controller's: is it the data directory"), "\(mistyped.errors)")
            #expect(!FileManager.default.fileExists(atPath: inUse.appendingPathComponent("ferry.sqlite").path))
            let mode = try FileManager.default.attributesOfItem(atPath: inUse.path)[.posixPermissions] as? Int
            #expect(mode == 0o755)
        }
    }

    /// `agents remove NAME` through the binary: the agent's token stops working at once, and the name can be enrolled
    /// again with an enrollment token.
    @Test func agentsRemoveThroughTheBinary() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-agents-cli") { directory in
            let data = directory.appendingPathComponent("data").path
            let keyPrefix = directory.appendingPathComponent("operator").path
            #expect(try await CLI.cli(["keygen", "--out", keyPrefix]).status == 0)
            let operatorToken = try await CLI.cli(["token", "create", "--data-dir", data, "--role", "operator"]).output
                .trimmingCharacters(in: .whitespacesAndNewlines)
            let enrollToken = try await CLI.cli(["token", "create", "--data-dir", data, "--role", "enroll", "--service", "api"]).output
                .trimmingCharacters(in: .whitespacesAndNewlines)
            let server = try await ServerProcess(arguments: ["--data-dir", data, "--trusted-key", keyPrefix + ".pub"], logDirectory: directory)
            defer { server.stop() }
            let http = LiveHTTP()
            let body = EnrollRequest(name: "web 1", hostname: "web-1.internal", services: ["api"]).json.encoded()
            let first = try EnrollResponse(
                json: JSONValue.parse(try await http.send("POST", server.baseURL + "/v1/agents", token: enrollToken, body: body).body)
            )
            let url = server.baseURL + "/v1/agents/\(first.agentID)/desired-state"
            #expect(try await http.send("GET", url, token: first.token).status == 200)
            #expect(try await http.send("POST", server.baseURL + "/v1/agents", token: enrollToken, body: body).status == 409)

            let environment = ["FERRY_CONTROLLER_URL": server.baseURL, "FERRY_TOKEN": operatorToken]
            let listed = try await CLI.cli(["agents"], environment: environment)
            #expect(listed.output.contains(first.agentID))
            let removed = try await CLI.cli(["agents", "remove", "web 1"], environment: environment)
            #expect(removed.status == 0, "\(removed.errors)")
            #expect(removed.output.contains("removed agent web 1 (\(first.agentID))"))
            #expect(try await http.send("GET", url, token: first.token).status == 401)
            let unknown = try await CLI.cli(["agents", "remove", "web 1"], environment: environment)
            #expect(unknown.status != 0)
            #expect(unknown.errors.contains("no agent named web 1 is enrolled here"))
            #expect(try await http.send("POST", server.baseURL + "/v1/agents", token: enrollToken, body: body).status == 201)
        }
    }
}
