import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle
import Shared
import Synchronization

/// A reverse proxy on 127.0.0.1 that forwards every request to a real controller and keeps a copy of each request
/// (method, path, body) it received: what an agent or the CLI sent, byte for byte. Real sockets on both sides.
///
/// It can lose answers: the first `losing.count` requests matching `losing.method` and `losing.path` reach the
/// controller, but the client gets `502 Bad Gateway` instead of the answer, as from a load balancer whose backend
/// connection dropped after the commit.
package final class RecordingProxy: Sendable {
    package struct Exchange: Sendable {
        package var method: String
        package var path: String
        package var body: [UInt8]
    }

    /// Requests whose answers are lost.
    package struct Losing: Sendable {
        package var method: HTTPRequest.Method
        package var path: String
        package var count: Int

        package init(_ count: Int, of method: HTTPRequest.Method, _ path: String) {
            self.method = method
            self.path = path
            self.count = count
        }
    }

    actor Recorder {
        var exchanges: [Exchange] = []
        func append(_ exchange: Exchange) { exchanges.append(exchange) }
    }

    let recorder = Recorder()
    package let url: String
    private let lostCount = Counter()
    private final class Counter: Sendable { let value = Mutex(0) }
    private let group: ServiceGroup
    private let runner: Task<Void, any Error>

    /// Starts the proxy for `upstream` (a controller base URL) on `port` (a free loopback port), and returns once it
    /// listens: a client sent at once was refused (seen under load, a publish that never reached the proxy).
    package init(upstream: String, port: Int, losing: Losing? = nil) async {
        let recorder = self.recorder
        let client = HTTPClient()
        // Request headers a client sends that the controller reads, and response headers it answers with.
        let forwardedRequestHeaders = ["Authorization", "If-None-Match", "Content-Type", "Range", "X-Ferry-SHA256"]
        let forwardedResponseHeaders = ["ETag", "Content-Type", "Content-Range", "Accept-Ranges", "Cache-Control"]
        let handler: @Sendable (Request, BasicRequestContext) async throws -> Response = { [lostCount] request, _ in
            let body = Array(try await request.body.collect(upTo: 64 << 20).readableBytesView)
            let target = request.uri.path + (request.uri.query.map { "?\($0)" } ?? "")
            await recorder.append(Exchange(method: request.method.rawValue, path: target, body: body))
            var headers = HTTPClient.Headers()
            for name in forwardedRequestHeaders {
                if let fieldName = HTTPField.Name(name), let value = request.headers[fieldName] { headers[name] = value }
            }
            let method = HTTPClient.Request.Method(rawValue: request.method.rawValue) ?? .get
            let upstreamResponse = try await client.send(
                HTTPClient.Request(
                    method: method,
                    url: upstream + target,
                    headers: headers,
                    body: method == .get || method == .head ? nil : body,
                    timeout: .seconds(120),
                    maxResponseBytes: 64 << 20
                )
            )
            if let losing, request.method == losing.method, request.uri.path == losing.path,
                lostCount.value.withLock({ count in
                    guard count < losing.count else { return false }
                    count += 1
                    return true
                })
            {
                return Response(status: .badGateway, body: .init(byteBuffer: ByteBuffer(string: "upstream connection reset")))
            }
            var fields = HTTPFields()
            for name in forwardedResponseHeaders {
                if let fieldName = HTTPField.Name(name), let value = upstreamResponse.headers[name] { fields[fieldName] = value }
            }
            // A HEAD answer's size is its header's (its body is empty), as a load balancer passes it on.
            if request.method == .head, let length = upstreamResponse.headers["Content-Length"] { fields[.contentLength] = length }
            return Response(
                status: .init(code: upstreamResponse.status),
                headers: fields,
                body: .init(byteBuffer: ByteBuffer(bytes: upstreamResponse.body))
            )
        }
        let router = Router()
        for method in [HTTPRequest.Method.get, .post, .head, .delete] { router.on("**", method: method, use: handler) }
        var logger = Logger(label: "recording-proxy")
        logger.logLevel = .warning
        let (listening, listeningContinuation) = AsyncStream<Void>.makeStream()
        let app = Application(
            router: router,
            configuration: .init(address: .hostname("127.0.0.1", port: port)),
            onServerRunning: { _ in listeningContinuation.finish() },
            logger: logger
        )
        url = "http://127.0.0.1:\(port)"
        group = ServiceGroup(configuration: .init(services: [app], logger: logger))
        let group = self.group
        runner = Task {
            // A server that could not start ends the wait too (its requests then fail, saying so).
            defer { listeningContinuation.finish() }
            try await group.run()
        }
        for await _ in listening {}
    }

    /// How many answers were lost so far.
    package var lost: Int { lostCount.value.withLock { $0 } }

    /// Every request received so far.
    package var exchanges: [Exchange] {
        get async { await recorder.exchanges }
    }

    /// The status reports received so far, decoded as the controller decodes them.
    package var reports: [StatusReport] {
        get async {
            await exchanges.filter { $0.method == "POST" && $0.path.hasSuffix("/status") }.compactMap {
                try? StatusReport(json: JSONValue.parse($0.body))
            }
        }
    }

    package func stop() async {
        await group.triggerGracefulShutdown()
        _ = try? await runner.value
    }
}
