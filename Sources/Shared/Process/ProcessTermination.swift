import Glibc

/// How a child process ended.
package enum ProcessTermination: Sendable, Equatable, CustomStringConvertible {
    /// It exited with this status.
    case exited(Int32)
    /// A signal ended it.
    case signalled(Int32)

    /// The ending `waitpid` reported in `status` (`WIFEXITED`/`WEXITSTATUS`/`WTERMSIG`, which are C macros Swift
    /// cannot call).
    package init(waitStatus status: Int32) {
        if status & 0x7f == 0 {
            self = .exited((status >> 8) & 0xff)
        } else {
            self = .signalled(status & 0x7f)
        }
    }

    /// The ending `waitid` reported in `info`.
    package init(_ info: siginfo_t) {
        let status = info._sifields._sigchld.si_status
        self = info.si_code == Int32(CLD_EXITED) ? .exited(status) : .signalled(status)
    }

    /// Exit status 0.
    package var isSuccess: Bool { self == .exited(0) }

    package var description: String {
        switch self {
        case .exited(let code): "exit status \(code)"
        case .signalled(let signal): "killed by signal \(signal)"
        }
    }
}
