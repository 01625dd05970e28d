import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A loopback HTTP/1.1 server (127.0.0.1, port 0) whose every response is a script the test writes: bytes to
/// send, pauses, and an early close. It exists to put the client through what real servers and networks do
/// badly (stalls, truncated bodies, ignored ranges), which a well-behaved server framework cannot produce.
///
/// One request per connection. Every accepted connection runs on its own thread; `stop()` closes the listener and
/// waits for those threads, so a test leaves nothing behind.
final class ScriptedHTTPServer: Sendable {
    /// A request as the server parsed it.
    struct Request: Sendable {
        var method: String
        var target: String
        /// Lowercased names.
        var headers: [String: String]
        var body: [UInt8]
    }

    /// One step of a response script.
    enum Step: Sendable {
        case send([UInt8])
        case pause(Duration)
        /// Close the connection now (the remaining steps are ignored).
        case close
    }

    typealias Handler = @Sendable (Request) -> [Step]

    private struct State {
        var requests: [Request] = []
        var liveConnections = 0
    }

    let port: Int
    private let listener: Int32
    private let handler: Handler
    /// Sent right after accepting, before reading anything (a server that is not speaking the client's protocol).
    private let greeting: [Step]?
    private let state = Mutex(State())
    private let stopped = Atomic<Bool>(false)

    init(greeting: [Step]? = nil, _ handler: @escaping Handler) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(fd, 64) == 0 else {
            close(fd)
            throw POSIXError(.init(rawValue: errno) ?? .EIO)
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        self.listener = fd
        self.port = Int(UInt16(bigEndian: address.sin_port))
        self.handler = handler
        self.greeting = greeting
        state.withLock { $0.liveConnections += 1 }  // the accept loop itself
        Thread.detachNewThread { [self] in acceptLoop() }
    }

    /// `http://127.0.0.1:<port>`
    var baseURL: String { "http://127.0.0.1:\(port)" }

    /// Every request received so far, oldest first.
    var requests: [Request] { state.withLock { $0.requests } }

    /// Closes the listener and waits (up to 10 s) until every connection thread has finished.
    func stop() async {
        if stopped.exchange(true, ordering: .acquiringAndReleasing) { return }
        shutdown(listener, Int32(SHUT_RDWR))
        let deadline = ContinuousClock.now + .seconds(10)
        while state.withLock({ $0.liveConnections }) > 0, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
        close(listener)
    }

    /// Runs `body` with a fresh server and always stops it.
    @discardableResult
    static func with<R>(
        greeting: [Step]? = nil,
        _ handler: @escaping Handler,
        run body: (ScriptedHTTPServer) async throws -> R
    ) async throws -> R {
        let server = try ScriptedHTTPServer(greeting: greeting, handler)
        do {
            let result = try await body(server)
            await server.stop()
            return result
        } catch {
            await server.stop()
            throw error
        }
    }

    // MARK: Response helpers

    /// A complete response with `Content-Length` and `Connection: close`.
    static func response(status: Int, reason: String = "Status", headers: [(String, String)] = [], body: [UInt8] = []) -> [UInt8] {
        head(status: status, reason: reason, headers: headers + [("Content-Length", "\(body.count)")]) + body
    }

    /// Just the status line and headers (the test sends the body, or not).
    static func head(status: Int, reason: String = "Status", headers: [(String, String)]) -> [UInt8] {
        var text = "HTTP/1.1 \(status) \(reason)\r\n"
        for (name, value) in headers + [("Connection", "close")] { text += "\(name): \(value)\r\n" }
        return Array((text + "\r\n").utf8)
    }

    /// Serves `data` like a static file server: honours `Range: bytes=N-` with 206 (or 416 past the end) unless
    /// `honourRange` is false, in which case it always sends 200 with everything.
    static func serveFile(_ data: [UInt8], for request: Request, honourRange: Bool = true) -> [Step] {
        guard honourRange, let range = request.headers["range"], range.hasPrefix("bytes="),
            let dash = range.firstIndex(of: "-"),
            let start = Int(range[range.index(range.startIndex, offsetBy: 6)..<dash])
        else {
            return [.send(response(status: 200, reason: "OK", body: data))]
        }
        guard start < data.count else {
            return [.send(response(status: 416, reason: "Range Not Satisfiable", headers: [("Content-Range", "bytes */\(data.count)")]))]
        }
        let part = Array(data[start...])
        return [
            .send(
                response(
                    status: 206,
                    reason: "Partial Content",
                    headers: [("Content-Range", "bytes \(start)-\(data.count - 1)/\(data.count)")],
                    body: part
                )
            )
        ]
    }

    // MARK: Serving

    private func acceptLoop() {
        defer { state.withLock { $0.liveConnections -= 1 } }
        while !stopped.load(ordering: .acquiring) {
            let client = accept(listener, nil, nil)
            if client < 0 {
                if errno == EINTR { continue }
                return
            }
            state.withLock { $0.liveConnections += 1 }
            Thread.detachNewThread { [self] in
                defer { state.withLock { $0.liveConnections -= 1 } }
                serve(client)
            }
        }
    }

    private func serve(_ fd: Int32) {
        defer { close(fd) }
        let steps: [Step]
        if let greeting {
            steps = greeting
        } else {
            guard let request = readRequest(fd) else { return }
            state.withLock { $0.requests.append(request) }
            steps = handler(request)
        }
        for step in steps {
            switch step {
            case .send(let bytes):
                guard sendAll(fd, bytes) else { return }
            case .pause(let duration):
                let deadline = ContinuousClock.now + duration
                while ContinuousClock.now < deadline, !stopped.load(ordering: .acquiring) { usleep(5_000) }
            case .close:
                return
            }
        }
    }

    private func sendAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EINTR { continue }
                return false
            }
            offset += n
        }
        return true
    }

    private func readRequest(_ fd: Int32) -> Request? {
        var buffer: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        let separator: [UInt8] = Array("\r\n\r\n".utf8)
        var headerEnd: Int?
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        while headerEnd == nil {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard n > 0 else { return nil }
            buffer += chunk[0..<n]
            if buffer.count >= 4 {
                headerEnd = (0...(buffer.count - 4)).first { Array(buffer[$0..<($0 + 4)]) == separator }
            }
        }
        guard let headerEnd else { return nil }
        let lines = String(decoding: buffer[0..<headerEnd], as: UTF8.self).components(separatedBy: "\r\n")
        let requestLine = lines[0].split(separator: " ")
        guard requestLine.count >= 2 else { return nil }
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        var body = Array(buffer[(headerEnd + 4)...])
        let length = Int(headers["content-length"] ?? "0") ?? 0
        while body.count < length {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard n > 0 else { return nil }
            body += chunk[0..<n]
        }
        return Request(method: String(requestLine[0]), target: String(requestLine[1]), headers: headers, body: body)
    }
}
