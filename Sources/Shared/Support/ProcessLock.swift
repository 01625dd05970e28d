#if canImport(Glibc)
import Glibc
#endif

/// An exclusive `flock` on a file, held for the rest of the process (the kernel drops it when the process ends, however
/// it ends), with the holder's pid written in it for the message of the next process that finds it taken.
package enum ProcessLock {
    /// Why the lock was not taken.
    package enum Failure: Error, Equatable {
        /// Another process holds it; its pid, when the file says.
        case held(holder: String?)
        /// The file could not be opened or locked: which call failed, and its errno.
        case unavailable(operation: String, errno: Int32)

        /// "open: Permission denied".
        package var reason: String {
            switch self {
            case .held(let holder): "held by \(holder.map { "pid \($0)" } ?? "another process")"
            case .unavailable(let operation, let error): "\(operation): \(String(cString: strerror(error)))"
            }
        }
    }

    /// Takes the lock of `path` (created 0600 when missing), writing this pid into it. Returns the descriptor, which
    /// the caller keeps open for as long as the lock is to be held.
    package static func acquire(_ path: String) throws(Failure) -> Int32 {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw .unavailable(operation: "open", errno: errno) }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let error = errno
            var buffer = [UInt8](repeating: 0, count: 32)
            let count = read(fd, &buffer, buffer.count)
            close(fd)
            guard error == EWOULDBLOCK else { throw .unavailable(operation: "flock", errno: error) }
            let digits = count > 0 ? Array(buffer[0..<count].prefix { (0x30...0x39).contains($0) }) : []
            throw .held(holder: digits.isEmpty ? nil : String(decoding: digits, as: UTF8.self))
        }
        let pid = Array("\(getpid())\n".utf8)
        if ftruncate(fd, 0) == 0 { _ = pid.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) } }
        return fd
    }
}
