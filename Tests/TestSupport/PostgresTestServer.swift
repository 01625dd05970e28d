import Foundation
import Shared
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A throwaway PostgreSQL server for tests: `initdb` and `pg_ctl` from the Debian binaries, in a temporary directory,
/// on a free loopback port, with `trust` authentication for the superuser `postgres`.
///
/// `initdb` and `postgres` refuse to run as root: as root (CI), they run as the `postgres` user through `runuser`, in a
/// directory handed to that user. `shared()` starts one server per test process, stopped (immediate shutdown) and
/// removed when the process exits; tests take a fresh database each from it (`createDatabase()`). `start()` gives a
/// test its own server to stop, kill or restart.
public final class PostgresTestServer: Sendable {
    /// The directory holding `initdb`, `pg_ctl`, `psql` (`FERRY_TEST_POSTGRES_BIN`, else the newest
    /// `/usr/lib/postgresql/N/bin`), or `nil` when there is none.
    public static let binDirectory: String? = {
        if let configured = ProcessInfo.processInfo.environment["FERRY_TEST_POSTGRES_BIN"], !configured.isEmpty {
            return FileManager.default.isExecutableFile(atPath: configured + "/initdb") ? configured : nil
        }
        let root = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).compactMap(Int.init).sorted(by: >)
        return versions.map { "\(root)/\($0)/bin" }.first { FileManager.default.isExecutableFile(atPath: $0 + "/initdb") }
    }()

    /// Why PostgreSQL tests cannot run here, or `nil` when they can.
    public static var unavailableReason: String? {
        binDirectory == nil
            ? "PostgreSQL binaries not found (no /usr/lib/postgresql/N/bin/initdb, FERRY_TEST_POSTGRES_BIN unset): "
                + "`apt-get install postgresql` (scripts/install-deps does; CI always runs these tests)"
            : nil
    }

    /// The server's directory (data in `data/`, socket and log beside it).
    public let directory: URL
    /// The loopback port it listens on.
    public let port: Int
    private let binaries: String
    private let asUser: String?
    private let listenAddresses: [String]
    private let namespace: String?

    private init(
        directory: URL,
        port: Int,
        binaries: String,
        asUser: String?,
        listenAddresses: [String] = ["127.0.0.1"],
        namespace: String? = nil
    ) {
        self.namespace = namespace
        self.directory = directory
        self.port = port
        self.binaries = binaries
        self.asUser = asUser
        self.listenAddresses = listenAddresses
    }

    private static let sharedServer = SharedServer()

    /// The process's shared server, started at the first call.
    /// - Throws: `HarnessError` when the binaries are missing (check `unavailableReason` first) or it does not start.
    public static func shared() async throws -> PostgresTestServer {
        try await sharedServer.get()
    }

    /// Starts a new server (initdb + pg_ctl start) that the caller stops with `stop()` and removes with `remove()`.
    /// - Parameter fast: `fsync=off`, `synchronous_commit=off` and friends (tests that never lose the machine). Default
    ///   `true`. Not for a test that `stop()`s the server and expects its data back: an immediate stop loses the commits
    ///   of the last fraction of a second that `synchronous_commit=off` had not yet written.
    /// - Parameters:
    ///   - listenAddresses: where it listens besides 127.0.0.1 (an address of a network namespace's link the test
    ///     made), with `trust` for clients in the same /24.
    ///   - namespace: a network namespace the test made to run it in (`ip netns exec`), with every tool it runs.
    public static func start(fast: Bool = true, listenAddresses: [String] = [], namespace: String? = nil) async throws -> PostgresTestServer {
        guard let binaries = binDirectory else { throw HarnessError(unavailableReason ?? "no PostgreSQL") }
        let directory = try TestPaths.makeTemporaryDirectory("ferry-pg")
        let asUser = geteuid() == 0 ? "postgres" : nil
        do {
            // The server's user must reach and own the directory.
            guard chmod(directory.path, 0o755) == 0 else { throw HarnessError("chmod \(directory.path): \(String(cString: strerror(errno)))") }
            if let asUser {
                guard let entry = getpwnam(asUser) else { throw HarnessError("running as root, but there is no \(asUser) user to run PostgreSQL as") }
                guard chown(directory.path, entry.pointee.pw_uid, entry.pointee.pw_gid) == 0 else {
                    throw HarnessError("chown \(directory.path): \(String(cString: strerror(errno)))")
                }
            }
            let probe = PostgresTestServer(directory: directory, port: 0, binaries: binaries, asUser: asUser, namespace: namespace)
            try await probe.run(
                "initdb",
                ["-D", probe.dataDirectory, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync"],
                timeout: .seconds(180)
            )
            if !listenAddresses.isEmpty {
                let lines = listenAddresses.map { "host all all \($0)/24 trust\n" }.joined()
                let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: probe.dataDirectory + "/pg_hba.conf"))
                try handle.seekToEnd()
                try handle.write(contentsOf: Data(lines.utf8))
                try handle.close()
            }
            var lastError: (any Error)?
            for _ in 0..<3 {
                let port = try freeLoopbackPort()
                let server = PostgresTestServer(
                    directory: directory,
                    port: port,
                    binaries: binaries,
                    asUser: asUser,
                    listenAddresses: ["127.0.0.1"] + listenAddresses,
                    namespace: namespace
                )
                do {
                    try await server.startServer(fast: fast)
                    registerForExit(server)
                    return server
                } catch {
                    lastError = error
                }
            }
            throw lastError ?? HarnessError("PostgreSQL did not start")
        } catch {
            try? FileManager.default.removeItem(at: directory)
            throw error
        }
    }

    private var dataDirectory: String { directory.path + "/data" }
    private var logFile: String { directory.path + "/postgres.log" }

    /// Starts the server again on the same port (after `stop()` or a kill).
    public func restart(fast: Bool = true) async throws {
        try await startServer(fast: fast)
    }

    private func startServer(fast: Bool) async throws {
        var options = "-p \(port) -k \(directory.path) -c listen_addresses=\(listenAddresses.joined(separator: ",")) -c max_connections=400"
        if fast { options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off" }
        do {
            try await run("pg_ctl", ["-D", dataDirectory, "-o", options, "-l", logFile, "-w", "-t", "120", "start"], timeout: .seconds(150))
        } catch {
            let log = (try? String(contentsOfFile: logFile, encoding: .utf8)) ?? ""
            throw HarnessError("\(error)\n--- postgres.log (end)\n\(log.suffix(2000))")
        }
    }

    /// Stops the server at once (`pg_ctl -m immediate stop`: like a crash, recovered at the next start; a `fast` server
    /// loses its last commits).
    public func stop() async throws {
        try await run("pg_ctl", ["-D", dataDirectory, "-m", "immediate", "-w", "stop"], timeout: .seconds(60))
    }

    /// Stops the server (when running) and removes its directory.
    public func remove() async {
        try? await stop()
        Self.unregisterForExit(self)
        try? FileManager.default.removeItem(at: directory)
    }

    /// `postgres://postgres@127.0.0.1:PORT/DATABASE?sslmode=disable`.
    public func url(database: String) -> String {
        "postgres://postgres@127.0.0.1:\(port)/\(database)?sslmode=disable"
    }

    /// Creates a fresh, empty database and returns its name.
    public func createDatabase() async throws -> String {
        let name = "ferry_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(20)
        try await psql("CREATE DATABASE \(name)")
        return name
    }

    /// Drops a database, closing its connections first.
    public func dropDatabase(_ name: String) async {
        _ = try? await psql("DROP DATABASE IF EXISTS \(name) WITH (FORCE)")
    }

    /// Runs SQL through `psql` (stop at the first error); returns what it printed (unaligned, tuples only).
    @discardableResult
    public func psql(_ sql: String, database: String = "postgres") async throws -> String {
        let output = try await run(
            "psql",
            ["-h", "127.0.0.1", "-p", "\(port)", "-U", "postgres", "-d", database, "-v", "ON_ERROR_STOP=1", "-X", "-q", "-A", "-t"],
            standardInput: Array(sql.utf8),
            timeout: .seconds(120),
            asServerUser: false
        )
        return output
    }

    @discardableResult
    private func run(
        _ tool: String,
        _ arguments: [String],
        standardInput: [UInt8] = [],
        timeout: Duration,
        asServerUser: Bool = true
    ) async throws -> String {
        var executable = "\(binaries)/\(tool)"
        var argv = arguments
        if asServerUser, let asUser {
            argv = ["-u", asUser, "--", executable] + arguments
            executable = FileManager.default.isExecutableFile(atPath: "/usr/sbin/runuser") ? "/usr/sbin/runuser" : "/sbin/runuser"
        }
        if let namespace {
            argv = ["netns", "exec", namespace, executable] + argv
            executable = "/usr/sbin/ip"
        }
        let output = try await CommandRunner.run(
            CommandRunner.Request(
                executable: executable,
                arguments: argv,
                environment: ["PATH": "/usr/bin:/bin", "LANG": "C", "PGCONNECT_TIMEOUT": "10"],
                workingDirectory: directory.path,
                standardInput: standardInput,
                timeout: timeout
            )
        )
        guard output.termination == .exited(0) else {
            throw HarnessError(
                "\(tool) \(arguments.joined(separator: " ")) ended \(output.termination): "
                    + String(decoding: output.standardError + output.standardOutput, as: UTF8.self).suffix(2000)
            )
        }
        return String(decoding: output.standardOutput, as: UTF8.self)
    }

    /// A port nothing is bound to now, outside the ephemeral range (`LoopbackPorts`).
    public static func freeLoopbackPort() throws -> Int { try LoopbackPorts.reserve() }

    // MARK: Stopping at exit

    /// Data directories of servers still running, stopped by an `atexit` handler so no postgres outlives the tests.
    private static let running = Mutex<[String: String]>([:])
    private static let exitHandler: Void = {
        atexit {
            let servers = PostgresTestServer.running.withLock { $0 }
            for (data, directory) in servers {
                PostgresTestServer.killPostmaster(dataDirectory: data)
                try? FileManager.default.removeItem(atPath: directory)
            }
        }
    }()

    private static func registerForExit(_ server: PostgresTestServer) {
        _ = exitHandler
        running.withLock { $0[server.dataDirectory] = server.directory.path }
    }

    private static func unregisterForExit(_ server: PostgresTestServer) {
        _ = running.withLock { $0.removeValue(forKey: server.dataDirectory) }
    }

    /// Immediate shutdown by signal (SIGQUIT to the postmaster named in `postmaster.pid`), waiting up to 5 s.
    private static func killPostmaster(dataDirectory: String) {
        guard let text = try? String(contentsOfFile: dataDirectory + "/postmaster.pid", encoding: .utf8),
            let line = text.split(separator: "\n").first, let pid = pid_t(line.trimmingCharacters(in: .whitespaces)), pid > 1
        else { return }
        guard kill(pid, SIGQUIT) == 0 else { return }
        for _ in 0..<100 where kill(pid, 0) == 0 { usleep(50_000) }
    }
}

/// Starts the shared server once, whoever asks first (later callers await the same start).
private actor SharedServer {
    private var starting: Task<PostgresTestServer, any Error>?

    func get() async throws -> PostgresTestServer {
        let task =
            starting
            ?? Task {
                do {
                    return try await PostgresTestServer.start()
                } catch {
                    throw HarnessError("the shared PostgreSQL test server did not start: \(error)")
                }
            }
        starting = task
        return try await task.value
    }
}
