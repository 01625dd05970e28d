import ArgumentParser
import Foundation
import Shared
import TestSupport
import Testing

@testable import Controller

@Suite struct ServeSettingsTests {
    @Test func flagsWinOverEnvironmentWhichWinsOverTheFile() async throws {
        try await TestPaths.withTemporaryDirectory { directory in
            let key = try SigningKey.generate()
            let keyPath = directory.appendingPathComponent("op.pub")
            try Data(key.publicKey.pemRepresentation().utf8).write(to: keyPath)
            let file = directory.appendingPathComponent("controller.yaml")
            try Data(
                """
                listen: 0.0.0.0:9000
                dataDir: state
                trustedKeys: [op.pub]
                pollSeconds: 30
                maxArtifactBytes: 1G
                statusHistory: 7
                """.utf8
            ).write(to: file)
            let command = try #require(
                try ControllerCommand.parseAsRoot(["serve", "--config", file.path, "--listen", "127.0.0.1:0", "--max-body-bytes", "4M"])
                    as? ServeCommand
            )
            let settings = try command.resolvedSettings(environment: ["FERRY_POLL_SECONDS": "20", "FERRY_LISTEN": "10.0.0.1:1"])
            let configuration = try settings.configuration()
            #expect(configuration.host == "127.0.0.1")
            #expect(configuration.port == 0)
            #expect(configuration.dataDirectory == directory.path + "/state")
            #expect(configuration.pollInterval == .seconds(20))
            #expect(configuration.maximumBodyBytes == 4 << 20)
            #expect(configuration.maximumArtifactBytes == 1 << 30)
            #expect(configuration.statusHistoryLimit == 7)
            #expect(configuration.trustPolicy?.trustedKeys.keys.sorted() == [key.publicKey.keyID])
        }
    }

    struct BadSetting: Sendable, CustomTestStringConvertible {
        let arguments: [String]
        let environment: [String: String]
        let message: String
        var testDescription: String { message }
    }

    static let badSettings: [BadSetting] = [
        BadSetting(arguments: ["serve"], environment: [:], message: "no trusted key"),
        BadSetting(
            arguments: ["serve", "--remove-silent-agents-after", "30m"],
            environment: ["FERRY_TRUSTED_KEYS": "KEY"],
            message: "must be at least 1h"
        ),
        BadSetting(
            arguments: ["serve"],
            environment: ["FERRY_TRUSTED_KEYS": "KEY", "FERRY_REMOVE_SILENT_AGENTS_AFTER": "a week"],
            message: "like 90d, 12h or 30m"
        ),
        BadSetting(
            arguments: ["serve", "--remove-silent-agents-after", "9223372036854775807d"],
            environment: ["FERRY_TRUSTED_KEYS": "KEY"],
            message: "longer than ten years"
        ),
        BadSetting(arguments: ["serve", "--listen", "localhost"], environment: ["FERRY_TRUSTED_KEYS": "KEY"], message: "expected HOST:PORT"),
        BadSetting(arguments: ["serve", "--listen", "h:99999"], environment: ["FERRY_TRUSTED_KEYS": "KEY"], message: "from 0 to 65535"),
        BadSetting(arguments: ["serve", "--threshold", "2"], environment: ["FERRY_TRUSTED_KEYS": "KEY"], message: "threshold 2 is impossible"),
        BadSetting(arguments: ["serve"], environment: ["FERRY_TRUSTED_KEYS": "KEY", "FERRY_POLL_SECONDS": "soon"], message: "not an integer"),
        BadSetting(arguments: ["serve", "--max-body-bytes", "1K"], environment: ["FERRY_TRUSTED_KEYS": "KEY"], message: "the largest envelope"),
        BadSetting(arguments: ["serve", "--max-artifact-bytes", "lots"], environment: ["FERRY_TRUSTED_KEYS": "KEY"], message: "not a size"),
        BadSetting(arguments: ["serve", "--poll-seconds", "0"], environment: ["FERRY_TRUSTED_KEYS": "KEY"], message: "from 1 to 3600"),
        BadSetting(arguments: ["serve", "--status-history", "0"], environment: ["FERRY_TRUSTED_KEYS": "KEY"], message: "must be from 1 to 10000"),
        BadSetting(
            arguments: ["serve"],
            environment: ["FERRY_TRUSTED_KEYS": "KEY", "FERRY_STATUS_HISTORY": "9223372036854775807"],
            message: "must be from 1 to 10000"
        ),
        BadSetting(arguments: ["serve", "--log-level", "loud"], environment: ["FERRY_TRUSTED_KEYS": "KEY"], message: "must be one of trace"),
        BadSetting(arguments: ["serve", "--config", "/nonexistent/ferry.yaml"], environment: [:], message: "no such file"),
        BadSetting(
            arguments: ["serve", "--tls-cert", "c.pem"],
            environment: ["FERRY_TRUSTED_KEYS": "KEY"],
            message: "--tls-cert is given without --tls-key"
        ),
        BadSetting(
            arguments: ["serve"],
            environment: ["FERRY_TRUSTED_KEYS": "KEY", "FERRY_TLS_KEY": "k.pem"],
            message: "--tls-key is given without --tls-cert"
        ),
        BadSetting(arguments: ["serve", "--header-timeout", "0"], environment: ["FERRY_TRUSTED_KEYS": "KEY"], message: "must be from 1s to 600s"),
        BadSetting(arguments: ["serve", "--idle-timeout", "soon"], environment: ["FERRY_TRUSTED_KEYS": "KEY"], message: "expected whole seconds"),
        BadSetting(arguments: ["serve"], environment: ["FERRY_TRUSTED_KEYS": "KEY", "FERRY_IDLE_TIMEOUT": "2h"], message: "expected whole seconds"),
        BadSetting(arguments: ["serve", "--idle-timeout", "61m"], environment: ["FERRY_TRUSTED_KEYS": "KEY"], message: "must be from 1s to 3600s"),
        BadSetting(arguments: ["serve", "--max-connections", "0"], environment: ["FERRY_TRUSTED_KEYS": "KEY"], message: "must be from 1 to 1000000"),
        BadSetting(arguments: ["serve"], environment: ["FERRY_TRUSTED_KEYS": "KEY", "FERRY_MAX_CONNECTIONS": "many"], message: "not an integer"),
        BadSetting(
            arguments: ["serve", "--database", "mysql://u@h/db"],
            environment: ["FERRY_TRUSTED_KEYS": "KEY"],
            message: "expected postgres://"
        ),
        BadSetting(arguments: ["serve", "--database", "postgres://h/db"], environment: ["FERRY_TRUSTED_KEYS": "KEY"], message: "names no user"),
        BadSetting(arguments: ["serve", "--database", "postgres://u@h"], environment: ["FERRY_TRUSTED_KEYS": "KEY"], message: "names no database"),
        BadSetting(arguments: ["serve", "--database", "postgres://u@/db"], environment: ["FERRY_TRUSTED_KEYS": "KEY"], message: "names no host"),
        BadSetting(
            arguments: ["serve", "--database", "postgres://u:hunter2@h/db?sslmode=maybe"],
            environment: ["FERRY_TRUSTED_KEYS": "KEY"],
            message: "sslmode must be one of disable, prefer, require, verify-ca, verify-full"
        ),
        BadSetting(
            arguments: ["serve", "--database", "postgres://u@h/db?pool=3"],
            environment: ["FERRY_TRUSTED_KEYS": "KEY"],
            message: "unknown parameter pool"
        ),
        BadSetting(
            arguments: ["serve", "--database", "postgres://u@h/db", "--database-pool-size", "0"],
            environment: ["FERRY_TRUSTED_KEYS": "KEY"],
            message: "must be from 1 to 1000"
        ),
        BadSetting(
            arguments: ["serve", "--database", "postgres://u@h/db"],
            environment: ["FERRY_TRUSTED_KEYS": "KEY", "FERRY_DATABASE_STATEMENT_TIMEOUT": "0"],
            message: "must be from 1s to 3600s"
        ),
        BadSetting(
            arguments: ["serve", "--database", "postgres://u@h/db", "--database-ca-file", "/nonexistent/ca.pem"],
            environment: ["FERRY_TRUSTED_KEYS": "KEY"],
            message: "no such readable file"
        ),
        BadSetting(
            arguments: ["serve", "--database-pool-size", "5"],
            environment: ["FERRY_TRUSTED_KEYS": "KEY"],
            message: "applies to a PostgreSQL --database only"
        ),
    ]

    /// What a CA file does to the TLS mode: checks the server, whichever way it is given (`sslrootcert=` in the URL, or
    /// `--database-ca-file`). `nil`: refused, since the mode given would not use it.
    static let caFileModes: [(url: String, caFlag: Bool, mode: PostgresStoreConfiguration.TLSMode?)] = [
        ("postgres://f@db/ferry?sslrootcert=/ca.pem", false, .verifyFull),
        ("postgres://f@db/ferry?sslrootcert=/ca.pem&sslmode=require", false, .verifyCA),
        ("postgres://f@db/ferry?sslmode=verify-ca&sslrootcert=/ca.pem", false, .verifyCA),
        ("postgres://f@db/ferry?sslmode=verify-full&sslrootcert=/ca.pem", false, .verifyFull),
        ("postgres://f@db/ferry?sslmode=prefer&sslrootcert=/ca.pem", false, nil),
        ("postgres://f@db/ferry?sslmode=disable&sslrootcert=/ca.pem", false, nil),
        ("postgres://f@db/ferry", true, .verifyFull),
        ("postgres://f@db/ferry?sslmode=require", true, .verifyCA),
        ("postgres://f@db/ferry?sslmode=prefer", true, nil),
        ("postgres://f@db/ferry?sslmode=disable", true, nil),
        ("postgres://f@db/ferry?sslmode=require", false, .require),
        ("postgres://f@db/ferry", false, .prefer),
    ]

    @Test(arguments: caFileModes)
    func aCAFileChecksTheServer(_ row: (url: String, caFlag: Bool, mode: PostgresStoreConfiguration.TLSMode?)) throws {
        do {
            var configuration = try PostgresStoreConfiguration.parse(row.url)
            if row.caFlag { try configuration.checkServer(against: "/ca.pem", name: "--database-ca-file") }
            #expect(configuration.tls == row.mode, "\(row.url)")
            if row.mode == nil { Issue.record("accepted \(row.url) with a CA file") }
        } catch {
            #expect(row.mode == nil, "\(row.url): \(error)")
            #expect("\(error)".contains("would not be used to check the server"), "\(error)")
        }
    }

    /// Plain HTTP where other hosts reach it is said at start (an empty `tlsCert:` reads as no TLS).
    @Test(arguments: [
        ("127.0.0.1", false, false), ("::1", false, false), ("localhost", false, false), ("0.0.0.0", false, true), ("", false, true),
        ("10.0.0.5", false, true), ("0.0.0.0", true, false),
    ])
    func plainHTTPBeyondLoopbackIsSaid(_ host: String, _ tls: Bool, _ warned: Bool) {
        let warning = ServeCommand.plainHTTPWarning(host: host, tls: tls)
        #expect((warning != nil) == warned, "\(host) tls \(tls): \(warning ?? "none")")
        if let warning { #expect(warning.contains("--tls-cert") && warning.contains("unencrypted")) }
    }

    /// A database password never appears in an error about its URL.
    @Test func aDatabaseURLErrorHidesThePassword() throws {
        do {
            _ = try PostgresStoreConfiguration.parse("postgres://ferry:hunter2@db.internal/ferry?sslmode=nope")
            Issue.record("accepted a bad sslmode")
        } catch {
            #expect("\(error)".contains("postgres://ferry:REDACTED@db.internal/ferry") && !"\(error)".contains("hunter2"), "\(error)")
        }
    }

    /// A URL that fails to parse because its password holds an unencoded `/`, `?` or `#` (a generated base64 one): the
    /// error, and the warning that the environment overrides the file's `database`, never show the password. Before,
    /// the redaction looked for the `@` only up to the first `/` or `?` and showed the URL whole.
    @Test(arguments: [
        ("postgres://ferry:Ab/cd@db/ferry", "Ab/cd"),
        ("postgres://ferry:12/x@db/ferry", "12/x"),
        ("postgres://ferry:a?b@db/ferry", "a?b"),
        ("postgres://ferry:p#w@db/ferry", "p#w"),
        ("postgres://ferry:x/y?z@db:5432/ferry?sslmode=bad", "x/y?z"),
    ])
    func aPasswordWithURLDelimitersNeverShows(_ url: String, _ secret: String) throws {
        do {
            _ = try PostgresStoreConfiguration.parse(url)
            Issue.record("accepted \(url)")
        } catch {
            #expect(!"\(error)".contains(secret), "\(error)")
        }
        #expect(!RedactedDatabaseURL.redact(url).contains(secret), "\(RedactedDatabaseURL.redact(url))")
    }

    /// `--database` and its settings from a flag, the environment and the file; the password from
    /// FERRY_DATABASE_PASSWORD when the URL has none.
    @Test func postgresSettingsFromFlagsEnvironmentAndFile() async throws {
        try await TestPaths.withTemporaryDirectory { directory in
            let key = try SigningKey.generate()
            try Data(key.publicKey.pemRepresentation().utf8).write(to: directory.appendingPathComponent("op.pub"))
            try Data("not checked here".utf8).write(to: directory.appendingPathComponent("rds-ca.pem"))
            let file = directory.appendingPathComponent("controller.yaml")
            try Data(
                """
                trustedKeys: [op.pub]
                database: postgres://ferry@db.internal:6432/fleet
                databasePoolSize: 4
                databaseCAFile: rds-ca.pem
                """.utf8
            ).write(to: file)
            let command = try #require(
                try ControllerCommand.parseAsRoot(["serve", "--config", file.path, "--database-statement-timeout", "2m"]) as? ServeCommand
            )
            let settings = try command.resolvedSettings(environment: ["FERRY_DATABASE_POOL_SIZE": "6", "FERRY_DATABASE_PASSWORD": "s3cret"])
            guard case .postgres(let postgres) = try settings.configuration().database else {
                Issue.record("--database postgres://... selects PostgreSQL")
                return
            }
            #expect(postgres.host == "db.internal" && postgres.port == 6432 && postgres.user == "ferry" && postgres.database == "fleet")
            #expect(postgres.password == "s3cret")
            #expect(postgres.poolSize == 6)
            #expect(postgres.statementTimeout == .seconds(120))
            #expect(postgres.caFile == directory.path + "/rds-ca.pem" && postgres.tls == .verifyFull)
            #expect(postgres.redacted == "postgres://ferry@db.internal:6432/fleet?sslmode=verify-full")

            let plain = try #require(try ControllerCommand.parseAsRoot(["serve", "--config", file.path]) as? ServeCommand)
            let sqlite = try plain.resolvedSettings(environment: ["FERRY_DATABASE": ""])
            #expect(try sqlite.configuration().database != .sqlite, "the file's database stays when the environment twin is empty")
        }
    }

    @Test(arguments: badSettings)
    func badSettingsAreRefusedWithAReason(_ bad: BadSetting) async throws {
        try await TestPaths.withTemporaryDirectory { directory in
            let keyPath = directory.appendingPathComponent("op.pub").path
            try Data(try SigningKey.generate().publicKey.pemRepresentation().utf8).write(to: URL(fileURLWithPath: keyPath))
            let environment = bad.environment.mapValues { $0 == "KEY" ? keyPath : $0 }
            let command = try #require(try ControllerCommand.parseAsRoot(bad.arguments) as? ServeCommand)
            do {
                let settings = try command.resolvedSettings(environment: environment)
                _ = try settings.configuration()
                _ = try settings.resolvedLogLevel()
                Issue.record("accepted \(bad.arguments) \(bad.environment)")
            } catch {
                #expect("\(error)".contains(bad.message), "\(error)")
            }
        }
    }

    @Test func tlsAndConnectionLimitsFromFlagsEnvironmentAndFile() async throws {
        try await TestPaths.withTemporaryDirectory { directory in
            let key = try SigningKey.generate()
            try Data(key.publicKey.pemRepresentation().utf8).write(to: directory.appendingPathComponent("op.pub"))
            let file = directory.appendingPathComponent("controller.yaml")
            try Data(
                """
                trustedKeys: [op.pub]
                tlsCert: tls/server.pem
                tlsKey: tls/server.key
                headerTimeout: 20
                idleTimeout: 2m
                maxConnections: 500
                """.utf8
            ).write(to: file)
            #expect(try ServeSettings.fromFile(file.path).configuration().connectionLimits.idleTimeout == .seconds(120))
            let command = try #require(
                try ControllerCommand.parseAsRoot(["serve", "--config", file.path, "--max-connections", "700"]) as? ServeCommand
            )
            let configuration = try command.resolvedSettings(environment: ["FERRY_IDLE_TIMEOUT": "90s"]).configuration()
            #expect(
                configuration.tls
                    == TLSCertificateStore.Files(certificate: directory.path + "/tls/server.pem", key: directory.path + "/tls/server.key")
            )
            #expect(
                configuration.connectionLimits == ConnectionLimits(headerTimeout: .seconds(20), idleTimeout: .seconds(90), maximumConnections: 700)
            )
            // Without any of them: plain HTTP and the documented defaults.
            let plain = try ServeSettings(trustedKeys: [directory.path + "/op.pub"]).configuration()
            #expect(plain.tls == nil)
            #expect(plain.removeSilentAgentsAfter == nil, "silent agents are kept unless asked")
            // Silent agents removed after: the file's, the environment's over it, the flag's over both.
            try Data("trustedKeys: [op.pub]\nremoveSilentAgentsAfter: 14d\n".utf8).write(to: file)
            #expect(try ServeSettings.fromFile(file.path).configuration().removeSilentAgentsAfter == .seconds(14 * 86_400))
            let silent = try #require(try ControllerCommand.parseAsRoot(["serve", "--config", file.path]) as? ServeCommand)
            let fromEnvironment = try silent.resolvedSettings(environment: ["FERRY_REMOVE_SILENT_AGENTS_AFTER": "36h"]).configuration()
            #expect(fromEnvironment.removeSilentAgentsAfter == .seconds(36 * 3_600))
            let flagged = try #require(
                try ControllerCommand.parseAsRoot(["serve", "--config", file.path, "--remove-silent-agents-after", "1h"]) as? ServeCommand
            )
            #expect(
                try flagged.resolvedSettings(environment: ["FERRY_REMOVE_SILENT_AGENTS_AFTER": "36h"]).configuration().removeSilentAgentsAfter
                    == .seconds(3_600)
            )
            #expect(plain.connectionLimits == ConnectionLimits(headerTimeout: .seconds(15), idleTimeout: .seconds(75), maximumConnections: 16_384))
        }
    }

    @Test func configFileRejectsUnknownKeys() async throws {
        try await TestPaths.withTemporaryDirectory { directory in
            let file = directory.appendingPathComponent("c.json")
            try Data(#"{"listen": "127.0.0.1:1", "tresholds": 2}"#.utf8).write(to: file)
            #expect(throws: ConfigurationError.unreadable(path: file.path, reason: "tresholds: unknown field")) {
                try ServeSettings.fromFile(file.path)
            }
        }
    }

    /// The systemd unit sets `FERRY_LISTEN` and `FERRY_DATA_DIR`, which win over a config file: `serve` says so at
    /// start for each value of the file the environment replaces, instead of listening elsewhere without a word.
    @Test func fileSettingsTheEnvironmentOverridesAreNamed() async throws {
        try await TestPaths.withTemporaryDirectory { directory in
            let file = directory.appendingPathComponent("controller.json")
            try Data(#"{"listen": "0.0.0.0:8443", "dataDir": "/srv/ferry", "database": "postgres://ferry:s3cret@db/ferry"}"#.utf8).write(to: file)
            let command = try ServeCommand.parse([])
            let notes = command.fileSettingsOverridden(environment: [
                "FERRY_CONFIG": file.path, "FERRY_LISTEN": "127.0.0.1:8080", "FERRY_DATA_DIR": "/srv/ferry",
                "FERRY_DATABASE": "postgres://ferry:other@db2/ferry",
            ])
            #expect(notes.count == 2, "\(notes)")
            #expect(
                notes.first == "\(file.path): listen 0.0.0.0:8443 is overridden by FERRY_LISTEN=127.0.0.1:8080 (the environment wins over the file)"
            )
            // Redacted as every database URL is (the user kept, the password replaced: RedactedDatabaseURL).
            #expect(
                notes.last?.contains(
                    "database postgres://ferry:REDACTED@db/ferry is overridden by FERRY_DATABASE=postgres://ferry:REDACTED@db2/ferry"
                ) == true,
                "\(notes)"
            )
            #expect(!notes.joined().contains("s3cret") && !notes.joined().contains("other@"))
            #expect(command.fileSettingsOverridden(environment: ["FERRY_CONFIG": file.path]).isEmpty)
        }
    }

    @Test func listenForms() throws {
        #expect(try ServeSettings.parseListen("127.0.0.1:8080") == ("127.0.0.1", 8080))
        #expect(try ServeSettings.parseListen(":9000") == ("0.0.0.0", 9000))
        #expect(try ServeSettings.parseListen("[::1]:0") == ("::1", 0))
    }
}
