import Glibc
import Shared

/// Blocking Unix-domain stream socket helpers for the supervisor's socket protocol. Callers run them on a
/// `DedicatedThread`, never on the cooperative pool. Every wait is bounded by a deadline.
package enum UnixSocket {
    /// Longest socket path `sockaddr_un` can hold (108 bytes including the terminating NUL).
    static let maximumPathBytes = MemoryLayout<sockaddr_un>.size - MemoryLayout<sa_family_t>.size - 1

    /// Binds and listens on `path` (mode 0600), replacing a stale socket file left by a dead daemon.
    ///
    /// The caller must hold the home directory's lock: only then is an existing socket file known to be stale.
    static func listen(at path: String, backlog: Int32 = 64) throws(SupervisorError) -> Int32 {
        var address = try makeAddress(path)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .system(operation: "socket(AF_UNIX)", errno: errno) }
        if unlink(path) != 0 && errno != ENOENT {
            let error = errno
            close(fd)
            throw .path(operation: "unlink stale socket", path: path, errno: error)
        }
        // Linux makes the socket file with the socket's own mode, less the umask: 0600 before `bind`, the file is 0600
        // from its first instant. Made with the default 0777 less the caller's umask (0 or 022) and narrowed by a chmod
        // after `bind`, it could be connected to in between by another user (a home in a looser directory). The process's
        // umask is not touched: apps started meanwhile on other threads would keep a narrowed one for life.
        guard fchmod(fd, 0o600) == 0 else {
            let error = errno
            close(fd)
            throw .path(operation: "fchmod socket", path: path, errno: error)
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        let bindError = errno
        guard bound == 0 else {
            close(fd)
            throw .path(operation: "bind", path: path, errno: bindError)
        }
        guard Glibc.listen(fd, backlog) == 0 else {
            let error = errno
            close(fd)
            throw .path(operation: "listen", path: path, errno: error)
        }
        return fd
    }

    /// Connects to the socket at `path`; returns the descriptor, or the `errno` of the failure (`ENOENT` and
    /// `ECONNREFUSED` mean no daemon listens there, `EAGAIN` that its backlog stayed full for `timeout`).
    ///
    /// A blocking `connect` to a Unix socket whose listener stopped accepting waits, once the backlog is full, until
    /// it is accepted: for ever if the daemon is wedged. The send timeout bounds that wait (Linux's
    /// `unix_stream_connect` waits at most `SO_SNDTIMEO`, then fails with `EAGAIN`).
    static func connect(to path: String, timeout: Duration) throws(SupervisorError) -> Result<Int32, Errno> {
        var address = try makeAddress(path)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .system(operation: "socket(AF_UNIX)", errno: errno) }
        let milliseconds = Int(milliseconds(max(timeout, .milliseconds(1))))
        var limit = timeval(tv_sec: milliseconds / 1000, tv_usec: (milliseconds % 1000) * 1000)
        guard setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size)) == 0 else {
            let error = errno
            close(fd)
            throw .system(operation: "setsockopt(SO_SNDTIMEO)", errno: error)
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else {
            let error = errno
            close(fd)
            return .failure(Errno(error))
        }
        return .success(fd)
    }

    /// `connect(to:timeout:)` for clients of other sockets (PM2's): every failure is an `errno`, `ENAMETOOLONG` for a
    /// path `sockaddr_un` cannot hold.
    package static func connectReportingErrno(to path: String, timeout: Duration) -> Result<Int32, Errno> {
        do {
            return try connect(to: path, timeout: timeout)
        } catch .socketPathTooLong {
            return .failure(Errno(ENAMETOOLONG))
        } catch .system(_, let code) {
            return .failure(Errno(code))
        } catch {
            return .failure(Errno(EINVAL))
        }
    }

    /// Writes all of `bytes`, waiting at most until `deadline`. Returns `nil` on success, else the `errno`
    /// (`ETIMEDOUT` when the deadline passed). Never raises SIGPIPE. Never blocks past the deadline either, on a blocking
    /// descriptor too: "ready to write" means room for some bytes, and a blocking `send` of more waited until the peer
    /// read them all (a client that asked for a large table and stopped reading held the daemon's connection for good).
    package static func write(_ bytes: [UInt8], to fd: Int32, deadline: ContinuousClock.Instant) -> Int32? {
        var offset = 0
        while offset < bytes.count {
            guard waitUntilReady(fd, events: Int16(POLLOUT), deadline: deadline) else { return ETIMEDOUT }
            let sent = bytes.withUnsafeBytes { raw in
                send(fd, raw.baseAddress.map { $0 + offset }, bytes.count - offset, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
            }
            if sent < 0 {
                if errno == EINTR || errno == EAGAIN { continue }
                return errno
            }
            offset += sent
        }
        return nil
    }

    /// Waits until `fd` is ready for `events` or the deadline passes. Returns whether it is ready (an error or
    /// hang-up also counts as ready, so the following read or write reports it).
    package static func waitUntilReady(_ fd: Int32, events: Int16, deadline: ContinuousClock.Instant) -> Bool {
        while true {
            let remaining = ContinuousClock.now.duration(to: deadline)
            guard remaining > .zero else { return false }
            var descriptor = pollfd(fd: fd, events: events, revents: 0)
            let result = poll(&descriptor, 1, milliseconds(remaining))
            if result > 0 { return true }
            if result < 0 && errno != EINTR { return true }
        }
    }

    /// A duration as a poll timeout: whole milliseconds, rounded up, at least 1, at most `Int32.max`.
    static func milliseconds(_ duration: Duration) -> Int32 {
        let (seconds, attoseconds) = duration.components
        let total = seconds * 1000 + (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000
        return Int32(clamping: max(1, total))
    }

    private static func makeAddress(_ path: String) throws(SupervisorError) -> sockaddr_un {
        let bytes = Array(path.utf8)
        guard bytes.count <= maximumPathBytes else { throw .socketPathTooLong(path: path, limit: maximumPathBytes) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        return address
    }

    /// An `errno` value as an `Error`.
    package struct Errno: Error, Sendable, Equatable {
        package var code: Int32
        package init(_ code: Int32) { self.code = code }
    }
}

/// Reads newline-delimited lines from a blocking socket with a size limit and a deadline.
struct LineReader: Sendable {
    /// The result of one `readLine`.
    enum Outcome: Sendable, Equatable {
        /// One line, without its newline.
        case line([UInt8])
        /// The peer closed the connection; `partial` holds bytes received after the last newline.
        case endOfStream(partial: [UInt8])
        /// More than `limit` bytes arrived without a newline.
        case tooLong
        /// The deadline passed first.
        case timedOut
        /// `recv` failed.
        case failed(errno: Int32)
    }

    let fd: Int32
    private var buffer: [UInt8] = []

    init(fd: Int32) {
        self.fd = fd
    }

    /// The next line, reading at most `limit` bytes of it, waiting at most until `deadline`.
    mutating func readLine(limit: Int, deadline: ContinuousClock.Instant) -> Outcome {
        var scanned = 0
        while true {
            if let newline = buffer[scanned...].firstIndex(of: UInt8(ascii: "\n")) {
                let line = Array(buffer[..<newline])
                buffer.removeSubrange(...newline)
                return line.count > limit ? .tooLong : .line(line)
            }
            scanned = buffer.count
            if buffer.count > limit { return .tooLong }
            guard UnixSocket.waitUntilReady(fd, events: Int16(POLLIN), deadline: deadline) else { return .timedOut }
            var chunk = [UInt8](repeating: 0, count: 64 * 1024)
            let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count < 0 {
                if errno == EINTR || errno == EAGAIN { continue }
                return .failed(errno: errno)
            }
            if count == 0 {
                defer { buffer.removeAll() }
                return .endOfStream(partial: buffer)
            }
            buffer.append(contentsOf: chunk[..<count])
        }
    }
}
