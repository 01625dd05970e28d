import Glibc
import Shared

/// Failures of the builtin supervisor's machinery (daemon and client), with the context needed to act on them.
///
/// A request the daemon refused arrives as `.rejected` with the daemon's `SupervisorFailure`.
enum SupervisorError: Error, Sendable, CustomStringConvertible {
    /// A system call failed.
    case system(operation: String, errno: Int32)
    /// A system call on a file or socket path failed.
    case path(operation: String, path: String, errno: Int32)
    /// Unix socket paths are limited to 107 bytes.
    case socketPathTooLong(path: String, limit: Int)
    /// Another daemon holds the home directory's lock.
    case alreadyRunning(home: String, pid: String)
    /// A program could not be started (`posix_spawn` refused, or glibc is too old).
    case spawn(SpawnError)
    /// The system refused another thread.
    case threadUnavailable(DedicatedThread.StartFailure)
    /// The interpreter of an app is not on its `PATH`.
    case interpreterNotFound(interpreter: String, searchPath: String)
    /// `ferry-agent supervisor --detach` did not exit 0.
    case detachFailed(executable: String, arguments: [String], status: String)
    /// Nothing answered on the socket in time, even after spawning the daemon.
    case daemonUnreachable(socketPath: String, waited: Duration, lastErrno: Int32, logTail: String)
    /// No daemon listens, and the client only looks (`Configuration.startsDaemon` is off).
    case notRunning(socketPath: String)
    /// The daemon did not answer in time.
    case requestTimedOut(operation: SupervisorOperation, socketPath: String, timeout: Duration)
    /// The daemon closed the connection without answering.
    case connectionClosed(operation: SupervisorOperation, socketPath: String)
    /// The daemon's answer is not a response this client understands.
    case malformedResponse(operation: SupervisorOperation, reason: String)
    /// The daemon refused the request.
    case rejected(operation: SupervisorOperation, failure: SupervisorFailure)
    /// The saved app table cannot be read or written.
    case appTable(path: String, reason: String)

    var description: String {
        switch self {
        case .system(let operation, let errno):
            "\(operation) failed: \(Self.text(errno))"
        case .path(let operation, let path, let errno):
            "\(operation) \(path) failed: \(Self.text(errno))"
        case .socketPathTooLong(let path, let limit):
            "supervisor socket path \(path) is \(path.utf8.count) bytes; Unix sockets allow at most \(limit): use a shorter --home"
        case .alreadyRunning(let home, let pid):
            "a supervisor daemon (pid \(pid)) already runs for \(home)"
        case .spawn(let error):
            "\(error)"
        case .threadUnavailable(let error):
            "\(error)"
        case .interpreterNotFound(let interpreter, let searchPath):
            "\(interpreter) not found on PATH \(searchPath) (the app's interpreter, or its script named as a program)"
        case .detachFailed(let executable, let arguments, let status):
            "starting the supervisor daemon with \(executable) \(arguments.joined(separator: " ")) failed: \(status)"
        case .daemonUnreachable(let socketPath, let waited, let lastErrno, let logTail):
            "no supervisor daemon answered on \(socketPath) within \(waited) (last error: \(Self.text(lastErrno)))"
                + (logTail.isEmpty ? "" : "; end of its log:\n\(logTail)")
        case .notRunning(let socketPath):
            "no supervisor daemon runs (nothing listens on \(socketPath)); this command only looks and does not start one (the agent starts it at its next pass)"
        case .requestTimedOut(let operation, let socketPath, let timeout):
            "supervisor request \(operation.rawValue) on \(socketPath) got no answer within \(timeout)"
        case .connectionClosed(let operation, let socketPath):
            "supervisor daemon on \(socketPath) closed the connection without answering \(operation.rawValue)"
        case .malformedResponse(let operation, let reason):
            "supervisor answer to \(operation.rawValue) is malformed: \(reason)"
        case .rejected(let operation, let failure):
            "supervisor refused \(operation.rawValue): \(failure.message) (\(failure.code.rawValue))"
        case .appTable(let path, let reason):
            "supervisor app table \(path): \(reason)"
        }
    }

    /// `strerror` text with the number, e.g. `No such file or directory (errno 2)`.
    static func text(_ errno: Int32) -> String {
        SystemErrorText.describe(errno)
    }

    /// A `SmallFile` failure in the supervisor's terms.
    init(_ failure: SmallFile.Failure) {
        self = .path(operation: failure.operation, path: failure.path, errno: failure.errno)
    }
}
