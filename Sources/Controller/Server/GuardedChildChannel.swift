import HummingbirdCore
import Logging
import NIOCore
import NIOHTTPTypesHTTP1
import NIOSSL

/// Sets up each accepted connection: the connection cap, TLS with the current certificate (when serving HTTPS), the
/// timeouts, then Hummingbird's HTTP/1.1 channel (its pipeline; the connection loop is `ChildTaskHTTP1Channel`'s).
///
/// Hummingbird's own `.tls(...)` builder takes one fixed `TLSConfiguration`; this one asks the `TLSCertificateStore`
/// for its context on every connection, which is what lets SIGHUP swap the certificate for new handshakes only.
struct GuardedChildChannel<Base: ServerChildChannel>: ServerChildChannel {
    typealias Value = Base.Value

    let base: Base
    let registry: ConnectionRegistry
    let limits: ConnectionLimits
    /// `nil`: plain HTTP.
    let certificates: TLSCertificateStore?
    /// What `DesiredStateFastPath` answers with; `nil`: no fast path.
    var polls: DesiredStatePollHandler.Dependencies? = nil

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        // Nothing here may fail: a failed child initializer is reported to the listening channel, which ends
        // Hummingbird's accept loop. A refused connection is set up like any other and closed at once.
        let ticket = registry.admit(channel)
        if let ticket {
            channel.closeFuture.whenComplete { [registry] _ in registry.release(ticket) }
        }
        return channel.eventLoop.makeCompletedFuture { () throws -> Void in
            guard let ticket else { return }
            // Reads of 512 bytes, larger only for a stream (`ConnectionReadAllocator`): the buffer of the last read stays
            // with each of 10,000 mostly idle connections. One read per turn of the event loop: with more, a request
            // split over two reads leaves a second kept buffer (the first is still held by the request's body). Not
            // worth failing the set-up for (see above): a connection that keeps NIO's defaults works the same.
            try? channel.syncOptions?.setOption(.recvAllocator, value: ConnectionReadAllocator())
            try? channel.syncOptions?.setOption(.maxMessagesPerRead, value: 1)
            if let certificates {
                try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: certificates.context))
            }
            try channel.pipeline.syncOperations.addHandler(ConnectionGuardHandler(ticket: ticket, registry: registry, limits: limits))
            if let polls {
                try channel.pipeline.syncOperations.addHandler(DesiredStateFastPath(polls))
            }
        }.flatMap {
            base.setup(channel: channel, logger: logger)
        }.map { value in
            // Between NIO's decoder and the conversion to HTTPTypes, which drops the request's HTTP version. A pipeline
            // without that conversion (none here) only keeps HTTP/1.0 connections open as before.
            let operations = channel.pipeline.syncOperations
            if ticket != nil, let codec = try? operations.handler(type: HTTP1ToHTTPServerCodec.self) {
                try? operations.addHandler(RequestPersistenceHandler(), position: .before(codec))
            }
            if ticket == nil { channel.close(promise: nil) }
            return value
        }
    }

    func handle(value: Value, logger: Logger) async {
        await base.handle(value: value, logger: logger)
    }
}

extension GuardedChildChannel: HTTPChannelHandler where Base: HTTPChannelHandler {
    var responder: HTTPChannelHandler.Responder { base.responder }
}

/// How large a request head may grow before the decoder refuses it (400, connection closed): 8 KiB a field (nginx's
/// default line limit), 16 KiB in all, 100 fields. An agent's head is well under 1 KiB and a browser's a few. The
/// decoder's defaults (80 KiB a field and in all, 1,000 fields) let each of the 16,384 connections the cap allows hold
/// a head of 80 KiB that never ends for the header timeout, and come back: over a gigabyte, where bodies have a budget.
let requestHeadLimits = HTTP1Channel.Configuration.DecoderConfiguration(
    maxHeaderFieldSize: 8 << 10,
    maxHeaderListSize: 16 << 10,
    maxHeaderFieldCount: 100
)

extension HTTPServerBuilder {
    /// HTTP/1.1 behind the connection guard, with TLS when `certificates` is given; agents' desired-state polls (and
    /// status reports, when `polls.statusReports` is set) are answered by `DesiredStatePollHandler` before the router
    /// when `polls` is given, and their plain 304s by `DesiredStateFastPath` before the HTTP decoder.
    static func guarded(
        registry: ConnectionRegistry,
        limits: ConnectionLimits,
        certificates: TLSCertificateStore?,
        polls: DesiredStatePollHandler.Dependencies? = nil
    ) -> HTTPServerBuilder {
        HTTPServerBuilder { responder in
            GuardedChildChannel(
                base: ChildTaskHTTP1Channel(
                    base: HTTP1Channel(
                        responder: responder,
                        configuration: .init(
                            additionalChannelHandlers: [RequestActivityHandler()] + (polls.map { [DesiredStatePollHandler($0)] } ?? []),
                            idleTimeout: nil,
                            httpDecoderConfiguration: requestHeadLimits
                        )
                    )
                ),
                registry: registry,
                limits: limits,
                certificates: certificates,
                polls: polls
            )
        }
    }
}
