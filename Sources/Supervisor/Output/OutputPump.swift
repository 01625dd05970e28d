import Glibc
import Shared
import Synchronization

/// Copies the children's stdout and stderr from pipes into their rotating log files, on one `poll(2)` thread.
///
/// The daemon reads the pipes itself (rather than handing the children a log file) so it can rotate by size without
/// the app's cooperation. A pipe is read until end of file, so output written just before an exit is kept; the log
/// file stays open while any pipe of any run of that instance still feeds it.
final class OutputPump: Sendable {
    private let state: Mutex<State>
    private let wakeReader: Int32
    private let wakeWriter: Int32
    /// The thread has drained the pipes and ended.
    private let finished = Atomic<Bool>(false)

    private struct Log {
        let file: RotatingLogFile
        var feeders: Int
    }

    private struct State {
        var pipes: [Int32: String] = [:]
        var logs: [String: Log] = [:]
        var stopped = false
    }

    /// Creates a pump and starts its thread.
    static func start() throws(SupervisorError) -> OutputPump {
        let pump = try OutputPump()
        do throws(DedicatedThread.StartFailure) {
            try DedicatedThread.detach(name: "output pump") { pump.loop() }
        } catch {
            throw .threadUnavailable(error)
        }
        return pump
    }

    private init() throws(SupervisorError) {
        do throws(SystemCallError) {
            let wake = try PipeDescriptors.open(nonBlocking: true)
            wakeReader = wake.readEnd
            wakeWriter = wake.writeEnd
        } catch {
            throw .system(operation: "pipe (output pump wake-up)", errno: error.errno)
        }
        state = Mutex(State())
    }

    /// Takes ownership of the read end `fd` of a child's output pipe and copies what arrives into `logPath`.
    /// - Throws: the log file could not be opened; the pipe is read all the same, and the file opened as soon as it can
    ///   be.
    func add(pipe fd: Int32, logPath: String, rotation: LogRotation) throws(SupervisorError) {
        PipeDescriptors.setNonBlocking(fd)
        let failure = state.withLock { state -> SupervisorError? in
            guard !state.stopped else {
                close(fd)
                return nil
            }
            var failure: SupervisorError?
            if state.logs[logPath] == nil {
                do throws(SupervisorError) {
                    state.logs[logPath] = Log(file: try RotatingLogFile(path: logPath, rotation: rotation), feeders: 0)
                } catch {
                    // The pipe is read all the same (its bytes dropped until the file opens): closing it ended the
                    // app at its first line of output.
                    state.logs[logPath] = Log(file: RotatingLogFile(unopened: logPath, rotation: rotation), feeders: 0)
                    failure = error
                }
            }
            state.logs[logPath]?.feeders += 1
            state.pipes[fd] = logPath
            return failure
        }
        wake()
        if let failure { throw failure }
    }

    /// Appends one line from the supervisor itself (a failed spawn, a forced kill) to an app's log.
    func note(_ line: String, logPath: String, rotation: LogRotation) {
        state.withLock { state in
            if let log = state.logs[logPath] {
                log.file.append(line: line)
            } else if let file = try? RotatingLogFile(path: logPath, rotation: rotation) {
                file.append(line: line)
            }
        }
    }

    /// Closes every pipe and log and ends the thread (at daemon exit, after the children are gone), and waits for it to
    /// have written what was left in the pipes: the daemon's exit right after ended the thread mid-drain, and what the
    /// apps printed as they stopped (on SIGINT) was lost. At most `drainWait`: a write stalled on a hung disk does not
    /// hold the exit for good.
    func stop() async {
        state.withLock { $0.stopped = true }
        wake()
        let deadline = ContinuousClock.now + Self.drainWait
        while !finished.load(ordering: .acquiring), ContinuousClock.now < deadline {
            // A cancelled task's sleep returns at once: then a plain one, not a spin.
            do { try await Task.sleep(for: .milliseconds(5)) } catch { usleep(5_000) }
        }
    }

    /// How long `stop` waits for the drain.
    static let drainWait = Duration.seconds(5)

    private func wake() {
        var byte: UInt8 = 1
        _ = write(wakeWriter, &byte, 1)
    }

    /// The most bytes read from one pipe after `stop`.
    static let drainLimit = 1 << 20

    private func loop() {
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        while true {
            let watched: [Int32]? = state.withLock { state in
                guard !state.stopped else {
                    // What the apps wrote before they exited may still be in the pipes (a last burst on SIGINT): written
                    // out before the pipes close. At most `drainLimit` bytes a pipe, in case a process out of reach
                    // still holds one open and writes on.
                    for (fd, path) in state.pipes {
                        var drained = 0
                        while drained < Self.drainLimit {
                            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                            guard count > 0 else { break }
                            chunk.withUnsafeBytes { _ = state.logs[path]?.file.append(UnsafeRawBufferPointer(rebasing: $0[..<count])) }
                            drained += count
                        }
                        close(fd)
                    }
                    state.pipes.removeAll()
                    state.logs.removeAll()
                    return nil
                }
                return Array(state.pipes.keys)
            }
            guard let watched else {
                close(wakeReader)
                close(wakeWriter)
                finished.store(true, ordering: .releasing)
                return
            }
            var descriptors =
                [pollfd(fd: wakeReader, events: Int16(POLLIN), revents: 0)]
                + watched.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            let ready = poll(&descriptors, nfds_t(descriptors.count), -1)
            if ready < 0 { continue }  // EINTR; nothing else is expected from a valid descriptor list
            if descriptors[0].revents != 0 {
                while read(wakeReader, &chunk, chunk.count) > 0 {}
            }
            for descriptor in descriptors.dropFirst() where descriptor.revents != 0 {
                let count = chunk.withUnsafeMutableBytes { read(descriptor.fd, $0.baseAddress, $0.count) }
                if count > 0 {
                    state.withLock { state in
                        guard let path = state.pipes[descriptor.fd] else { return }
                        chunk.withUnsafeBytes { _ = state.logs[path]?.file.append(UnsafeRawBufferPointer(rebasing: $0[..<count])) }
                    }
                } else if count == 0 || (errno != EAGAIN && errno != EINTR) {
                    state.withLock { state in
                        guard let path = state.pipes.removeValue(forKey: descriptor.fd) else { return }
                        close(descriptor.fd)
                        state.logs[path]?.feeders -= 1
                        if state.logs[path]?.feeders == 0 { state.logs[path] = nil }
                    }
                }
            }
        }
    }
}
