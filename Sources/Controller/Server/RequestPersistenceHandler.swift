import NIOCore
import NIOHTTP1

/// Marks a request after which its connection ends the way every later handler reads it: an HTTP/1.0 request without
/// `Connection: keep-alive` gets `Connection: close` (HTTPTypes, after this, has no version), and any request that ends
/// its connection turns `DesiredStateFastPath` off for the rest of it.
///
/// Before, an HTTP/1.0 client that waits for the end of the stream to finish reading an answer waited for the idle
/// timeout, its connection kept open; and after a request that closes its connection, polls that came behind it were
/// still answered from their raw bytes (into a closed output, counted as answers, each one holding the connection
/// open another idle timeout).
final class RequestPersistenceHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart

    private var fastPath: DesiredStateFastPath?

    func handlerAdded(context: ChannelHandlerContext) {
        fastPath = try? context.pipeline.syncOperations.handler(type: DesiredStateFastPath.self)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        fastPath = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(var head) = unwrapInboundIn(data), !head.isKeepAlive else {
            context.fireChannelRead(data)
            return
        }
        // One field, exactly `close`, however the client wrote it (`Close`, `TE` on HTTP/1.0): what every reader after
        // this one tests.
        head.headers.replaceOrAdd(name: "Connection", value: "close")
        fastPath?.connectionEnding()
        context.fireChannelRead(wrapInboundOut(.head(head)))
    }
}
