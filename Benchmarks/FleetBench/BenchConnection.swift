import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// One HTTP/1.1 answer as the load generator needs it, with the instants it was asked for and answered (taken on the
/// connection's event loop, so they do not include any task-scheduling delay of the generator).
struct BenchResponse: Sendable {
    var status: Int
    var etag: String?
    var body: ByteBuffer
    /// When the request's head was handed to the socket.
    var sentAt: NIODeadline
    /// When the answer's head arrived.
    var answeredAt: NIODeadline

    /// How long the controller took to answer, as seen by the client.
    var latency: Duration { .nanoseconds(Int64(answeredAt.uptimeNanoseconds) - Int64(sentAt.uptimeNanoseconds)) }
}

/// Why an exchange failed.
struct BenchConnectionError: Error, CustomStringConvertible {
    var description: String
}

/// A kept-alive HTTP/1.1 (optionally TLS) connection to the controller: one exchange at a time, like an agent.
struct BenchConnection: Sendable {
    let channel: any Channel
    let hostHeader: String

    /// Opens a connection to `host:port`, with TLS when `tls` is given.
    static func connect(
        host: String,
        port: Int,
        tls: NIOSSLContext?,
        group: any EventLoopGroup
    ) async throws -> BenchConnection {
        let channel = try await ClientBootstrap(group: group)
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: tls, serverHostname: nil))
                    }
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(ExchangeHandler())
                }
            }
            .connect(host: host, port: port).get()
        return BenchConnection(channel: channel, hostHeader: "\(host):\(port)")
    }

    /// Sends one request (at `deadline`, on the connection's event loop, when given) and returns its answer.
    func exchange(
        _ method: HTTPMethod,
        _ path: String,
        token: String? = nil,
        headers extra: [(String, String)] = [],
        body: [UInt8]? = nil,
        at deadline: NIODeadline? = nil
    ) async throws -> BenchResponse {
        var headers = HTTPHeaders([("Host", hostHeader), ("User-Agent", "ferry-fleet-bench")])
        if let token { headers.add(name: "Authorization", value: "Bearer \(token)") }
        for (name, value) in extra { headers.add(name: name, value: value) }
        var buffer: ByteBuffer?
        if let body {
            headers.add(name: "Content-Type", value: "application/json")
            headers.add(name: "Content-Length", value: String(body.count))
            buffer = ByteBuffer(bytes: body)
        }
        let head = HTTPRequestHead(version: .http1_1, method: method, uri: path, headers: headers)
        let promise = channel.eventLoop.makePromise(of: BenchResponse.self)
        let exchange = Exchange(head: head, body: buffer, promise: promise)
        let channel = self.channel
        if let deadline {
            channel.eventLoop.scheduleTask(deadline: deadline) {
                channel.writeAndFlush(exchange).whenFailure { error in promise.fail(error) }
            }
        } else {
            channel.writeAndFlush(exchange).whenFailure { error in promise.fail(error) }
        }
        return try await promise.futureResult.get()
    }

    func close() async {
        try? await channel.close()
    }
}

/// A request and where its answer goes.
struct Exchange: Sendable {
    var head: HTTPRequestHead
    var body: ByteBuffer?
    var promise: EventLoopPromise<BenchResponse>
}

/// Writes requests and completes their promises, in order, as answers arrive.
private final class ExchangeHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = Exchange
    typealias OutboundOut = HTTPClientRequestPart

    private struct Pending {
        var promise: EventLoopPromise<BenchResponse>
        var sentAt: NIODeadline
    }

    private struct Answer {
        var status: Int
        var etag: String?
        var answeredAt: NIODeadline
        var body: ByteBuffer?
    }

    private var pending = CircularBuffer<Pending>()
    private var answer: Answer?

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let exchange = unwrapOutboundIn(data)
        pending.append(Pending(promise: exchange.promise, sentAt: .now()))
        context.write(wrapOutboundOut(.head(exchange.head)), promise: nil)
        if let body = exchange.body { context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil) }
        context.write(wrapOutboundOut(.end(nil)), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            answer = Answer(status: Int(head.status.code), etag: head.headers.first(name: "ETag"), answeredAt: .now())
        case .body(var chunk):
            if answer?.body == nil {
                answer?.body = chunk
            } else {
                answer?.body?.writeBuffer(&chunk)
            }
        case .end:
            guard let answer, let first = pending.popFirst() else {
                context.fireErrorCaught(BenchConnectionError(description: "an answer arrived that nothing asked for"))
                return
            }
            self.answer = nil
            first.promise.succeed(
                BenchResponse(
                    status: answer.status,
                    etag: answer.etag,
                    body: answer.body ?? ByteBuffer(),
                    sentAt: first.sentAt,
                    answeredAt: answer.answeredAt
                )
            )
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        failAll(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(BenchConnectionError(description: "the controller closed the connection"))
        context.fireChannelInactive()
    }

    private func failAll(_ error: any Error) {
        while let next = pending.popFirst() { next.promise.fail(error) }
    }
}
