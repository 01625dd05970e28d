import Foundation
import Shared
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// TCP ports on 127.0.0.1 for the apps, controllers and stand-ins a test starts on a port it names.
///
/// Not from `bind(port 0)`: that hands out ports of the kernel's ephemeral range, the same range every outgoing
/// connection takes its local port from. A port handed to a test sits free whenever its app is down (between a kill
/// and a restart, during a reload), and any connection opened then, by any test running alongside, may take it as its
/// local port and hold it for as long as it stays open: the app's next start fails with EADDRINUSE and crash-loops.
/// So ports come from just below the ephemeral range (`net.ipv4.ip_local_port_range`), which only an explicit
/// `bind` uses, from a random starting point, and never the same one twice in a test process; each is checked free
/// (bound without `SO_REUSEADDR`, then closed) when handed out.
public enum LoopbackPorts {
    /// The window below the ephemeral range that ports are taken from.
    package static let window = 10_000

    /// The first port handed out, read once from the kernel's setting.
    package static let low = ephemeralRangeStart() - window

    private static let next = Mutex(Int.random(in: 0..<window) + low)

    /// A port nothing is bound to now, never handed out before in this process nor held by another test process on
    /// this machine.
    public static func reserve() throws -> Int {
        for _ in 0..<window {
            let port = next.withLock { next -> Int in
                let port = next
                next = port + 1 >= low + window ? low : port + 1
                return port
            }
            if isFree(port), claim(port) { return port }
        }
        throw HarnessError("no free port on 127.0.0.1 in \(low)..<\(low + window)")
    }

    /// Directory of the per-port lock files shared by every test process of the machine.
    package static let claimDirectory = FileManager.default.temporaryDirectory.appendingPathComponent("ferry-test-ports").path

    /// Lock files held for the rest of this process (the kernel drops the locks when it exits, however it ends).
    private static let claims = Mutex<[Int32]>([])

    /// Takes the port's lock file for the life of this process, or returns `false` when another process holds it.
    ///
    /// Two test processes on one machine (a second `swift test`, a CI run next to a developer's) draw from the same
    /// window: a port being free when handed out does not keep it free until its app binds it, seconds later, or
    /// between a kill and a restart. Without the lock the other process could hand out the same port, and one app would
    /// answer on the other's port (seen as "v1 serving" answered by a stranger while the test's own app crash-looped
    /// on EADDRINUSE).
    package static func claim(_ port: Int) -> Bool {
        if mkdir(claimDirectory, 0o1777) == 0 { chmod(claimDirectory, 0o1777) }
        let fd = open("\(claimDirectory)/\(port).lock", O_RDONLY | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return true }  // no shared directory: the in-process guarantee still holds
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            close(fd)
            return false
        }
        claims.withLock { $0.append(fd) }
        return true
    }

    /// The first port of the kernel's ephemeral range (32768 when it cannot be read), at least 1024 + the window.
    static func ephemeralRangeStart() -> Int {
        let text = (try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8)) ?? ""
        let first = text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).first.flatMap { Int($0) } ?? 32768
        return max(first, 1024 + window)
    }

    /// Whether 127.0.0.1:`port` can be bound now.
    static func isFree(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }
}

extension LoopbackPorts {
    /// Every TCP socket on a port of the window (any state), with the process holding it: what a failed test prints, so
    /// an app crash-looping on EADDRINUSE names whoever has its port.
    public static func holders() -> String {
        let states = ["01": "ESTABLISHED", "06": "TIME_WAIT", "0A": "LISTEN", "08": "CLOSE_WAIT"]
        var sockets: [(port: Int, state: String, inode: String)] = []
        for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
            let text = (try? String(contentsOfFile: file, encoding: .utf8)) ?? ""
            for line in text.split(separator: "\n").dropFirst() {
                let fields = line.split(separator: " ")
                guard fields.count > 9, let colon = fields[1].lastIndex(of: ":"),
                    let port = Int(fields[1][fields[1].index(after: colon)...], radix: 16),
                    (low..<low + window).contains(port)
                else { continue }
                sockets.append((port, states[String(fields[3])] ?? "state \(fields[3])", String(fields[9])))
            }
        }
        guard !sockets.isEmpty else { return "no TCP socket on ports \(low)..<\(low + window)" }
        var owners: [String: Int32] = [:]
        for name in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = Int32(name), let fds = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(name)/fd") else { continue }
            for fd in fds {
                guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(name)/fd/\(fd)"),
                    target.hasPrefix("socket:[")
                else { continue }
                owners[String(target.dropFirst(8).dropLast())] = pid
            }
        }
        return sockets.sorted { $0.port < $1.port }.map { socket in
            guard let pid = owners[socket.inode] else { return "port \(socket.port) \(socket.state): no process" }
            let command = ((try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline"))) ?? Data())
                .split(separator: 0).map { String(decoding: $0, as: UTF8.self) }.joined(separator: " ")
            let cwd = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/cwd")) ?? "?"
            return "port \(socket.port) \(socket.state): pid \(pid) [\(command.prefix(200))] in \(cwd)"
        }.joined(separator: "\n")
    }
}
