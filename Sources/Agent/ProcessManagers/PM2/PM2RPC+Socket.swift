import Glibc
import Shared
import Supervisor
import Synchronization

extension PM2RPC {
    /// The process table as `getMonitorData` answers it (what `pm2 jlist` prints), one element per instance.
    ///
    /// Blocking socket I/O on a thread of its own, bounded by `timeout`; at most `limit` bytes are accepted.
    static func monitorData(socketPath: String, timeout: Duration, limit: Int) async throws(Failure) -> [JSONValue] {
        let id = nextCallID()
        let request = call(method: "getMonitorData", id: id)
        let outcome: Result<[JSONValue], Failure>
        do {
            outcome = try await DedicatedThread.run(name: "pm2 rpc") {
                Result { () throws(Failure) -> [JSONValue] in
                    try exchange(request, id: id, socketPath: socketPath, deadline: .now + timeout, timeout: timeout, limit: limit)
                }
            }
        } catch {
            throw .socket(operation: "start a thread for the pm2 rpc call", errno: (error as? DedicatedThread.StartFailure)?.errno ?? EAGAIN)
        }
        return try outcome.get()
    }

    /// Connects, sends `request` and reads one answer (blocking).
    private static func exchange(
        _ request: [UInt8],
        id: String,
        socketPath: String,
        deadline: ContinuousClock.Instant,
        timeout: Duration,
        limit: Int
    ) throws(Failure) -> [JSONValue] {
        let fd: Int32
        switch UnixSocket.connectReportingErrno(to: socketPath, timeout: ContinuousClock.now.duration(to: deadline)) {
        case .success(let connected): fd = connected
        case .failure(let error) where error.code == EAGAIN: throw .timedOut(timeout)
        case .failure(let error) where error.code == ENOENT || error.code == ECONNREFUSED: throw .noDaemon(errno: error.code)
        case .failure(let error): throw .socket(operation: "connect to \(socketPath)", errno: error.code)
        }
        defer { close(fd) }
        if let error = UnixSocket.write(request, to: fd, deadline: deadline) {
            throw error == ETIMEDOUT ? .timedOut(timeout) : .socket(operation: "send to \(socketPath)", errno: error)
        }
        var received: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            if let (parts, _) = try frame(in: received, limit: limit) {
                return try table(fromAnswer: parts, id: id)
            }
            guard UnixSocket.waitUntilReady(fd, events: Int16(POLLIN), deadline: deadline) else { throw .timedOut(timeout) }
            let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count < 0 {
                if errno == EINTR || errno == EAGAIN { continue }
                throw .socket(operation: "receive from \(socketPath)", errno: errno)
            }
            guard count > 0 else { throw .closed(received: received.count) }
            received += chunk[..<count]
        }
    }

    /// `ferry-agent:<pid>:<n>`, new for every call (pm2-axon ids are `<identity>:<n>`).
    private static func nextCallID() -> String {
        "ferry-agent:\(getpid()):\(callCounter.add(1, ordering: .relaxed).newValue)"
    }

    private static let callCounter = Atomic<Int>(0)
}
