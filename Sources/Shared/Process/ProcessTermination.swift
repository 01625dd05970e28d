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

    /// The conventional name of a Linux signal number (`9` → `SIGKILL`), or `signal N` for one without a name here.
    package static func signalName(_ signal: Int32) -> String {
        let names: [Int32: String] = [
            1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 4: "SIGILL", 5: "SIGTRAP", 6: "SIGABRT", 7: "SIGBUS", 8: "SIGFPE", 9: "SIGKILL",
            10: "SIGUSR1", 11: "SIGSEGV", 12: "SIGUSR2", 13: "SIGPIPE", 14: "SIGALRM", 15: "SIGTERM", 16: "SIGSTKFLT", 17: "SIGCHLD",
            18: "SIGCONT", 19: "SIGSTOP", 20: "SIGTSTP", 21: "SIGTTIN", 22: "SIGTTOU", 23: "SIGURG", 24: "SIGXCPU", 25: "SIGXFSZ",
            26: "SIGVTALRM", 27: "SIGPROF", 28: "SIGWINCH", 29: "SIGIO", 30: "SIGPWR", 31: "SIGSYS",
        ]
        return names[signal] ?? "signal \(signal)"
    }

    package var description: String {
        switch self {
        case .exited(let code): "exit status \(code)"
        case .signalled(let signal): "killed by signal \(signal)"
        }
    }
}
