import Foundation
import Glibc
import Logging
import Shared
import TestSupport
import Testing

@testable import Supervisor

/// One builtin-supervisor home (`/tmp/fs-XXXXXX`, short enough for a Unix socket path) with scripts, a client and
/// whatever daemon the test starts. `with` always stops the daemon and every process started under the home (found
/// by pid in /proc), and removes the directory, also when the test fails.
struct SupervisorHarness: Sendable {
    let home: String
    let manager: BuiltinProcessManager

    /// A logger that drops everything: the daemon's own log is in `<home>/supervisor.log`.
    static let quietLogger = Logger(label: "ferry.test") { _ in SwiftLogNoOpLogHandler() }

    static func with<T: Sendable>(
        configure: (inout BuiltinProcessManager.Configuration) -> Void = { _ in },
        _ body: (SupervisorHarness) async throws -> T
    ) async throws -> T {
        var template = Array("/tmp/fs-XXXXXX".utf8CString)
        guard let created = mkdtemp(&template) else { throw HarnessError("mkdtemp failed: errno \(errno)") }
        let home = String(cString: created)
        var configuration = BuiltinProcessManager.Configuration(
            home: home,
            executablePath: TestPaths.executable("ferry-agent"),
            connectTimeout: .seconds(30),
            requestTimeout: .seconds(60)
        )
        configure(&configuration)
        let harness = SupervisorHarness(home: home, manager: BuiltinProcessManager(configuration: configuration, logger: quietLogger))
        do {
            let result = try await body(harness)
            await harness.cleanUp()
            return result
        } catch {
            Issue.record("supervisor log:\n\(SmallFile.tail("\(home)/supervisor.log", bytes: 3000))")
            await harness.cleanUp()
            throw error
        }
    }

    /// A client with the same settings (a second agent, say).
    func secondClient() -> BuiltinProcessManager {
        BuiltinProcessManager(configuration: manager.configuration, logger: Self.quietLogger)
    }

    // MARK: - Files

    /// Writes `contents` to `<home>/<relativePath>`, creating directories, and returns the absolute path.
    @discardableResult
    func write(_ relativePath: String, _ contents: String) throws -> String {
        let path = "\(home)/\(relativePath)"
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try contents.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// Points the symlink `<home>/<relativePath>` at `target` atomically (new link + rename), like the agent does.
    func pointSymlink(_ relativePath: String, to target: String) throws {
        let path = "\(home)/\(relativePath)"
        let temporary = "\(path).tmp"
        unlink(temporary)
        guard symlink(target, temporary) == 0, rename(temporary, path) == 0 else {
            throw HarnessError("cannot point \(path) at \(target): errno \(errno)")
        }
    }

    /// An app spec with PM2's defaults (node, autorestart, 16 restarts, 1000 ms min_uptime, 1600 ms kill_timeout).
    func spec(
        _ name: String,
        script: String,
        cwd: String? = nil,
        instances: Int = 1,
        execMode: ExecMode = .fork,
        env: [String: String] = [:]
    ) -> AppSpec {
        AppSpec(
            name: name,
            service: "svc",
            script: script,
            cwd: cwd ?? (script as NSString).deletingLastPathComponent,
            args: [],
            interpreter: "node",
            interpreterArgs: [],
            instances: instances,
            execMode: execMode,
            env: env,
            autorestart: true,
            maxRestarts: 16,
            minUptimeMilliseconds: 1000,
            restartDelayMilliseconds: 0,
            killTimeoutMilliseconds: 1600,
            maxMemoryBytes: nil,
            pm2Options: [:]
        )
    }

    // MARK: - Waiting

    /// Polls the table every 100 ms until `condition` holds, and returns that table; fails with the last table seen
    /// after `timeout`.
    @discardableResult
    func waitUntil(
        _ what: String,
        timeout: Duration = .seconds(30),
        _ condition: ([ManagedProcess]) -> Bool
    ) async throws -> [ManagedProcess] {
        let deadline = ContinuousClock.now + timeout
        var last: [ManagedProcess] = []
        while ContinuousClock.now < deadline {
            last = try await manager.processes()
            if condition(last) { return last }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw HarnessError("timed out after \(timeout) waiting until \(what); last table: \(Self.summary(last))")
    }

    /// Polls `condition` every 50 ms until it holds or `timeout` passes; returns whether it held.
    static func eventually(timeout: Duration = .seconds(15), _ condition: () async throws -> Bool) async rethrows -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if try await condition() { return true }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return try await condition()
    }

    /// Waits until something answers on the daemon's socket (for daemons the test starts itself).
    /// Runs `body` with a daemon for this home the test starts itself (`executable` with `arguments`, in a session of
    /// its own, its output in `<home>/daemon-stdout.log`), once its socket answers. The daemon is the test's child: it is
    /// killed if it still runs, and reaped, when `body` returns or throws.
    func withOwnDaemon<T>(
        executable: String = TestPaths.executable("ferry-agent"),
        arguments: [String],
        environment: [String: String] = ["PATH": AppSpec.defaultSearchPath],
        _ body: (Int32) async throws -> T
    ) async throws -> T {
        let daemon = try ProcessSpawner.spawn(
            ProcessSpawner.Request(
                executable: executable,
                arguments: arguments,
                environment: environment,
                standardOutput: .appending(path: "\(home)/daemon-stdout.log"),
                standardError: .appending(path: "\(home)/daemon-stdout.log"),
                grouping: .newSession
            )
        )
        defer {
            if Self.isAlive(daemon) { kill(daemon, SIGKILL) }
            var status: Int32 = 0
            waitpid(daemon, &status, 0)
        }
        try await waitForSocket()
        return try await body(daemon)
    }

    func waitForSocket() async throws {
        let path = manager.configuration.socketPath
        let answered = try await Self.eventually {
            guard case .success(let fd) = try UnixSocket.connect(to: path, timeout: .seconds(5)) else { return false }
            close(fd)
            return true
        }
        guard answered else { throw HarnessError("nothing answers on \(path)") }
    }

    /// Reads the JSON report `report.js` wrote for `pid`, waiting for it to appear.
    func report(instance: Int, pid: Int32) async throws -> [String: Any] {
        let path = "\(home)/out/report-\(instance)-\(pid).json"
        guard await Self.eventually({ FileManager.default.fileExists(atPath: path) }),
            let data = FileManager.default.contents(atPath: path),
            let object = try JSONSerialization.jsonObject(with: data) as? [String: Any]
        else { throw HarnessError("no report at \(path)") }
        return object
    }

    /// Reads the JSON report `report.js` wrote for `pid` whatever instance it names, waiting for it to appear.
    func report(pid: Int32) async throws -> [String: Any] {
        let directory = "\(home)/out"
        let suffix = "-\(pid).json"
        func path() -> String? {
            ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [])
                .first { $0.hasPrefix("report-") && $0.hasSuffix(suffix) }
                .map { "\(directory)/\($0)" }
        }
        guard await Self.eventually({ path() != nil }), let found = path(),
            let data = FileManager.default.contents(atPath: found),
            let object = try JSONSerialization.jsonObject(with: data) as? [String: Any]
        else { throw HarnessError("no report for pid \(pid) in \(directory)") }
        return object
    }

    static func summary(_ table: [ManagedProcess]) -> String {
        table.map { "\($0.name)#\($0.pmId) \($0.status.rawValue) pid=\($0.pid.map(String.init) ?? "-") restarts=\($0.restarts)" }
            .joined(separator: ", ")
    }

    // MARK: - Processes

    /// Whether `pid` is a live process (zombies count as gone).
    static func isAlive(_ pid: Int32) -> Bool {
        ProcStat.isAlive(pid: pid)
    }

    /// The pid in `<home>/supervisor.pid`.
    var daemonPidFromFile: Int32? {
        SmallFile.text("\(home)/supervisor.pid").flatMap { Int32($0) }
    }

    /// A free loopback port outside the ephemeral range (`LoopbackPorts`).
    static func freePort() throws -> Int { try LoopbackPorts.reserve() }

    /// `GET /` on 127.0.0.1:`port`; the body, or nil when nothing answers.
    static func httpGet(port: Int) async -> String? {
        try? await DedicatedThread.run(name: "test http") { () -> String? in
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { return nil }
            defer { close(fd) }
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            address.sin_port = UInt16(port).bigEndian
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard connected == 0 else { return nil }
            let deadline = ContinuousClock.now + .seconds(5)
            guard UnixSocket.write(Array("GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".utf8), to: fd, deadline: deadline) == nil else { return nil }
            var response: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 4096)
            while UnixSocket.waitUntilReady(fd, events: Int16(POLLIN), deadline: deadline) {
                let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if count <= 0 { break }
                response += chunk[..<count]
            }
            let text = String(decoding: response, as: UTF8.self)
            guard let split = text.range(of: "\r\n\r\n") else { return nil }
            return String(text[split.upperBound...])
        } ?? nil
    }

    /// Stops the daemon (shutdown request, then SIGKILL by pid) and every process whose command line names this
    /// home, then removes the directory.
    func cleanUp() async {
        _ = try? await manager.shutdown()
        for pid in processesUnderHome() {
            kill(pid, SIGKILL)
        }
        _ = await Self.eventually(timeout: .seconds(5)) { processesUnderHome().isEmpty }
        try? FileManager.default.removeItem(atPath: home)
    }

    /// Live processes (not zombies) whose command line mentions the home directory: the daemon (`--home`) and the
    /// apps (their script paths).
    func processesUnderHome() -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap(Int32.init).filter { pid in
            guard pid != getpid(), Self.isAlive(pid),
                let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline")
            else { return false }
            return String(decoding: data, as: UTF8.self).contains(home)
        }
    }
}

/// Node scripts the supervisor tests run.
enum TestApps {
    /// Writes `{pid, cwd, file, version, instance, env}` to `$OUT_DIR/report-<instance>-<pid>.json`, then idles.
    static let report = """
        const fs = require('fs'), path = require('path');
        let version = null;
        try { version = fs.readFileSync(path.join(__dirname, 'VERSION'), 'utf8').trim(); } catch (e) {}
        const report = { pid: process.pid, cwd: process.cwd(), file: __filename, version,
                         instance: process.env.NODE_APP_INSTANCE, env: process.env };
        const out = path.join(process.env.OUT_DIR, `report-${process.env.NODE_APP_INSTANCE}-${process.pid}.json`);
        fs.writeFileSync(out + '.tmp', JSON.stringify(report));
        fs.renameSync(out + '.tmp', out);
        setInterval(() => {}, 1000);
        """

    /// HTTP server on 127.0.0.1:$PORT answering `{pid, version, cwd}` (VERSION is read beside the script).
    static let server = """
        const http = require('http'), fs = require('fs'), path = require('path');
        const version = fs.readFileSync(path.join(__dirname, 'VERSION'), 'utf8').trim();
        http.createServer((req, res) => {
          res.end(JSON.stringify({ pid: process.pid, version, cwd: process.cwd() }));
        }).listen(Number(process.env.PORT), '127.0.0.1');
        """

    /// Exits with code 1 after 200 ms.
    static let crash = "setTimeout(() => process.exit(1), 200);\n"

    /// Ignores SIGINT (noting that it came in $MARKER), after writing $READY.
    static let stubborn = """
        const fs = require('fs');
        process.on('SIGINT', () => { fs.writeFileSync(process.env.MARKER, 'got SIGINT'); });
        fs.writeFileSync(process.env.READY, 'ready');
        setInterval(() => {}, 1000);
        """

    /// Writes 3000 lines of 100 bytes to stdout, then `done`, then idles.
    static let chatty = """
        const line = 'x'.repeat(99) + '\\n';
        let text = '';
        for (let i = 0; i < 3000; i++) text += line;
        process.stdout.write(text, () => process.stdout.write('done\\n'));
        setInterval(() => {}, 1000);
        """

    /// Holds about 120 MiB of touched memory.
    static let hog = """
        const block = Buffer.alloc(120 * 1024 * 1024, 1);
        setInterval(() => { block[0]++; }, 100);
        """
}

/// Counts the files renamed into a directory under one name (inotify `IN_MOVED_TO`): how often an atomic write
/// (`AtomicFile`: a temp file renamed over the old one) replaced that file. The renames away from the temp names
/// (`IN_MOVED_FROM`) are watched too: the kernel merges an unread event into the one before it when both are the same
/// (mask, watch and name; not the cookie), so watching `IN_MOVED_TO` alone counted 17 renames as one.
final class RenameCounter {
    private let descriptor: Int32
    private let name: String

    init(directory: String, name: String) throws {
        descriptor = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        guard descriptor >= 0 else { throw HarnessError("inotify_init1: errno \(errno)") }
        guard inotify_add_watch(descriptor, directory, UInt32(IN_MOVED_TO | IN_MOVED_FROM)) >= 0 else {
            close(descriptor)
            throw HarnessError("inotify_add_watch \(directory): errno \(errno)")
        }
        self.name = name
    }

    deinit { close(descriptor) }

    /// The renames onto the file since the last call.
    func count() -> Int {
        var total = 0
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let read = buffer.withUnsafeMutableBytes { Glibc.read(descriptor, $0.baseAddress, $0.count) }
            guard read > 0 else { return total }
            var offset = 0
            // struct inotify_event: wd (4), mask (4), cookie (4), len (4), then `len` bytes of NUL-padded name.
            while offset + 16 <= read {
                func word(_ at: Int) -> Int {
                    Int(buffer[at]) | Int(buffer[at + 1]) << 8 | Int(buffer[at + 2]) << 16 | Int(buffer[at + 3]) << 24
                }
                let (mask, length) = (word(offset + 4), word(offset + 12))
                let nameBytes = buffer[(offset + 16)..<min(offset + 16 + length, read)].prefix { $0 != 0 }
                if mask & Int(IN_MOVED_TO) != 0, String(decoding: nameBytes, as: UTF8.self) == name { total += 1 }
                offset += 16 + length
            }
        }
    }
}
