import Glibc

/// The two ends of a pipe, both close-on-exec: a child gets only the descriptors it is handed explicitly.
package struct PipeDescriptors: Sendable {
    package let readEnd: Int32
    package let writeEnd: Int32

    /// Opens a pipe; with `nonBlocking`, both ends are non-blocking (wake-up pipes of `poll` loops).
    package static func open(nonBlocking: Bool = false) throws(SystemCallError) -> PipeDescriptors {
        var ends: [Int32] = [-1, -1]
        guard pipe(&ends) == 0 else { throw SystemCallError(operation: "pipe", errno: errno) }
        for fd in ends {
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            if nonBlocking { setNonBlocking(fd) }
        }
        return PipeDescriptors(readEnd: ends[0], writeEnd: ends[1])
    }

    /// Makes reads and writes on `fd` return `EAGAIN` instead of waiting.
    package static func setNonBlocking(_ fd: Int32) {
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
    }
}

/// A system call that failed.
package struct SystemCallError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The call, and what it was for when that helps (`pipe`, `poll`).
    package var operation: String
    package var errno: Int32

    package init(operation: String, errno: Int32) {
        self.operation = operation
        self.errno = errno
    }

    package var description: String { "\(operation) failed: \(SystemErrorText.describe(errno))" }
}
