import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle
import Shared
import Synchronization
import TestSupport

/// A reverse proxy on 127.0.0.1 in front of a live controller that loses the answers of the first `losing` requests
/// matching `method` and `path`: each reaches the controller, and the client gets `502 Bad Gateway` instead of its
/// answer, as from a load balancer whose backend connection dropped after the commit. Everything else is forwarded.
final class LossyProxy: Sendable {
    let url: String
    /// How many answers were lost so far.
    var lost: Int { counter.value.withLock { $0 } }
    private let counter = Counter()
    private final class Counter: Sendable { let value = Mutex(0) }
    private let group: ServiceGroup
    private let runner: Task<Void, any Error>

    init(upstream: String, port: Int, losing: Int, method: HTTPRequest.Method, path: String) {
        let client = HTTPClient()
        let counter = self.counter
        let forwardedRequestHeaders = ["Authorization", "If-None-Match", "Content-Type", "X-Ferry-SHA256"]
        let handler: @Sendable (Request, BasicRequestContext) async throws -> Response = { request, _ in
            let body = Array(try await request.body.collect(upTo: 64 << 20).readableBytesView)
            let target = request.uri.path + (request.uri.query.map { "?\($0)" } ?? "")
            var headers = HTTPClient.Headers()
            for name in forwardedRequestHeaders {
                if let fieldName = HTTPField.Name(name), let value = request.headers[fieldName] { headers[name] = value }
            }
            let forwardedMethod = HTTPClient.Request.Method(rawValue: request.method.rawValue) ?? .get
            let answer = try await client.send(
                HTTPClient.Request(
                    method: forwardedMethod,
                    url: upstream + target,
                    headers: headers,
                    body: forwardedMethod == .get || forwardedMethod == .head ? nil : body,
                    timeout: .seconds(60)
                )
            )
            let lose =
                request.method == method && request.uri.path == path
                && counter.value.withLock { lost in
                    guard lost < losing else { return false }
                    lost += 1
                    return true
                }
            if lose { return Response(status: .badGateway, body: .init(byteBuffer: ByteBuffer(string: "upstream connection reset"))) }
            var fields = HTTPFields()
            if let type = answer.headers["Content-Type"] { fields[.contentType] = type }
            return Response(status: .init(code: answer.status), headers: fields, body: .init(byteBuffer: ByteBuffer(bytes: answer.body)))
        }
        let router = Router()
        for method in [HTTPRequest.Method.get, .post, .head, .delete] { router.on("**", method: method, use: handler) }
        var logger = Logger(label: "lossy-proxy")
        logger.logLevel = .warning
        let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: port)), logger: logger)
        url = "http://127.0.0.1:\(port)"
        group = ServiceGroup(configuration: .init(services: [app], logger: logger))
        let group = self.group
        runner = Task { try await group.run() }
    }

    func stop() async {
        await group.triggerGracefulShutdown()
        _ = try? await runner.value
    }
}
