import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import Shared

#if canImport(Glibc)
import Glibc
#endif

/// The floor under the report-burst figure: nginx answering `204` to the very requests the agents sent the controller
/// after the wake (same bytes, same paths and tokens, one kept-alive connection each, TLS when the run is TLS), replayed
/// on the same schedule. nginx reads and discards each body and stores nothing, so its latencies are what the machine
/// and the generator cost on their own: a goal under them is out of reach of any HTTP server on this machine.
struct NginxBaseline {
    let pid: pid_t
    let port: Int
    private let directory: String

    /// Starts `executable` (nginx) on a free loopback port, configured for `connections` kept-alive connections, and
    /// waits until it accepts one.
    static func start(executable: String, directory: String, connections: Int, tls: (certificate: String, key: String)?) async throws -> NginxBaseline
    {
        let root = directory + "/nginx"
        for sub in ["", "/tmp"] { try FileManager.default.createDirectory(atPath: root + sub, withIntermediateDirectories: true) }
        let port = try freePort()
        let listen = tls == nil ? "listen 127.0.0.1:\(port);" : "listen 127.0.0.1:\(port) ssl;"
        let certificate = tls.map { "ssl_certificate \($0.certificate); ssl_certificate_key \($0.key);" } ?? ""
        // As root, workers would run as `nobody` and could not use the work directory (mode 0700).
        let user = getuid() == 0 ? "user root;" : ""
        let configuration = """
            \(user)
            daemon off;
            worker_processes auto;
            worker_rlimit_nofile \(connections * 2 + 2048);
            pid \(root)/nginx.pid;
            error_log \(root)/error.log warn;
            events { worker_connections \(connections + 1024); }
            http {
                access_log off;
                client_body_temp_path \(root)/tmp/body;
                proxy_temp_path \(root)/tmp/proxy;
                fastcgi_temp_path \(root)/tmp/fastcgi;
                uwsgi_temp_path \(root)/tmp/uwsgi;
                scgi_temp_path \(root)/tmp/scgi;
                client_body_buffer_size 64k;
                keepalive_requests 1000000;
                keepalive_timeout 600s;
                server {
                    \(listen)
                    \(certificate)
                    location / { return 204; }
                }
            }

            """
        try configuration.write(toFile: root + "/nginx.conf", atomically: true, encoding: .utf8)
        let pid = try ProcessSpawner.spawn(
            .init(
                executable: executable,
                arguments: [executable, "-p", root, "-e", root + "/error.log", "-c", root + "/nginx.conf"],
                environment: ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin"],
                standardOutput: .appending(path: root + "/nginx.out"),
                standardError: .appending(path: root + "/nginx.out")
            )
        )
        let baseline = NginxBaseline(pid: pid, port: port, directory: root)
        let started = ContinuousClock.now
        while !accepts(port: port) {
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid {
                let log = (try? String(contentsOfFile: root + "/nginx.out", encoding: .utf8)) ?? ""
                throw BenchError("nginx exited at start (status \(status)): \(log)")
            }
            guard ContinuousClock.now - started < .seconds(10) else {
                await baseline.stop()
                throw BenchError("nginx did not listen on 127.0.0.1:\(port) within 10 s")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        return baseline
    }

    /// nginx's master and workers: CPU seconds so far (workers are read live; they are not reaped before the end).
    var cpuSeconds: Double {
        ([pid] + workers).compactMap { ProcessUsage.read(pid: $0)?.cpuSeconds }.reduce(0, +)
    }

    /// Stops nginx (SIGTERM: its fast shutdown, which ends the workers too) and reaps it; SIGKILL after 10 s.
    func stop() async {
        await BenchController.terminate(pid, grace: .seconds(10), name: "nginx")
    }

    /// The master's children, from `/proc`.
    private var workers: [pid_t] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { entry in
            guard let candidate = pid_t(entry),
                let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")")
            else { return nil }
            // Field 4 (ppid) is the second after the name.
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            return fields.count > 1 && pid_t(fields[1]) == pid ? candidate : nil
        }
    }

    private static func freePort() throws -> Int {
        let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard socket >= 0 else { throw BenchError("socket: \(String(cString: strerror(errno)))") }
        defer { close(socket) }
        var address = loopback(port: 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(socket, $0, length) == 0 && getsockname(socket, $0, &length) == 0 }
        }
        guard bound else { throw BenchError("binding 127.0.0.1:0: \(String(cString: strerror(errno)))") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    private static func accepts(port: Int) -> Bool {
        let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard socket >= 0 else { return false }
        defer { close(socket) }
        var address = loopback(port: port)
        return withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(socket, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }

    private static func loopback(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        return address
    }
}

/// One request of the burst as the controller got it, to send again elsewhere.
struct BurstRequest: Sendable {
    var path: String
    var token: String
    var body: [UInt8]
    /// When it was sent, from the first request of the burst.
    var offset: Duration
}

extension NginxBaseline {
    /// Opens one connection per request, then sends each request at its offset from a common start (on the
    /// connection's event loop, as the agents sent theirs) and returns every latency, in the order given.
    func replay(_ requests: [BurstRequest], tls: NIOSSLContext?, group: any EventLoopGroup) async throws -> [Duration] {
        var connections: [BenchConnection] = []
        connections.reserveCapacity(requests.count)
        // Opened 64 at a time, like the agents' own enrolment, so nginx's accept queue does not overflow.
        for start in stride(from: 0, to: requests.count, by: 64) {
            let batch = try await withThrowingTaskGroup(of: (Int, BenchConnection).self) { tasks in
                for index in start..<min(requests.count, start + 64) {
                    tasks.addTask { (index, try await BenchConnection.connect(host: "127.0.0.1", port: port, tls: tls, group: group)) }
                }
                var opened: [(Int, BenchConnection)] = []
                for try await pair in tasks { opened.append(pair) }
                return opened.sorted { $0.0 < $1.0 }.map(\.1)
            }
            connections += batch
        }
        // A TLS handshake completes on the first exchange; one warm-up request each, as the agents had polled before.
        _ = try await withThrowingTaskGroup(of: Void.self) { tasks in
            for (connection, request) in zip(connections, requests) {
                tasks.addTask { _ = try await connection.exchange(.GET, request.path, token: request.token) }
            }
            try await tasks.waitForAll()
        }
        let origin = NIODeadline.now() + .milliseconds(500)
        let latencies = try await withThrowingTaskGroup(of: (Int, Duration).self) { tasks in
            for (index, (connection, request)) in zip(connections, requests).enumerated() {
                tasks.addTask {
                    let at =
                        origin
                        + .nanoseconds(
                            Int64(request.offset.components.seconds) * 1_000_000_000 + request.offset.components.attoseconds / 1_000_000_000
                        )
                    let response = try await connection.exchange(.POST, request.path, token: request.token, body: request.body, at: at)
                    guard response.status == 204 else { throw BenchError("nginx answered \(response.status) to a replayed report") }
                    return (index, response.latency)
                }
            }
            var latencies = Array(repeating: Duration.zero, count: requests.count)
            for try await (index, latency) in tasks { latencies[index] = latency }
            return latencies
        }
        for connection in connections { await connection.close() }
        return latencies
    }
}
