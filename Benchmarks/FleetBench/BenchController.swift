import Foundation
import Shared

#if canImport(Glibc)
import Glibc
#endif

/// A `ferry-controller serve` of its own for one benchmark run: a fresh data directory, an operator key and token,
/// an enroll token for every simulated agent, TLS when asked (a self-signed certificate for 127.0.0.1 made with the
/// `openssl` CLI), the process stopped by its PID at the end.
final class BenchController: Sendable {
    /// What the run is set up with.
    struct Setup: Sendable {
        /// The `ferry-controller` executable (a release build for figures; any build for the CI check).
        var executable: String
        /// The work directory (created and removed by the caller).
        var directory: String
        /// Serve HTTPS.
        var tls: Bool
        /// Agents the enroll token may enroll.
        var agents: Int
        /// `serve --poll-interval`: what agents are told (and three of them without a report marks one stale).
        var pollSeconds: Int = 15
        /// `serve --database`: PostgreSQL instead of SQLite in the data directory.
        var database: String? = nil
    }

    let setup: Setup
    let pid: pid_t
    /// `http://127.0.0.1:PORT` or `https://...`.
    let url: String
    let port: Int
    let operatorToken: String
    let enrollToken: String
    /// The certificate clients trust (TLS only).
    let caFile: String?
    /// The certificate's private key (TLS only; the nginx baseline serves with the same pair).
    var tlsKeyFile: String? { caFile.map { ($0 as NSString).deletingLastPathComponent + "/tls.key" } }
    let keyFile: String

    private init(setup: Setup, pid: pid_t, url: String, port: Int, operatorToken: String, enrollToken: String, caFile: String?, keyFile: String) {
        self.setup = setup
        self.pid = pid
        self.url = url
        self.port = port
        self.operatorToken = operatorToken
        self.enrollToken = enrollToken
        self.caFile = caFile
        self.keyFile = keyFile
    }

    /// Prepares the data directory and starts the server; returns once it listens.
    static func start(_ setup: Setup) async throws -> BenchController {
        let dir = setup.directory
        let data = dir + "/data"
        let store = ["--data-dir", data] + (setup.database.map { ["--database", $0] } ?? [])
        _ = try await run(setup.executable, ["keygen", "--out", dir + "/operator"])
        let operatorToken = try await run(
            setup.executable,
            ["token", "create"] + store + ["--role", "operator", "--name", "fleet-bench"]
        ).trimmingCharacters(in: .whitespacesAndNewlines)
        let enrollToken = try await run(
            setup.executable,
            ["token", "create"] + store + ["--role", "enroll", "--name", "fleet-bench", "--any-service", "--max-uses", String(setup.agents)]
        ).trimmingCharacters(in: .whitespacesAndNewlines)
        var arguments =
            ["serve", "--listen", "127.0.0.1:0"] + store + [
                "--trusted-key", dir + "/operator.pub", "--log-level", "warning", "--poll-seconds", String(setup.pollSeconds),
            ]
        var caFile: String?
        if setup.tls {
            let certificate = dir + "/tls.pem"
            let key = dir + "/tls.key"
            _ = try await run(
                "/usr/bin/openssl",
                [
                    "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", certificate,
                    "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-addext", "basicConstraints=critical,CA:TRUE",
                ]
            )
            chmod(key, 0o600)
            arguments += ["--tls-cert", certificate, "--tls-key", key]
            caFile = certificate
        }
        let output = dir + "/controller.out"
        let errors = dir + "/controller.err"
        let pid = try ProcessSpawner.spawn(
            .init(
                executable: setup.executable,
                arguments: [setup.executable] + arguments,
                // glibc's allocator settings (MALLOC_ARENA_MAX, MALLOC_TRIM_THRESHOLD_, ...) and the code-page switch
                // (FERRY_CODE_PAGES=keep) pass through, to compare.
                environment: ProcessInfo.processInfo.environment.filter { $0.key.hasPrefix("MALLOC_") || $0.key == "FERRY_CODE_PAGES" }
                    .merging(["PATH": "/usr/bin:/bin"]) { $1 },
                standardOutput: .appending(path: output),
                standardError: .appending(path: errors)
            )
        )
        let started = ContinuousClock.now
        while true {
            if let text = try? String(contentsOfFile: output, encoding: .utf8),
                let line = text.split(separator: "\n").first(where: { $0.hasPrefix("ferry-controller listening on ") })
            {
                let url = String(line.dropFirst("ferry-controller listening on ".count))
                guard let colon = url.lastIndex(of: ":"), let port = Int(url[url.index(after: colon)...]) else {
                    throw BenchError("cannot read the port out of \"\(line)\"")
                }
                return BenchController(
                    setup: setup,
                    pid: pid,
                    url: url,
                    port: port,
                    operatorToken: operatorToken,
                    enrollToken: enrollToken,
                    caFile: caFile,
                    keyFile: dir + "/operator.key"
                )
            }
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid {
                let log = (try? String(contentsOfFile: errors, encoding: .utf8)) ?? ""
                throw BenchError("ferry-controller serve exited at start (status \(status)): \(log)")
            }
            guard ContinuousClock.now - started < .seconds(60) else {
                kill(pid, SIGKILL)
                throw BenchError("ferry-controller serve did not listen within 60 s")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// Publishes `version` of service `api` through the real CLI (`ferry-controller publish`).
    /// - Returns: how long the command took, from start to exit.
    func publish(version: String, artifact: String, ecosystem: String) async throws -> Duration {
        var arguments = [
            "publish", "--controller", url, "--token", operatorToken, "--key", keyFile, "--service", "api", "--version", version,
            "--artifact", artifact, "--ecosystem", ecosystem, "--strategy", "all",
        ]
        if let caFile { arguments += ["--ca-file", caFile] }
        let started = ContinuousClock.now
        _ = try await Self.run(setup.executable, arguments)
        return ContinuousClock.now - started
    }

    /// Stops the server (SIGTERM, then SIGKILL after 20 s) and reaps it.
    func stop() async {
        await Self.terminate(pid, grace: .seconds(20), name: "controller")
    }

    /// Sends SIGTERM to `pid` (a child of this process), then SIGKILL when it has not exited after `grace`, and reaps
    /// it, on a thread of its own.
    static func terminate(_ pid: pid_t, grace: Duration, name: String) async {
        kill(pid, SIGTERM)
        let polls = Int(grace.components.seconds) * 100
        _ = try? await DedicatedThread.run(name: "\(name) reaper") { () -> Void in
            for _ in 0..<polls {
                var status: Int32 = 0
                let result = waitpid(pid, &status, WNOHANG)
                if result == pid || (result < 0 && errno != EINTR) { return }
                usleep(10_000)
            }
            kill(pid, SIGKILL)
            var status: Int32 = 0
            _ = waitpid(pid, &status, 0)
        }
    }

    /// The server's resident memory and CPU time so far.
    var usage: ProcessUsage? { ProcessUsage.read(pid: pid) }

    /// Runs a short command; its standard output, or an error with its standard error.
    @discardableResult
    static func run(_ executable: String, _ arguments: [String]) async throws -> String {
        let output = try await CommandRunner.run(
            .init(executable: executable, arguments: arguments, environment: ["PATH": "/usr/bin:/bin", "HOME": "/tmp"], timeout: .seconds(120))
        )
        guard output.termination.isSuccess else {
            throw BenchError(
                "\((executable as NSString).lastPathComponent) \(arguments.prefix(2).joined(separator: " ")) failed (\(output.termination)): "
                    + String(decoding: output.standardError, as: UTF8.self)
            )
        }
        return String(decoding: output.standardOutput, as: UTF8.self)
    }
}

/// A process's resident memory and CPU time, from `/proc`.
struct ProcessUsage: Sendable {
    /// `VmRSS`, bytes.
    var residentBytes: Int64
    /// `utime + stime` of every thread (exited ones included), seconds.
    var cpuSeconds: Double

    static func read(pid: pid_t) -> ProcessUsage? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
            let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
        else { return nil }
        var resident: Int64 = 0
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            resident = (Int64(line.split(separator: " ").dropFirst().first ?? "") ?? 0) * 1024
        }
        // Fields after the command name (which may contain spaces) start after the last ')'.
        guard let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // utime and stime are fields 14 and 15 of the whole line: 12 and 13 counted after the name.
        guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        return ProcessUsage(residentBytes: resident, cpuSeconds: (user + system) / ticks)
    }

    /// This process (the load generator itself).
    static var ownCPUSeconds: Double {
        var usage = rusage()
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        return Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6 + Double(usage.ru_stime.tv_sec)
            + Double(usage.ru_stime.tv_usec) / 1e6
    }
}

/// A benchmark step failed.
struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
