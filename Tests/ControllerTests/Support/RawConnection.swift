import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A plain TCP connection to 127.0.0.1 that sends exactly what a test writes, for clients no HTTP library would be:
/// slow, silent, stalled. Reads never block a thread (non-blocking `recv` between short sleeps), so many of them can
/// wait at once without starving the server's handlers on the cooperative pool. Closed (by its file descriptor) when
/// released.
final class RawConnection {
    private let fd: Int32
    /// Everything received so far.
    private(set) var received: [UInt8] = []
    /// Whether the server closed the connection (a read returned 0, or the connection was reset).
    private(set) var isClosedByPeer = false

    /// Connects to `127.0.0.1:port`. A small `receiveBuffer` makes the kernel stop accepting the server's bytes early
    /// (a client that does not read).
    init(port: Int, receiveBuffer: Int32? = nil) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw FixtureError("socket: \(String(cString: strerror(errno)))") }
        if var size = receiveBuffer {
            _ = setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw FixtureError("connect to 127.0.0.1:\(port): \(reason)")
        }
    }

    deinit { close(fd) }

    /// Sends `text` (all of it, or throws).
    func send(_ text: String) throws {
        var bytes = Array(text.utf8)[...]
        while !bytes.isEmpty {
            let sent = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard sent > 0 else { throw FixtureError("send: \(String(cString: strerror(errno)))") }
            bytes = bytes.dropFirst(sent)
        }
    }

    /// Half-closes the connection (`shutdown(SHUT_WR)`): the server reads the end of its input, and can still answer.
    func finishSending() throws {
        guard shutdown(fd, Int32(SHUT_WR)) == 0 else { throw FixtureError("shutdown: \(String(cString: strerror(errno)))") }
    }

    /// Makes the close (when released) a reset (`SO_LINGER` 0): the server learns at once that the client is gone. A
    /// plain close sends a FIN, which is all the server sees of a client that only half-closes too.
    func resetWhenClosed() {
        var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
        _ = setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
    }

    /// Reads what is there now, without waiting.
    func poll() {
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while !isClosedByPeer {
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if count > 0 {
                received += buffer[0..<count]
            } else if count == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                isClosedByPeer = true
            } else {
                return
            }
        }
    }

    /// Waits until the server closes the connection; the time from `since` (default: this call) until it was seen
    /// closed, or `nil` when it stayed open `timeout` long. A test of a server-side timer passes an instant taken before
    /// whatever starts that timer (the connect, the request sent): the server's clock then starts no earlier than the
    /// test's, so a late poll cannot make a timer look early.
    func waitUntilClosed(timeout: Duration, since: ContinuousClock.Instant? = nil) async throws -> Duration? {
        let start = ContinuousClock.now
        while ContinuousClock.now - start < timeout {
            poll()
            if isClosedByPeer { return ContinuousClock.now - (since ?? start) }
            try await Task.sleep(for: .milliseconds(20))
        }
        return nil
    }

    /// Waits for a complete response head and returns its status code (`nil`: none came within `timeout`, or the
    /// connection closed first).
    func waitForStatus(timeout: Duration) async throws -> Int? {
        let start = ContinuousClock.now
        while ContinuousClock.now - start < timeout {
            poll()
            let text = String(decoding: received, as: UTF8.self)
            if let end = text.range(of: "\r\n\r\n") {
                let statusLine = text[..<end.lowerBound].split(separator: "\r\n").first ?? ""
                let parts = statusLine.split(separator: " ")
                return parts.count >= 2 ? Int(parts[1]) : nil
            }
            if isClosedByPeer { return nil }
            try await Task.sleep(for: .milliseconds(20))
        }
        return nil
    }

    /// The value of a header of the first response received (case-insensitive name).
    func header(_ name: String) -> String? {
        let text = String(decoding: received, as: UTF8.self)
        guard let end = text.range(of: "\r\n\r\n") else { return nil }
        for line in text[..<end.lowerBound].split(separator: "\r\n").dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            if line[..<colon].lowercased() == name.lowercased() {
                return line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            }
        }
        return nil
    }
}
