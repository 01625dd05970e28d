import Foundation
import Shared
import TestSupport
import Testing

@testable import Controller

/// Which database a store test runs against. Store tests take `StoreBackendKind.available` as arguments, so every
/// case runs on SQLite and on a real PostgreSQL (`PostgresTestServer`).
enum StoreBackendKind: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case sqlite
    case postgres

    var testDescription: String { rawValue }

    /// SQLite always; PostgreSQL where its binaries are installed (otherwise the reason is printed once, and the
    /// PostgreSQL cases do not run).
    static let available: [StoreBackendKind] = {
        if let reason = PostgresTestServer.unavailableReason {
            FileHandle.standardError.write(Data("note: store tests run on SQLite only here: \(reason)\n".utf8))
            return [.sqlite]
        }
        return [.sqlite, .postgres]
    }()
}

/// Where a test store lives; opens more stores on the same database (another process, a restart).
struct TestStoreLocation: Sendable {
    let kind: StoreBackendKind
    /// A temporary directory for the test (SQLite's file is in it).
    let directory: URL
    /// PostgreSQL: the server and the database made for this test.
    let server: PostgresTestServer?
    let database: String?

    /// The SQLite file.
    var sqlitePath: String { directory.appendingPathComponent("ferry.sqlite").path }

    /// What `StoreError`s name as the database's location.
    var location: String {
        guard let server, let database, let configuration = try? PostgresStoreConfiguration.parse(server.url(database: database)) else {
            return sqlitePath
        }
        return configuration.redacted
    }

    /// The selection `serve` would make for this database.
    var selection: DatabaseSelection {
        get throws {
            guard let server, let database else { return .sqlite }
            return .postgres(try PostgresStoreConfiguration.parse(server.url(database: database)))
        }
    }

    /// Opens a store on the same database (applying pending migrations).
    func open() async throws -> SQLControllerStore {
        try await selection.openStore(sqlitePath: sqlitePath, logger: ControllerFixture.logger)
    }

    /// Runs SQL statements directly (sqlite3 through python, or psql), outside any store: to build a database as an
    /// older or newer Ferry left it. SQLite-spelled schema statements are given as they are; translate them with
    /// `StoreDialect.schemaStatement` first for PostgreSQL.
    func execute(_ statements: [String]) async throws {
        let script = statements.map { $0 + ";\n" }.joined()
        if let server, let database {
            try await server.psql(script, database: database)
            return
        }
        let sqlFile = directory.appendingPathComponent("script-\(UUID().uuidString).sql")
        try script.write(to: sqlFile, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: sqlFile) }
        let python = try await CommandRunner.run(
            CommandRunner.Request(
                executable: "/usr/bin/env",
                arguments: [
                    "python3", "-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.executescript(open(sys.argv[2]).read()); c.commit()",
                    sqlitePath, sqlFile.path,
                ],
                environment: ProcessInfo.processInfo.environment,
                timeout: .seconds(30)
            )
        )
        guard python.termination == .exited(0) else {
            throw HarnessError("sqlite3 script failed: \(String(decoding: python.standardError, as: UTF8.self))")
        }
    }

    /// The dialect of this database.
    var dialect: StoreDialect { kind == .sqlite ? .sqlite : .postgres }
}

enum TestStore {
    /// Runs `body` with a fresh, empty database of `kind` (not opened: for tests that prepare it first), removed
    /// afterwards whatever happens.
    static func withLocation<R>(_ kind: StoreBackendKind, _ body: (TestStoreLocation) async throws -> R) async throws -> R {
        try await TestPaths.withTemporaryDirectory("ferry-store-\(kind.rawValue)") { directory in
            switch kind {
            case .sqlite:
                return try await body(TestStoreLocation(kind: kind, directory: directory, server: nil, database: nil))
            case .postgres:
                let server = try await PostgresTestServer.shared()
                let database = try await server.createDatabase()
                do {
                    let result = try await body(TestStoreLocation(kind: kind, directory: directory, server: server, database: database))
                    await server.dropDatabase(database)
                    return result
                } catch {
                    await server.dropDatabase(database)
                    throw error
                }
            }
        }
    }

    /// Runs `body` with a fresh store of `kind`, closed (when `body` did not) and removed afterwards.
    static func with<R>(_ kind: StoreBackendKind, _ body: (SQLControllerStore, TestStoreLocation) async throws -> R) async throws -> R {
        try await withLocation(kind) { location in
            let store = try await location.open()
            do {
                let result = try await body(store, location)
                try? await store.close()
                return result
            } catch {
                try? await store.close()
                throw error
            }
        }
    }
}
