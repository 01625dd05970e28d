import HTTPTypes
import NIOCore
import NIOHTTPTypes

/// Enforces one connection's `ConnectionTimeouts` and keeps the `ConnectionRegistry` told whether it is idle.
///
/// Sits right after TLS (or first, without TLS), so it sees every decrypted byte; the HTTP-level events come from the
/// `RequestActivityHandler` further down the pipeline. One timer per connection, rescheduled only when a deadline moves
/// earlier: on the polling path a request costs no timer work at all.
final class ConnectionGuardHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private var timeouts: ConnectionTimeouts
    private let ticket: ConnectionRegistry.Ticket
    private let registry: ConnectionRegistry
    private var context: ChannelHandlerContext?
    private var scheduled: Scheduled<Void>?
    private var scheduledFor: ContinuousClock.Instant?
    /// When the registry was last told of a request answered at once (`ConnectionRegistry.used`).
    private var toldUsedAt: ContinuousClock.Instant?

    /// How often, at most, a connection whose requests are answered at once tells the registry so: its place in the
    /// order of shedding needs to be about right, not exact, and the registry's lock is shared by every event loop.
    static let usedInterval: Duration = .seconds(1)

    init(ticket: ConnectionRegistry.Ticket, registry: ConnectionRegistry, limits: ConnectionLimits, openedAt: ContinuousClock.Instant = .now) {
        self.ticket = ticket
        self.registry = registry
        self.timeouts = ConnectionTimeouts(openedAt: openedAt, headerTimeout: limits.headerTimeout, idleTimeout: limits.idleTimeout)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        scheduleCheck()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        scheduled?.cancel()
        scheduled = nil
        scheduledFor = nil
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let count = unwrapInboundIn(data).readableBytes
        update { $0.bytesReceived(count, at: .now) }
        context.fireChannelRead(data)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        let isWritable = context.channel.isWritable
        update { $0.writabilityChanged(isWritable: isWritable, at: .now) }
        registry.setUnread(ticket, !isWritable)
        context.fireChannelWritabilityChanged()
    }

    // MARK: Events from `RequestActivityHandler`

    func requestHeadReceived() { update { $0.requestHeadReceived(at: .now) } }
    func requestEnded() { update { $0.requestEnded(at: .now) } }
    func responseEnded() { update { $0.responseEnded(at: .now) } }

    /// From `DesiredStateFastPath`: a request answered within one read. An idle connection stays idle throughout, so
    /// the registry is not told of a change (the three events one by one would tell it twice, under its lock); it is
    /// told the connection was used, at most once every `usedInterval`, so that it does not shed a polling agent's
    /// connection as if it had been idle since it connected.
    func requestAnsweredAtOnce() {
        let now = ContinuousClock.now
        update { $0.requestAnsweredAtOnce(at: now) }
        if timeouts.isIdle, toldUsedAt.map({ now - $0 >= Self.usedInterval }) ?? true {
            toldUsedAt = now
            registry.used(ticket)
        }
    }

    private func update(_ event: (inout ConnectionTimeouts) -> Void) {
        let wasIdle = timeouts.isIdle
        event(&timeouts)
        if wasIdle != timeouts.isIdle { registry.setIdle(ticket, timeouts.isIdle) }
        scheduleCheck()
    }

    /// Makes sure a check runs no later than the current deadline. A check that is already due earlier stays: it
    /// reschedules itself for whatever the deadline is by then.
    private func scheduleCheck() {
        guard let context, let expiry = timeouts.expiry else { return }
        if let scheduledFor, scheduledFor <= expiry.instant { return }
        scheduled?.cancel()
        // Deadlines are at most an hour away (the limits' ranges), far from `TimeAmount`'s range.
        let delay = TimeAmount(max(.zero, expiry.instant - .now))
        scheduledFor = expiry.instant
        scheduled = context.eventLoop.assumeIsolated().scheduleTask(in: delay) { [self] in check() }
    }

    private func check() {
        scheduled = nil
        scheduledFor = nil
        guard let context else { return }
        if let reason = timeouts.expired(at: .now) {
            registry.recordTimeout(reason)
            context.close(promise: nil)
            return
        }
        scheduleCheck()
    }
}

/// Reports request heads, request ends and answer ends to the connection's `ConnectionGuardHandler`. Added after the
/// HTTP codec (Hummingbird's `additionalChannelHandlers`), where requests and answers are parts, not bytes.
final class RequestActivityHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private var guardHandler: ConnectionGuardHandler?

    init() {}

    func handlerAdded(context: ChannelHandlerContext) {
        // A pipeline built without the guard (in-process tests) simply has nothing to report to.
        guardHandler = try? context.pipeline.syncOperations.handler(type: ConnectionGuardHandler.self)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        guardHandler = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head: guardHandler?.requestHeadReceived()
        case .body: break
        case .end: guardHandler?.requestEnded()
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { guardHandler?.responseEnded() }
        context.write(data, promise: promise)
    }
}
