import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle
import Shared
import Synchronization

/// A reverse proxy on 127.0.0.1 that forwards every request to a real controller and keeps a copy of each request
/// (method, path, body) it received: what an agent sent, byte for byte. Real sockets on both sides.
final class RecordingProxy: Sendable {
    struct Exchange: Sendable {
        var method: String
        var path: String
        var body: [UInt8]
    }

    actor Recorder {
        var exchanges: [Exchange] = []
        func append(_ exchange: Exchange) { exchanges.append(exchange) }
    }

    let recorder = Recorder()
    let url: String
    private let group: ServiceGroup
    private let runner: Task<Void, any Error>

    /// Starts the proxy for `upstream` (a controller base URL) on `port` (a free loopback port). The first
    /// `losingEnrolmentAnswers` enrolments (`POST /v1/agents`) reach the controller, but their answers are lost: the
    /// agent gets `502 Bad Gateway`, as from a load balancer whose backend connection dropped after the commit.
    init(upstream: String, port: Int, losingEnrolmentAnswers: Int = 0) {
        let recorder = self.recorder
        let lost = Mutex(0)
        let client = HTTPClient()
        // Request headers an agent sends that the controller reads, and response headers it answers with.
        let forwardedRequestHeaders = ["Authorization", "If-None-Match", "Content-Type", "Range"]
        let forwardedResponseHeaders = ["ETag", "Content-Type", "Content-Range", "Accept-Ranges", "Cache-Control"]
        let handler: @Sendable (Request, BasicRequestContext) async throws -> Response = { request, _ in
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
            if request.method == .post, request.uri.path == "/v1/agents",
                lost.withLock({ count in
                    guard count < losingEnrolmentAnswers else { return false }
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
            return Response(
                status: .init(code: upstreamResponse.status),
                headers: fields,
                body: .init(byteBuffer: ByteBuffer(bytes: upstreamResponse.body))
            )
        }
        let router = Router()
        router.on("**", method: .get, use: handler)
        router.on("**", method: .post, use: handler)
        router.on("**", method: .head, use: handler)
        var logger = Logger(label: "recording-proxy")
        logger.logLevel = .warning
        let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: port)), logger: logger)
        url = "http://127.0.0.1:\(port)"
        group = ServiceGroup(configuration: .init(services: [app], logger: logger))
        let group = self.group
        runner = Task { try await group.run() }
    }

    /// Every request received so far.
    var exchanges: [Exchange] {
        get async { await recorder.exchanges }
    }

    /// The status reports received so far, decoded as the controller decodes them.
    var reports: [StatusReport] {
        get async {
            await exchanges.filter { $0.method == "POST" && $0.path.hasSuffix("/status") }.compactMap {
                try? StatusReport(json: JSONValue.parse($0.body))
            }
        }
    }

    func stop() async {
        await group.triggerGracefulShutdown()
        _ = try? await runner.value
    }
}
