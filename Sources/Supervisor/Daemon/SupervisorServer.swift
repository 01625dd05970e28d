import Glibc
import Logging
import Shared
import Synchronization

/// The daemon's socket: accepts connections on a Unix socket and answers newline-delimited JSON requests.
///
/// One thread blocks in `accept`; each connection is served by a task whose blocking reads and writes run on
/// `DedicatedThread`s. A connection may carry several requests, one line each. Lines longer than
/// `maximumRequestBytes`, bad JSON and unknown operations get an error line back; a connection idle for
/// `idleTimeout` is closed. Nothing a client sends can stop the daemon.
final class SupervisorServer: Sendable {
    /// Settings of the socket server.
    struct Configuration: Sendable {
        /// Path of the socket (mode 0600).
        var socketPath: String
        /// Longest request line accepted (`SupervisorDaemon.defaultMaximumRequestBytes`).
        var maximumRequestBytes = SupervisorDaemon.defaultMaximumRequestBytes
        /// A connection that sends no complete line for this long is closed. Default 30 s.
        var idleTimeout: Duration = .seconds(30)
        /// Longest time spent writing one answer. Default 10 s.
        var writeTimeout: Duration = .seconds(10)
        /// Connections served at once; more are answered `busy`. Default 32.
        var maximumConnections = 32

        init(socketPath: String) {
            self.socketPath = socketPath
        }
    }

    /// Answers one request.
    typealias Handler = @Sendable (SupervisorRequest) async -> SupervisorResponse

    private let configuration: Configuration
    private let listener: Int32
    private let handler: Handler
    private let onShutdownAnswered: @Sendable () -> Void
    private let logger: Logger
    private let openConnections = Mutex(0)
    /// How many times a connection's read asks for a thread (50 ms apart) before the connection is given up.
    private static let threadAttempts = 40

    /// Binds the socket and starts accepting. `onShutdownAnswered` runs after the answer to a `shutdown` request has
    /// been written.
    static func start(
        configuration: Configuration,
        logger: Logger,
        handler: @escaping Handler,
        onShutdownAnswered: @escaping @Sendable () -> Void
    ) throws(SupervisorError) -> SupervisorServer {
        let listener = try UnixSocket.listen(at: configuration.socketPath)
        let server = SupervisorServer(
            configuration: configuration,
            listener: listener,
            handler: handler,
            onShutdownAnswered: onShutdownAnswered,
            logger: logger
        )
        do throws(DedicatedThread.StartFailure) {
            try DedicatedThread.detach(name: "socket accept") { server.acceptLoop() }
        } catch {
            close(listener)
            throw .threadUnavailable(error)
        }
        return server
    }

    private init(
        configuration: Configuration,
        listener: Int32,
        handler: @escaping Handler,
        onShutdownAnswered: @escaping @Sendable () -> Void,
        logger: Logger
    ) {
        self.configuration = configuration
        self.listener = listener
        self.handler = handler
        self.onShutdownAnswered = onShutdownAnswered
        self.logger = logger
    }

    /// Stops accepting connections (the accept thread closes the socket) and removes the socket file.
    func stop() {
        shutdown(listener, Int32(SHUT_RDWR))
        unlink(configuration.socketPath)
    }

    private func acceptLoop() {
        while true {
            let fd = GlibcExtensions.acceptCloseOnExec(listener)
            if fd < 0 {
                switch errno {
                case EINTR, ECONNABORTED, EPROTO:
                    continue
                case EMFILE, ENFILE, ENOBUFS, ENOMEM:
                    // Out of descriptors or memory: back off instead of spinning; connections wait in the backlog.
                    usleep(100_000)
                    continue
                default:
                    // EINVAL after stop() shut the socket down.
                    close(listener)
                    return
                }
            }
            Task { await self.serve(fd) }
        }
    }

    private func serve(_ fd: Int32) async {
        defer { close(fd) }
        let admitted = openConnections.withLock { count in
            guard count < configuration.maximumConnections else { return false }
            count += 1
            return true
        }
        guard admitted else {
            await answer(.failure(SupervisorFailure(.busy, "too many connections (\(configuration.maximumConnections))")), on: fd)
            return
        }
        defer { openConnections.withLock { $0 -= 1 } }

        var reader = LineReader(fd: fd)
        while true {
            let limit = configuration.maximumRequestBytes
            let deadline = ContinuousClock.now + configuration.idleTimeout
            var outcome: LineReader.Outcome?
            // A refused thread (a thread or memory limit reached for a moment) is waited out rather than answered by
            // dropping the connection, which the client would see as "connection reset" in the middle of its call.
            for attempt in 1...Self.threadAttempts {
                do {
                    (outcome, reader) = try await DedicatedThread.run(name: "socket read") { [reader] in
                        var reader = reader
                        let outcome = reader.readLine(limit: limit, deadline: deadline)
                        return (outcome, reader)
                    }
                    break
                } catch {
                    if attempt == Self.threadAttempts {
                        logger.error("supervisor.socket.read_failed", metadata: ["error": "\(error)", "attempts": "\(attempt)"])
                        return
                    }
                    try? await Task.sleep(for: .milliseconds(50))
                }
            }
            guard let outcome else { return }
            let line: [UInt8]
            switch outcome {
            case .line(let bytes):
                line = bytes
            case .endOfStream(let partial) where !partial.allSatisfy(Self.isWhitespace):
                line = partial
            case .endOfStream, .timedOut, .failed:
                return
            case .tooLong:
                await answer(.failure(SupervisorFailure(.requestTooLarge, "request line longer than \(limit) bytes")), on: fd)
                return
            }
            if line.allSatisfy(Self.isWhitespace) { continue }
            let request: SupervisorRequest
            do {
                request = try SupervisorRequest.decode(line)
            } catch {
                logger.info("supervisor.request.malformed", metadata: ["error.code": "\(error.code.rawValue)", "error": "\(error.message)"])
                guard await answer(.failure(error), on: fd) else { return }
                continue
            }
            var response = await handler(request)
            // The table's answer says the limit too: a client checks an app's spec against it before a replace.
            if request == .list, response.ok { response.maximumRequestBytes = configuration.maximumRequestBytes }
            let written = await answer(response, on: fd)
            if request == .shutdown {
                onShutdownAnswered()
                return
            }
            guard written, case .line = outcome else { return }
        }
    }

    /// Writes one answer line; returns whether it was written.
    @discardableResult
    private func answer(_ response: SupervisorResponse, on fd: Int32) async -> Bool {
        let bytes = response.encodedLine()
        let deadline = ContinuousClock.now + configuration.writeTimeout
        do {
            return try await DedicatedThread.run(name: "socket write") { UnixSocket.write(bytes, to: fd, deadline: deadline) } == nil
        } catch {
            // No thread to write on: not written (`try?` here flattened that into a success).
            return false
        }
    }

    private static func isWhitespace(_ byte: UInt8) -> Bool {
        byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") || byte == UInt8(ascii: "\r") || byte == UInt8(ascii: "\n")
    }
}
