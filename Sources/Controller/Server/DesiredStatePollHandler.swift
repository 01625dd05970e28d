import HTTPTypes
import NIOCore
import NIOHTTPTypes

/// Answers agents' desired-state polls (`GET /v1/agents/{id}/desired-state[?wait=N]`) on the event loop, before
/// Hummingbird's router, and parks their long-polls here: the path 10,000 agents take all day.
///
/// What it answers is exactly what the route would: the same authentication (the `Authenticator`, with its revocation
/// check on every request), the same states (`DesiredStateProvider`), the same status, headers and body, the same
/// metrics. Anything it is not sure about — another route or method, a query other than `wait=N`, a token that is not a
/// valid agent token for that id, an unknown agent, an error — is passed on untouched to the router, which answers it
/// (with its error) as before. A parked poll is an entry in the `LongPollHub` with a timer on this connection's event
/// loop: no task and no continuation per waiting agent, and a publish's wake-ups run on every event loop at once.
///
/// One request at a time per connection: requests pipelined behind one it handles are held until it has answered;
/// while the router is answering a request, everything is passed to the router (which keeps the order).
final class DesiredStatePollHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    /// What the handler answers with.
    struct Dependencies: Sendable {
        let authenticator: Authenticator
        let desiredStates: DesiredStateProvider
        let metrics: ControllerMetrics
        /// Longest `?wait=` accepted (longer ones go to the router, which refuses them).
        let maximumWait: Duration
    }

    /// The route as the router names it (request metrics are recorded under it).
    static let route = "/v1/agents/:agent/desired-state"

    /// A poll this handler may answer, read from the request head.
    struct Poll: Equatable {
        var agentID: String
        var token: Substring
        var ifNoneMatch: String?
        var wait: Duration
        var closesConnection: Bool

        /// `nil` unless `head` is `GET /v1/agents/<id>/desired-state` with at most `wait=<0...maximum>` as its query
        /// and a Bearer token.
        init?(_ head: HTTPRequest, maximumWait: Duration) {
            guard head.method == .get, let path = head.path else { return nil }
            let prefix = "/v1/agents/"
            let suffix = "/desired-state"
            var target = Substring(path)
            var query: Substring?
            if let mark = target.firstIndex(of: "?") {
                query = target[target.index(after: mark)...]
                target = target[..<mark]
            }
            guard target.hasPrefix(prefix), target.hasSuffix(suffix), target.count > prefix.count + suffix.count else { return nil }
            let id = target.dropFirst(prefix.count).dropLast(suffix.count)
            guard !id.contains("/") else { return nil }
            var wait = Duration.zero
            if let query, !query.isEmpty {
                guard query.hasPrefix("wait="), let seconds = Int64(query.dropFirst("wait=".count)), seconds >= 0,
                    seconds <= maximumWait.components.seconds
                else { return nil }
                wait = .seconds(seconds)
            }
            guard let authorization = head.headerFields[.authorization],
                let (scheme, token) = Authenticator.credentials(fromAuthorization: authorization), scheme == .bearer
            else { return nil }
            agentID = String(id)
            self.token = token
            ifNoneMatch = head.headerFields[.ifNoneMatch]
            self.wait = wait
            closesConnection = head.headerFields[values: .connection].contains { $0.lowercased().contains("close") }
        }
    }

    /// The request this handler is answering.
    private struct Current {
        var poll: Poll
        /// Its parts so far: given to the router if the handler passes it on.
        var parts: [HTTPRequestPart]
        var ended = false
        let startedAt: ContinuousClock.Instant
        /// When a long-poll must be answered at the latest.
        let deadline: ContinuousClock.Instant
        /// Bumped on every step, so a late callback of an earlier step is ignored.
        var step: UInt64 = 0
        var ticket: LongPollHub.Ticket?
    }

    private let dependencies: Dependencies
    private var context: ChannelHandlerContext?
    private var current: Current?
    /// Requests passed to the router whose answer has not ended: while there are any, everything goes to the router.
    private var forwardedInFlight = 0
    /// Parts that arrived while this handler was answering (pipelined requests), replayed afterwards.
    private var queued = CircularBuffer<HTTPRequestPart>()
    /// The rest of an answered request (its `.end` had not arrived) is dropped.
    private var draining = false
    /// A graceful-shutdown quiesce held back until the current answer is written.
    private var heldQuiesce: Any?
    private var nextStep: UInt64 = 0

    init(_ dependencies: Dependencies) {
        self.dependencies = dependencies
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        abandon()
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        abandon()
        context.fireChannelInactive()
    }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        receive(unwrapInboundIn(data))
    }

    private func receive(_ part: HTTPRequestPart) {
        guard let context else { return }
        if current != nil {
            // Parts of the request being answered, until its end (unless earlier parts still wait in the queue).
            if current?.ended == false, queued.isEmpty {
                current?.parts.append(part)
                if case .end = part { current?.ended = true }
            } else {
                queued.append(part)
            }
            return
        }
        if draining {
            if case .end = part { draining = false }
            return
        }
        guard forwardedInFlight == 0, case .head(let head) = part, let poll = Poll(head, maximumWait: dependencies.maximumWait) else {
            if case .head = part { forwardedInFlight += 1 }
            context.fireChannelRead(wrapInboundOut(part))
            return
        }
        let now = ContinuousClock.now
        current = Current(poll: poll, parts: [part], startedAt: now, deadline: now + poll.wait)
        authenticate()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent, current != nil {
            // Passed on once this answer is written, so the connection is not closed under a parked poll.
            heldQuiesce = event
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    // MARK: Outbound (the router's answers)

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data), forwardedInFlight > 0 {
            forwardedInFlight -= 1
        }
        context.write(data, promise: promise)
    }

    // MARK: Steps

    private func authenticate() {
        guard let poll = current?.poll else { return }
        if let principal = dependencies.authenticator.cachedPrincipal(forToken: poll.token) {
            authenticated(principal)
            return
        }
        guard let eventLoop = context?.eventLoop else { return }
        let step = beginStep()
        let bound = NIOLoopBound(self, eventLoop: eventLoop)
        let authenticator = dependencies.authenticator
        let token = String(poll.token)
        Task {
            // Any refusal is the router's to give, with its error: pass the request on.
            let principal = try? await authenticator.principal(forToken: token[...], challenge: .bearer)
            bound.eventLoop.execute {
                let handler = bound.value
                guard handler.current?.step == step else { return }
                if let principal { handler.authenticated(principal) } else { handler.passOn() }
            }
        }
    }

    private func authenticated(_ principal: Principal) {
        guard let poll = current?.poll else { return }
        guard principal.role == .agent, principal.agentID == poll.agentID else {
            passOn()
            return
        }
        resolveState()
    }

    /// Finds the current state (computed when not cached), then answers or parks.
    private func resolveState() {
        guard let poll = current?.poll else { return }
        let provider = dependencies.desiredStates
        // Read before the state: a change that lands in between ends the next park at once instead of being missed.
        let generation = provider.hub.generation
        if let state = provider.cached(for: poll.agentID) {
            decide(state, generation: generation)
            return
        }
        guard let eventLoop = context?.eventLoop else { return }
        let step = beginStep()
        let bound = NIOLoopBound(self, eventLoop: eventLoop)
        let agentID = poll.agentID
        Task {
            let state = try? await provider.current(for: agentID)
            bound.eventLoop.execute {
                let handler = bound.value
                guard handler.current?.step == step else { return }
                // No such agent (removed meanwhile), or the store failed: the router answers 404 or the error.
                guard let state else { return handler.passOn() }
                handler.decide(state, generation: generation)
            }
        }
    }

    private func decide(_ state: RenderedDesiredState, generation: UInt64) {
        guard let current else { return }
        guard let tag = current.poll.ifNoneMatch, state.isMatched(byIfNoneMatch: tag) else {
            answer(.ok, state)
            return
        }
        let remaining = current.deadline - .now
        guard remaining > .zero else {
            answer(.notModified, state)
            return
        }
        guard let eventLoop = context?.eventLoop else { return }
        let step = beginStep()
        let bound = NIOLoopBound(self, eventLoop: eventLoop)
        let ticket = dependencies.desiredStates.hub.park(
            agentID: current.poll.agentID,
            services: state.services,
            after: generation,
            timeout: remaining,
            on: eventLoop
        ) { wake in
            bound.eventLoop.execute {
                let handler = bound.value
                guard handler.current?.step == step else { return }
                handler.woken(wake)
            }
        }
        if self.current?.step == step { self.current?.ticket = ticket }
    }

    private func woken(_ wake: LongPollHub.Wake) {
        current?.ticket = nil
        switch wake {
        case .cancelled:
            return
        case .changed:
            // Something that may concern the agent happened: answer if its state changed, else park for the rest.
            resolveState()
        case .timedOut, .shutdown, .superseded:
            // Answer now with whatever the state is (the route answers 304 when it is still the agent's).
            guard let agentID = current?.poll.agentID, let eventLoop = context?.eventLoop else { return }
            let provider = dependencies.desiredStates
            if let state = provider.cached(for: agentID) {
                answerNow(state)
                return
            }
            let step = beginStep()
            let bound = NIOLoopBound(self, eventLoop: eventLoop)
            Task {
                let state = try? await provider.current(for: agentID)
                bound.eventLoop.execute {
                    let handler = bound.value
                    guard handler.current?.step == step else { return }
                    guard let state else { return handler.passOn() }
                    handler.answerNow(state)
                }
            }
        }
    }

    /// Answers without waiting any longer: 304 when the agent has `state`, else 200.
    private func answerNow(_ state: RenderedDesiredState) {
        guard let current else { return }
        let unchanged = current.poll.ifNoneMatch.map(state.isMatched(byIfNoneMatch:)) ?? false
        answer(unchanged ? .notModified : .ok, state)
    }

    private func beginStep() -> UInt64 {
        nextStep &+= 1
        current?.step = nextStep
        return nextStep
    }

    // MARK: Endings

    /// Writes the answer the route would give, then goes on with whatever arrived meanwhile.
    private func answer(_ status: HTTPResponse.Status, _ state: RenderedDesiredState) {
        guard let context, let current else { return }
        var fields: HTTPFields = [.eTag: state.etag, .cacheControl: "private, no-cache"]
        if status == .ok {
            fields[.contentType] = "application/json; charset=utf-8"
            fields[.contentLength] = String(state.bodyLength)
        } else {
            fields[.contentLength] = "0"
        }
        context.write(wrapOutboundOut(.head(HTTPResponse(status: status, headerFields: fields))), promise: nil)
        if status == .ok {
            context.write(wrapOutboundOut(.body(state.head)), promise: nil)
            context.write(wrapOutboundOut(.body(state.releases.bytes)), promise: nil)
            context.write(wrapOutboundOut(.body(state.tail)), promise: nil)
            dependencies.metrics.desiredStateFull.increment()
        } else {
            dependencies.metrics.desiredStateNotModified.increment()
        }
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        dependencies.metrics.desiredStateHandled.increment()
        dependencies.metrics.requests.record(route: Self.route, method: .get, status: status.code, duration: .now - current.startedAt)
        self.current = nil
        draining = !current.ended
        if current.poll.closesConnection {
            context.close(promise: nil)
            return
        }
        resumeQueued()
    }

    /// Gives the request to the router, as it arrived.
    private func passOn() {
        guard let context, let current else { return }
        self.current = nil
        forwardedInFlight += 1
        for part in current.parts { context.fireChannelRead(wrapInboundOut(part)) }
        // Maybe outside any read of the channel (after an asynchronous step): the async channel behind delivers what it
        // was given only on a read-complete.
        context.fireChannelReadComplete()
        resumeQueued()
    }

    private func resumeQueued() {
        if current == nil, let event = heldQuiesce {
            heldQuiesce = nil
            context?.fireUserInboundEventTriggered(event)
        }
        var replayed = false
        while current == nil, let part = queued.popFirst() {
            receive(part)
            replayed = true
        }
        // Replayed parts given to the router are delivered on a read-complete (see `passOn`).
        if replayed { context?.fireChannelReadComplete() }
    }

    /// The connection is going away: a parked poll leaves the hub.
    private func abandon() {
        if let ticket = current?.ticket { dependencies.desiredStates.hub.cancel(ticket) }
        current = nil
        queued.removeAll()
    }
}
