import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A TCP proxy on 127.0.0.1 in front of a real server (PostgreSQL in the tests) that can go **silent**: from `silence()`
/// on, it keeps every connection open and reads what either side sends, but forwards nothing, as a database host that
/// froze or a network path that drops packets looks to the client (its kernel still acknowledges, so TCP alone never
/// notices). `speak()` forwards again (new connections; bytes swallowed while silent are gone, so old connections are
/// broken for good, as after a real outage). Real sockets, one thread per direction of each connection.
public final class SilenceableTCPProxy: Sendable {
    /// The port clients connect to.
    public let port: Int
    private let upstreamPort: Int
    private let listener: Int32
    private let silent = Atomic(false)
    /// Every descriptor open (the listener's included), shut down and closed by `stop()`.
    private let descriptors = Mutex<Set<Int32>>([])
    private let stopped = Atomic(false)

    /// Starts forwarding `127.0.0.1:port` to `127.0.0.1:upstreamPort`.
    public init(upstreamPort: Int) throws {
        self.upstreamPort = upstreamPort
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw HarnessError("socket: errno \(errno)") }
        var address = Self.loopback(port: 0)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(fd, 64) == 0 else {
            close(fd)
            throw HarnessError("bind/listen on 127.0.0.1: errno \(errno)")
        }
        var actual = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &actual) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        self.port = Int(UInt16(bigEndian: actual.sin_port))
        self.listener = fd
        descriptors.withLock { _ = $0.insert(fd) }
        let thread = Thread { [self] in acceptLoop() }
        thread.start()
    }

    /// From now on nothing is forwarded, in either direction, on any connection.
    public func silence() { silent.store(true, ordering: .sequentiallyConsistent) }

    /// Forwards again.
    public func speak() { silent.store(false, ordering: .sequentiallyConsistent) }

    /// Shuts the listener and every connection down (both sides); the threads end and close what they hold.
    ///
    /// Only `shutdown`, never `close`, while a thread may still use a descriptor: a closed number is handed to the next
    /// socket any test of this process opens, which a thread still reading or sending would then use.
    public func stop() {
        guard !stopped.exchange(true, ordering: .sequentiallyConsistent) else { return }
        for fd in descriptors.withLock({ $0 }) { shutdown(fd, Int32(SHUT_RDWR)) }
    }

    private func track(_ fd: Int32) -> Bool {
        descriptors.withLock { descriptors in
            guard !stopped.load(ordering: .sequentiallyConsistent) else { return false }
            descriptors.insert(fd)
            return true
        }
    }

    /// Closes `fd`, which no thread uses any more.
    private func release(_ fd: Int32) {
        descriptors.withLock { _ = $0.remove(fd) }
        close(fd)
    }

    /// One connection's two descriptors, closed once both of its pumps have ended.
    private final class Pair: Sendable {
        let client: Int32
        let upstream: Int32
        private let running = Mutex(2)

        init(client: Int32, upstream: Int32) {
            self.client = client
            self.upstream = upstream
        }

        /// A pump ended; returns whether it was the last.
        func pumpEnded() -> Bool {
            running.withLock { count in
                count -= 1
                return count == 0
            }
        }
    }

    private func acceptLoop() {
        defer { release(listener) }
        while !stopped.load(ordering: .sequentiallyConsistent) {
            let client = accept(listener, nil, nil)
            guard client >= 0 else {
                if errno == EINTR { continue }
                return
            }
            guard track(client) else {
                close(client)
                return
            }
            let upstream = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = Self.loopback(port: upstreamPort)
            let connected =
                upstream >= 0
                && withUnsafePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(upstream, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
                } == 0
            guard connected, track(upstream) else {
                if upstream >= 0 { close(upstream) }
                release(client)
                continue
            }
            let pair = Pair(client: client, upstream: upstream)
            for (from, to) in [(client, upstream), (upstream, client)] {
                Thread { [self] in pump(from: from, to: to, pair: pair) }.start()
            }
        }
    }

    /// Copies `from` to `to` while not silent; swallows while silent. Ends at EOF or an error, shutting both sides
    /// down (so the other pump of the pair ends too); the last of the two closes them.
    private func pump(from: Int32, to: Int32, pair: Pair) {
        var buffer = [UInt8](repeating: 0, count: 16 * 1024)
        defer {
            shutdown(from, Int32(SHUT_RDWR))
            shutdown(to, Int32(SHUT_RDWR))
            if pair.pumpEnded() {
                release(pair.client)
                release(pair.upstream)
            }
        }
        while true {
            let count = buffer.withUnsafeMutableBytes { read(from, $0.baseAddress, $0.count) }
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { return }
            if silent.load(ordering: .sequentiallyConsistent) { continue }
            var offset = 0
            while offset < count {
                let written = buffer.withUnsafeBytes { send(to, $0.baseAddress! + offset, count - offset, Int32(MSG_NOSIGNAL)) }
                if written < 0, errno == EINTR { continue }
                guard written > 0 else { return }
                offset += written
            }
        }
    }

    private static func loopback(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return address
    }
}
