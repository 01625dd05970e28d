import Foundation
import Shared
import Synchronization
import TestSupport
import Testing

@testable import Controller

/// What only several controllers on one PostgreSQL database can show (the rest of the store's tests run on both
/// databases): migrations when they start at once, writes racing across controllers, and databases that cannot be used.
@Suite(.enabled(if: PostgresTestServer.unavailableReason == nil, "PostgreSQL binaries are missing (see StoreBackendKind.available)"))
struct PostgresStoreTests {
    /// Five controllers start at once on an empty database: one migrates while the others wait, each version is applied
    /// once, and all five work.
    @Test func controllersStartingAtOnceMigrateOnce() async throws {
        try await TestStore.withLocation(.postgres) { location in
            let stores = try await withThrowingTaskGroup(of: SQLControllerStore.self) { group in
                for _ in 0..<5 { group.addTask { try await location.open() } }
                var opened: [SQLControllerStore] = []
                for try await store in group { opened.append(store) }
                return opened
            }
            let server = try #require(location.server)
            let versions = try await server.psql("SELECT version FROM ferry_schema ORDER BY version", database: try #require(location.database))
            let expected: [String] = (1...SchemaMigrations.latestVersion).map { String($0) }
            #expect(versions.split(separator: "\n").map(String.init) == expected)
            for (index, store) in stores.enumerated() {
                try await store.createToken(hash: Token.digest("fyt_\(index)"), name: "c\(index)", role: .viewer, at: Date())
            }
            #expect(try await stores[0].tokens().count == 5)
            for store in stores { try await store.close() }
        }
    }

    /// Publishers on two controllers race for the same serials: exactly one wins each serial across both, and a lower
    /// serial after a higher one is refused, as on one controller.
    /// A migration is not cut short by the pool's statement timeout: here version 12's update waits 3 s for a lock
    /// another session holds (as an ALTER waits for an older controller's transactions, or a full-table update of a
    /// large history takes), under a 1 s statement timeout. Cut short, it rolled back, and every restart would have
    /// tried and failed again.
    @Test func aMigrationOutlastsTheStatementTimeout() async throws {
        try await TestStore.withLocation(.postgres) { location in
            try await location.open().close()
            let server = try #require(location.server)
            let database = try #require(location.database)
            #expect(SchemaMigrations.latestVersion == 15, "versions 12 to 15 (idempotent) are run again here")
            try await location.execute(["DELETE FROM ferry_schema WHERE version >= 12"])
            let holder = Task {
                try await server.psql("BEGIN; LOCK TABLE service_status IN EXCLUSIVE MODE; SELECT pg_sleep(3); COMMIT;", database: database)
            }
            // The lock is taken once psql's session shows it.
            let deadline = ContinuousClock.now + .seconds(20)
            while try await !server.psql(
                "SELECT count(*) FROM pg_locks WHERE mode = 'ExclusiveLock' AND relation = 'service_status'::regclass",
                database: database
            )
            .contains("1") {
                guard ContinuousClock.now < deadline else { throw HarnessError("the lock was never taken") }
                try await Task.sleep(for: .milliseconds(50))
            }
            var configuration = try PostgresStoreConfiguration.parse(server.url(database: database))
            configuration.statementTimeout = .seconds(1)
            let started = ContinuousClock.now
            let store = try await DatabaseSelection.postgres(configuration).openStore(
                sqlitePath: location.sqlitePath,
                logger: ControllerFixture.logger
            )
            #expect(started.duration(to: .now) > .seconds(1), "the migration waited for the lock")
            try await store.close()
            _ = try await holder.value
            #expect(try await server.psql("SELECT max(version) FROM ferry_schema", database: database).contains("\(SchemaMigrations.latestVersion)"))
        }
    }

    /// A database that goes silent mid-transaction (a frozen host, a dropped route: the client's TCP sees no reset, so
    /// it waits through its retransmissions for a quarter of an hour) fails the statement after the statement timeout
    /// plus the connect timeout, with `StoreError.unresponsive`, and gives the write lock up: the next write fails in
    /// bounded time too instead of queueing behind the first for ever, and once the database answers again writes
    /// succeed on a new connection. Before, both writes waited as long as the silence lasted.
    @Test(.timeLimit(.minutes(2))) func aSilentDatabaseFailsAWriteInBoundedTimeAndReleasesTheLock() async throws {
        try await TestStore.withLocation(.postgres) { location in
            try await location.open().close()
            let server = try #require(location.server)
            let database = try #require(location.database)
            let (store, proxy) = try await Self.storeBehindProxy(location, statementTimeout: .seconds(1))
            defer { proxy.stop() }
            try await store.createToken(hash: Token.digest("fyt_before"), name: "before", role: .viewer, at: Date())

            /// A token written, bounded: a write that waits past 20 s is reported as such instead of hanging the test.
            @Sendable func write(_ name: String) async -> String {
                await FirstOf.run(
                    {
                        do {
                            try await store.createToken(hash: Token.digest("fyt_\(name)"), name: name, role: .viewer, at: Date())
                            return "written"
                        } catch let error as StoreError where error.isOutage {
                            return "outage"
                        } catch {
                            return "failed: \(String(reflecting: error))"
                        }
                    },
                    or: {
                        try? await Task.sleep(for: .seconds(20))
                        return "still waiting after 20 s"
                    }
                )
            }

            proxy.silence()
            for name in ["first", "second"] {
                let started = ContinuousClock.now
                let outcome = await write(name)
                #expect(outcome == "outage", "\(name) write: \(outcome)")
                #expect(started.duration(to: .now) < .seconds(10), "\(name) write ended after \(started.duration(to: .now))")
            }

            proxy.speak()
            let deadline = ContinuousClock.now + .seconds(30)
            var outcome = await write("after")
            while outcome == "outage", ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(200))
                outcome = await write("after")
            }
            #expect(outcome == "written")
            #expect(try await server.psql("SELECT name FROM tokens ORDER BY name", database: database).split(separator: "\n") == ["after", "before"])
            try await store.close()
        }
    }

    /// The answer to a COMMIT is lost (the network to the database goes silent while it commits): the write fails with
    /// an outage, but it stands. The triggers' notifications name this controller and come back ignored, and the caller
    /// updated no cache on an error: the store now says so (`whenACommitIsUncertain`), and the application resynchronizes.
    @Test(.timeLimit(.minutes(2))) func aCommitWhoseAnswerIsLostIsReportedAsUncertain() async throws {
        try await TestStore.withLocation(.postgres) { location in
            try await location.open().close()
            let server = try #require(location.server)
            let database = try #require(location.database)
            // The COMMIT takes five seconds (a deferred trigger): long enough to silence the network under it on a loaded
            // machine (the test polls for it with psql).
            _ = try await server.psql(
                """
                CREATE FUNCTION ferry_test_slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN PERFORM pg_sleep(5); RETURN NULL; END $$;
                CREATE CONSTRAINT TRIGGER ferry_test_slow_commit AFTER INSERT ON tokens DEFERRABLE INITIALLY DEFERRED
                FOR EACH ROW EXECUTE FUNCTION ferry_test_slow_commit();
                """,
                database: database
            )
            let (store, proxy) = try await Self.storeBehindProxy(location, statementTimeout: .seconds(8))
            defer { proxy.stop() }
            let backend = try #require((store as? SQLControllerStore)?.backend as? PostgresStoreBackend)
            let told = Atomic<Int>(0)
            backend.whenACommitIsUncertain { told.add(1, ordering: .relaxed) }

            let write = Task { () -> String in
                do {
                    try await store.createToken(hash: Token.digest("fyt_lost"), name: "lost-answer", role: .viewer, at: Date())
                    return "written"
                } catch let error as StoreError where error.isOutage {
                    return "outage"
                } catch {
                    return "failed: \(String(reflecting: error))"
                }
            }
            try await eventually("the COMMIT running", timeout: .seconds(20)) {
                let active = try await server.psql(
                    "SELECT count(*) FROM pg_stat_activity WHERE query = 'COMMIT' AND state = 'active'",
                    database: database
                )
                return active.trimmingCharacters(in: .whitespacesAndNewlines) == "1" ? true : nil
            }
            proxy.silence()
            let outcome = await write.value
            #expect(outcome == "outage")
            #expect(told.load(ordering: .relaxed) == 1, "the failed COMMIT is reported as uncertain")
            proxy.speak()
            let names = try await server.psql("SELECT name FROM tokens WHERE name = 'lost-answer'", database: database)
            #expect(names.trimmingCharacters(in: .whitespacesAndNewlines) == "lost-answer", "the write stands")

            // A transaction that fails before its COMMIT committed nothing, and is not reported.
            var refused = false
            do {
                try await store.createToken(hash: Token.digest("fyt_lost"), name: "lost-answer", role: .viewer, at: Date())
            } catch {
                refused = true
            }
            #expect(refused, "the same token again is refused by the database")
            #expect(told.load(ordering: .relaxed) == 1)
            try await store.close()
        }
    }

    /// A store on `location`'s database through a TCP proxy the test can silence (connect timeout 1 s).
    static func storeBehindProxy(
        _ location: TestStoreLocation,
        statementTimeout: Duration
    ) async throws -> (store: any ControllerStore, proxy: SilenceableTCPProxy) {
        let server = try #require(location.server)
        var configuration = try PostgresStoreConfiguration.parse(server.url(database: try #require(location.database)))
        let proxy = try SilenceableTCPProxy(upstreamPort: configuration.port)
        configuration.port = proxy.port
        configuration.statementTimeout = statementTimeout
        configuration.connectTimeout = .seconds(1)
        do {
            let store = try await DatabaseSelection.postgres(configuration).openStore(
                sqlitePath: location.sqlitePath,
                logger: ControllerFixture.logger
            )
            return (store, proxy)
        } catch {
            proxy.stop()
            throw error
        }
    }

    @Test func publishersOnTwoControllersGetOneSuccessPerSerial() async throws {
        try await TestStore.withLocation(.postgres) { location in
            let a = try await location.open()
            let b = try await location.open()
            for serial in Int64(1)...3 {
                let records = try (0..<10).map { _ in try StoreTests.record(serial: serial) }
                let wins = await withTaskGroup(of: Bool.self) { group in
                    for (index, record) in records.enumerated() {
                        let store = index.isMultiple(of: 2) ? a : b
                        group.addTask { (try? await store.insertRelease(record)) != nil }
                    }
                    var count = 0
                    for await won in group where won { count += 1 }
                    return count
                }
                #expect(wins == 1, "serial \(serial)")
            }
            await #expect(throws: StoreError.staleSerial(service: "api", serial: 2, latest: 3)) {
                try await b.insertRelease(try StoreTests.record(serial: 2))
            }
            #expect(try await a.latestSerial(service: "api") == 3)
            #expect(try await a.rollouts(service: "api", limit: 10).count == 3)
            try await a.close()
            try await b.close()
        }
    }

    /// Every connection of the pool runs with the session settings the controller asks for when it connects: its
    /// statement timeout, its name in `pg_stat_activity`, and no JIT compilation (which cost each fleet view 20–30 ms
    /// per query, and about 0.5 s per query while the tables had no statistics yet: docs/benchmarks.md).
    @Test func pooledConnectionsHaveTheControllersSessionSettings() async throws {
        try await TestStore.withLocation(.postgres) { location in
            let store = try await location.open()
            // More queries at once than one connection serves: several of the pool's connections answer (checked by
            // their server processes), each asked for all three settings.
            let answers = try await withThrowingTaskGroup(of: (values: [String], backends: Set<Int>).self) { group in
                for _ in 0..<8 {
                    group.addTask {
                        var values: [String] = []
                        var backends: Set<Int> = []
                        for setting in ["jit", "application_name", "statement_timeout", "tcp_keepalives_idle", "tcp_user_timeout"] {
                            let row = try #require(
                                try await store.readDB.raw(
                                    """
                                    SELECT current_setting(\(bind: setting)) AS v, pg_backend_pid() AS pid FROM (SELECT pg_sleep(0.05)) AS pause
                                    """
                                ).first()
                            )
                            values.append(try row.decode(column: "v", as: String.self))
                            backends.insert(try row.decode(column: "pid", as: Int.self))
                        }
                        return (values, backends)
                    }
                }
                var all: [(values: [String], backends: Set<Int>)] = []
                for try await answer in group { all.append(answer) }
                return all
            }
            #expect(answers.count == 8)
            for answer in answers {
                #expect(answer.values == ["off", "ferry-controller", "30s", "5", "10000"])
            }
            let backends = answers.reduce(into: Set<Int>()) { $0.formUnion($1.backends) }
            #expect(backends.count > 1, "the queries were answered by more than one pooled connection")
            try await store.close()
        }
    }

    struct UnusableDatabase: Sendable, CustomTestStringConvertible {
        let what: String
        let url: @Sendable (PostgresTestServer, String) throws -> String
        let message: String
        var testDescription: String { what }
    }

    /// Databases a controller cannot use: each open fails at once with the reason, never with a generic error.
    static let unusableDatabases: [UnusableDatabase] = [
        UnusableDatabase(
            what: "nothing listens on the port",
            url: { _, database in "postgres://postgres@127.0.0.1:\(try PostgresTestServer.freeLoopbackPort())/\(database)?sslmode=disable" },
            message: "connection"
        ),
        UnusableDatabase(
            what: "no such database",
            url: { server, _ in server.url(database: "ferry_missing") },
            message: "database \"ferry_missing\" does not exist (SQLSTATE 3D000)"
        ),
        UnusableDatabase(
            what: "no such role",
            url: { server, database in "postgres://nobody@127.0.0.1:\(server.port)/\(database)?sslmode=disable" },
            message: "role \"nobody\" does not exist"
        ),
        UnusableDatabase(
            what: "TLS required, the server has none",
            url: { server, database in "postgres://postgres@127.0.0.1:\(server.port)/\(database)?sslmode=require" },
            message: "ssl"
        ),
    ]

    /// A CA file named in the URL (`sslrootcert=`, no `sslmode`) means the server is checked against it: this server
    /// offers no TLS, so it is refused. It used to leave the default `prefer`, which loaded the CA, checked nothing, and
    /// fell back to plain text: anyone on the path could stand in for the database.
    @Test func aCAFileInTheURLMakesTheServerProveItself() async throws {
        try await TestStore.withLocation(.postgres) { location in
            let server = try #require(location.server)
            try await TestPaths.withTemporaryDirectory("pg-ca") { directory in
                let pki = try TestCertificates.make(in: directory)
                let url = "postgres://postgres@127.0.0.1:\(server.port)/\(try #require(location.database))?sslrootcert=\(pki.caFile)"
                let configuration = try PostgresStoreConfiguration.parse(url)
                #expect(configuration.tls == .verifyFull)
                do {
                    let store = try await SQLControllerStore.open(configuration, logger: ControllerFixture.logger)
                    try await store.close()
                    Issue.record("opened \(configuration.redacted) without TLS although a CA file was given")
                } catch let error as StoreError {
                    guard case .cannotOpen(_, let reason) = error else {
                        Issue.record("expected cannotOpen, got \(error)")
                        return
                    }
                    #expect(reason.lowercased().contains("ssl"), "\(reason)")
                }
            }
        }
    }

    @Test(arguments: unusableDatabases)
    func anUnusableDatabaseIsRefusedWithItsReason(_ unusable: UnusableDatabase) async throws {
        try await TestStore.withLocation(.postgres) { location in
            let server = try #require(location.server)
            let configuration = try PostgresStoreConfiguration.parse(try unusable.url(server, try #require(location.database)))
            do {
                let store = try await SQLControllerStore.open(configuration, logger: ControllerFixture.logger)
                try await store.close()
                Issue.record("opened \(configuration.redacted)")
            } catch let error as StoreError {
                guard case .cannotOpen(let path, let reason) = error else {
                    Issue.record("expected cannotOpen, got \(error)")
                    return
                }
                #expect(path == configuration.redacted)
                #expect(reason.lowercased().contains(unusable.message.lowercased()), "\(reason)")
            }
        }
    }
}
