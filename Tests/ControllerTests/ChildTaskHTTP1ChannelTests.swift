import Foundation
import HTTPTypes
import HummingbirdCore
import Logging
import NIOCore
import NIOPosix
import Synchronization
import Testing

@testable import Controller

/// The controller's connection loop (`ChildTaskHTTP1Channel`) behind a real Hummingbird server on 127.0.0.1, driven by
/// raw connections: what Hummingbird's own loop did (order, bodies, `Connection: close`, parse errors, cancellation)
/// must still hold with each request answered in a task of its own.
@Suite struct ChildTaskHTTP1ChannelTests {
    /// What a test server's responder saw.
    final class Seen: Sendable {
        /// A `/wait` request started.
        let waitStarted = Atomic(false)
        /// A `/wait` request saw its task cancelled.
        let waitCancelled = Atomic(false)

        var started: Bool { waitStarted.load(ordering: .sequentiallyConsistent) }
        var cancelled: Bool { waitCancelled.load(ordering: .sequentiallyConsistent) }
    }

    /// Runs `body` with a server whose responder answers `/echo` with the length of the body it read, `/ignore`
    /// without reading the body, and `/wait` by waiting until cancelled. Every answer has an `X-Answer` field.
    static func withServer(_ body: (Int, Seen, Task<Void, any Error>) async throws -> Void) async throws {
        let seen = Seen()
        let responder: HTTPChannelHandler.Responder = { request, writer, _ in
            var answer = request.uri.path.dropFirst()
            switch request.uri.path {
            case "/echo":
                var length = 0
                for try await buffer in request.body { length += buffer.readableBytes }
                answer += " \(length)"
            case "/wait":
                seen.waitStarted.store(true, ordering: .sequentiallyConsistent)
                do {
                    try await Task.sleep(for: .seconds(30))
                } catch is CancellationError {
                    seen.waitCancelled.store(true, ordering: .sequentiallyConsistent)
                }
            default:
                break
            }
            var fields = HTTPFields()
            fields[HTTPField.Name("X-Answer")!] = String(answer)
            fields[.contentLength] = "0"
            try await writer.writeResponse(HTTPResponse(status: .ok, headerFields: fields))
        }
        let port = Mutex<Int?>(nil)
        let server = Server(
            childChannelSetup: ChildTaskHTTP1Channel(base: HTTP1Channel(responder: responder)),
            configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { channel in port.withLock { $0 = channel.localAddress?.port } },
            eventLoopGroup: MultiThreadedEventLoopGroup.singleton,
            logger: Logger(label: "test")
        )
        let running = Task { try await server.run() }
        defer { running.cancel() }
        let deadline = ContinuousClock.now + .seconds(20)
        while port.withLock({ $0 }) == nil, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
        let listening = try #require(port.withLock { $0 }, "the server listens")
        try await body(listening, seen, running)
        running.cancel()
        _ = await running.result
    }

    struct Case: CustomTestStringConvertible, Sendable {
        let name: String
        /// Sent at once, on one connection.
        let requests: String
        /// `status` or `status answer` per answer, in order.
        let answers: [String]
        /// Whether the server closes the connection after them.
        let closes: Bool
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(
            name: "pipelined requests with bodies, read and unread, are answered in order",
            requests: "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
                + "POST /ignore HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\n12345678"
                + "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n",
            answers: ["200 echo 5", "200 ignore", "200 echo 0"],
            closes: false
        ),
        Case(
            name: "a chunked body is read whole",
            requests: "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n",
            answers: ["200 echo 8"],
            closes: false
        ),
        Case(
            name: "a large body the responder does not read is drained before the next request",
            requests: "POST /ignore HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n" + String(repeating: "z", count: 200_000)
                + "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
            answers: ["200 ignore", "200 echo 3"],
            closes: false
        ),
        Case(
            name: "Connection: close ends the connection after its answer",
            requests: "GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" + "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n",
            answers: ["200 echo 0"],
            closes: true
        ),
        Case(
            name: "Connection: Close in any case, or among other tokens, ends it too",
            requests: "GET /echo HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Close\r\n\r\n" + "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n",
            answers: ["200 echo 0"],
            closes: true
        ),
        Case(
            name: "Connection: foreclose is not close: both requests are answered and the connection stays",
            requests: "GET /echo HTTP/1.1\r\nHost: x\r\nConnection: foreclose\r\n\r\n" + "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n",
            answers: ["200 echo 0", "200 echo 0"],
            closes: false
        ),
        Case(
            name: "Connection: keep-alive, closed is not close either",
            requests: "GET /echo HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, closed\r\n\r\n" + "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n",
            answers: ["200 echo 0", "200 echo 0"],
            closes: false
        ),
        Case(
            name: "a malformed request after a good one is answered 400 and closes",
            requests: "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n" + "NOT HTTP AT ALL\r\n\r\n",
            answers: ["200 echo 0", "400"],
            closes: true
        ),
    ]

    @Test(arguments: cases) func requestsOnOneConnection(_ testCase: Case) async throws {
        try await Self.withServer { port, _, _ in
            let connection = try RawConnection(port: port)
            try connection.send(testCase.requests)
            let deadline = ContinuousClock.now + .seconds(20)
            while ContinuousClock.now < deadline {
                connection.poll()
                if Self.answers(connection.text).count >= testCase.answers.count, !testCase.closes || connection.isClosedByPeer { break }
                try await Task.sleep(for: .milliseconds(10))
            }
            // A moment more: nothing else may come.
            try await Task.sleep(for: .milliseconds(100))
            connection.poll()
            #expect(Self.answers(connection.text) == testCase.answers)
            #expect(connection.isClosedByPeer == testCase.closes)
        }
    }

    /// Cancelling the connection's task (the server's task) cancels the request being answered, as a child task would
    /// be, and the server ends.
    @Test func cancellingTheConnectionCancelsTheRequestsTask() async throws {
        try await Self.withServer { port, seen, running in
            let connection = try RawConnection(port: port)
            try connection.send("GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
            let deadline = ContinuousClock.now + .seconds(20)
            while !seen.started, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(10))
            }
            #expect(seen.started)
            running.cancel()
            while !seen.cancelled, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(10))
            }
            #expect(seen.cancelled, "the request's task saw the cancellation")
            _ = await running.result
        }
    }

    /// `status` or `status answer` of each response in `text`.
    static func answers(_ text: String) -> [String] {
        text.components(separatedBy: "HTTP/1.1 ").dropFirst().map { response in
            let status = String(response.prefix(3))
            let answer = response.components(separatedBy: "\r\n").first { $0.lowercased().hasPrefix("x-answer: ") }
            return answer.map { status + " " + $0.dropFirst("x-answer: ".count) } ?? status
        }
    }
}
