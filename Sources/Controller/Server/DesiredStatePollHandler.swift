import HTTPTypes
import NIOCore
import NIOHTTPTypes
import Shared

/// Answers agents' desired-state polls (`GET /v1/agents/{id}/desired-state[?wait=N]`) on the event loop, before
/// Hummingbird's router, and parks their long-polls here: the path 10,000 agents take all day. With
/// `Dependencies.statusReports` it also takes their status reports (`POST /v1/agents/{id}/status`), which every agent
/// of a fleet sends at once after a publish.
///
/// What it answers is exactly what the route would: the same authentication (the `Authenticator`, with its revocation
/// check on every request), the same states (`DesiredStateProvider`), the same handling of a report
/// (`StatusReportIntake`), the same status, headers and body, the same metrics. Anything it is not sure about —
/// another route or method, a query other than `wait=N` (none on a report), a token that is not a valid agent token for
/// that id, a report from a browser (`Origin`, `Sec-Fetch-Site`: `SameOriginMiddleware`'s to judge), a report larger
/// than the limit or one the intake refuses, an unknown agent, an error — is passed on untouched to the router, which
/// answers it (with its error) as before. (A refused report changed nothing, so the route handles it from the start.)
/// A parked poll is an entry in the `LongPollHub` (its deadline swept on this connection's event loop): no task, timer or
/// continuation per waiting agent, and a publish's wake-ups run on every event loop at once.
///
/// One request at a time per connection: requests pipelined behind one it handles are held until it has answered;
/// while the router is answering a request, everything is passed to the router (which keeps the order). The end of the
/// input of a client that half-closes reaches the router (which then closes the connection) only once no request is held
/// here, so the client still gets every answer; a parked poll is answered at once then. A decoder's error (a head it
/// refuses), which the router answers 400 at once, waits the same way.
final class DesiredStatePollHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    /// What the handler answers with. A class: every connection's two poll handlers share one instance (a struct
    /// copy of the metrics' references would cost each of 10,000 connections a few hundred bytes).
    final class Dependencies: Sendable {
        let authenticator: Authenticator
        let desiredStates: DesiredStateProvider
        let metrics: ControllerMetrics
        /// Longest `?wait=` accepted (longer ones go to the router, which refuses them).
        let maximumWait: Duration
        /// Takes status reports; `nil`: they all go to the route.
        let statusReports: StatusReportIntake?
        /// Largest body of a request taken here: a report's limit (a larger report goes to the route, which refuses
        /// it). A poll that carries a body goes to the route at its first body byte.
        let maximumStatusBytes: Int
        /// What every connection's held bodies share (the router's bodies too): a body that does not fit goes to the
        /// router, which answers 503.
        let bodyBudget: BodyBudget
        /// The request metrics of the answers given here, resolved once.
        let okSeries: RequestMetrics.Series
        let notModifiedSeries: RequestMetrics.Series
        let noContentSeries: RequestMetrics.Series

        init(
            authenticator: Authenticator,
            desiredStates: DesiredStateProvider,
            metrics: ControllerMetrics,
            maximumWait: Duration,
            statusReports: StatusReportIntake? = nil,
            maximumStatusBytes: Int = 0,
            bodyBudget: BodyBudget = BodyBudget()
        ) {
            self.authenticator = authenticator
            self.desiredStates = desiredStates
            self.metrics = metrics
            self.maximumWait = maximumWait
            self.statusReports = statusReports
            self.maximumStatusBytes = maximumStatusBytes
            self.bodyBudget = bodyBudget
            okSeries = metrics.requests.series(route: DesiredStatePollHandler.route, method: .get, status: 200)
            notModifiedSeries = metrics.requests.series(route: DesiredStatePollHandler.route, method: .get, status: 304)
            noContentSeries = metrics.requests.series(route: DesiredStatePollHandler.reportRoute, method: .post, status: 204)
        }

        /// Counts a poll answered before the router (200 or 304) and how long it took: what the route's metrics would
        /// have recorded.
        func recordAnswer(notModified: Bool, after duration: Duration) {
            if notModified {
                metrics.desiredStateNotModified.increment()
                notModifiedSeries.record(duration)
            } else {
                metrics.desiredStateFull.increment()
                okSeries.record(duration)
            }
            metrics.desiredStateHandled.increment()
        }

        /// Counts a status report answered before the router, as the route's metrics would have.
        func recordReport(after duration: Duration) {
            noContentSeries.record(duration)
            metrics.statusReportsHandled.increment()
        }
    }

    /// The routes as the router names them (request metrics are recorded under them).
    static let route = "/v1/agents/:agent/desired-state"
    static let reportRoute = "/v1/agents/:agent/status"

    /// A poll this handler may answer, read from the request head.
    struct Poll: Equatable {
        var agentID: String
        var token: Substring
        var ifNoneMatch: String?
        var wait: Duration
        var closesConnection: Bool

        /// `nil` unless `head` is `GET /v1/agents/<id>/desired-state` with at most `wait=<0...maximum>` as its query
        /// and a Bearer token.
        ///
        /// Read as bytes: this runs for every request of every agent, and `Character`-wise string scanning (grapheme
        /// breaking) cost more than the rest of the answer.
        init?(_ head: HTTPRequest, maximumWait: Duration) {
            guard head.method == .get, let path = head.path else { return nil }
            let parsed: (id: String, wait: Duration)?? = path.utf8.withContiguousStorageIfAvailable { bytes in
                Self.target(bytes, maximumWait: maximumWait)
            }
            // A native string is always contiguous; anything else goes to the router.
            guard let parsed, let (id, wait) = parsed else { return nil }
            guard let authorization = head.headerFields[.authorization],
                let (scheme, token) = Authenticator.credentials(fromAuthorization: authorization), scheme == .bearer
            else { return nil }
            agentID = id
            self.token = token
            ifNoneMatch = head.headerFields[.ifNoneMatch]
            self.wait = wait
            closesConnection = DesiredStatePollHandler.closesConnection(head)
        }

        private static let suffix = Array("/desired-state".utf8)
        private static let waitKey = Array("wait=".utf8)

        /// The agent id and wait of `/v1/agents/<id>/desired-state[?wait=N]`: an id of at least one byte and no `/`, and
        /// no query other than `wait=<0...maximumWait seconds>`.
        static func target(_ bytes: UnsafeBufferPointer<UInt8>, maximumWait: Duration) -> (id: String, wait: Duration)? {
            let end = bytes.firstIndex(of: UInt8(ascii: "?")) ?? bytes.count
            guard let id = DesiredStatePollHandler.agentID(in: UnsafeBufferPointer(rebasing: bytes[..<end]), suffix: suffix) else { return nil }
            var wait = Duration.zero
            if end < bytes.count {
                let query = bytes[(end + 1)...]
                if !query.isEmpty {
                    guard query.starts(with: waitKey),
                        let seconds = Int64(String(decoding: query.dropFirst(waitKey.count), as: UTF8.self)), seconds >= 0,
                        seconds <= maximumWait.components.seconds
                    else { return nil }
                    wait = .seconds(seconds)
                }
            }
            return (id, wait)
        }
    }

    /// A status report this handler may take, read from the request head.
    struct Report: Equatable {
        var agentID: String
        var token: Substring
        var closesConnection: Bool

        /// `nil` unless `head` is `POST /v1/agents/<id>/status` with no query, a Bearer token, and none of the headers
        /// a browser sends (`SameOriginMiddleware` judges those) or that ask for an interim answer (`Expect`).
        init?(_ head: HTTPRequest) {
            guard head.method == .post, let path = head.path else { return nil }
            let id: String?? = path.utf8.withContiguousStorageIfAvailable { bytes in
                DesiredStatePollHandler.agentID(in: bytes, suffix: Self.suffix)
            }
            guard let id, let id else { return nil }
            let fields = head.headerFields
            guard fields[.origin] == nil, fields[SameOriginMiddleware<FerryRequestContext>.secFetchSite] == nil, fields[.expect] == nil,
                let authorization = fields[.authorization],
                let (scheme, token) = Authenticator.credentials(fromAuthorization: authorization), scheme == .bearer
            else { return nil }
            agentID = id
            self.token = token
            closesConnection = DesiredStatePollHandler.closesConnection(head)
        }

        private static let suffix = Array("/status".utf8)
    }

    /// What a request taken here is.
    enum Kind: Equatable {
        case poll(Poll)
        case report(Report)

        var agentID: String {
            switch self {
            case .poll(let poll): poll.agentID
            case .report(let report): report.agentID
            }
        }

        var token: Substring {
            switch self {
            case .poll(let poll): poll.token
            case .report(let report): report.token
            }
        }

        var closesConnection: Bool {
            switch self {
            case .poll(let poll): poll.closesConnection
            case .report(let report): report.closesConnection
            }
        }
    }

    private static let agentsPrefix = Array("/v1/agents/".utf8)

    /// The id of `/v1/agents/<id><suffix>` (exactly: no query): at least one byte, no `/`.
    static func agentID(in bytes: UnsafeBufferPointer<UInt8>, suffix: [UInt8]) -> String? {
        let prefix = agentsPrefix
        guard bytes.count > prefix.count + suffix.count,
            bytes[0..<prefix.count].elementsEqual(prefix),
            bytes[(bytes.count - suffix.count)...].elementsEqual(suffix)
        else { return nil }
        let id = bytes[prefix.count..<(bytes.count - suffix.count)]
        guard !id.contains(UInt8(ascii: "/")) else { return nil }
        return String(decoding: id, as: UTF8.self)
    }

    /// Whether the request asks for the connection to be closed after its answer.
    static func closesConnection(_ head: HTTPRequest) -> Bool {
        head.headerFields[values: .connection].contains { ASCII.containsToken($0, caseInsensitive: "close") }
    }

    /// The request this handler is answering.
    private struct Current {
        var kind: Kind
        /// Its head, and its end once here: given to the router, with `body` between them, if the handler passes it on.
        var head: HTTPRequestPart
        var end: HTTPRequestPart?
        /// Its body so far, in one buffer: each part the decoder gives is a slice of the read it came in, and a body
        /// sent a few bytes per segment held one read buffer per part (hundreds of times its own size).
        var body: ByteBuffer?
        var ended: Bool { end != nil }
        /// Body bytes so far.
        var bodyBytes: Int { body?.readableBytes ?? 0 }
        /// Bytes of it taken from `Dependencies.bodyBudget`, given back when the request is done here, and whose share
        /// they were taken from (a report's agent, known at its head; a poll holds no body here).
        var reserved = 0
        var budgetHolder: String?
        let startedAt: ContinuousClock.Instant
        /// When a long-poll must be answered at the latest.
        let deadline: ContinuousClock.Instant
        /// Bumped on every step, so a late callback of an earlier step is ignored.
        var step: UInt64 = 0
        var ticket: LongPollHub.Ticket?
        /// Whether the poll was parked: a new state is then given only once its token is looked up again.
        var waited = false

        var poll: Poll? {
            if case .poll(let poll) = kind { poll } else { nil }
        }

        init(kind: Kind, head: HTTPRequestPart, startedAt: ContinuousClock.Instant, deadline: ContinuousClock.Instant) {
            self.kind = kind
            self.head = head
            self.startedAt = startedAt
            self.deadline = deadline
        }

        /// Adds a body part (copied, unless it is the first).
        mutating func append(_ bytes: inout ByteBuffer) {
            if body == nil { body = bytes } else { body?.writeBuffer(&bytes) }
        }

        /// What arrived of it, in order, as the router is given it.
        var parts: [HTTPRequestPart] {
            [head] + (body.map { [.body($0)] } ?? []) + (end.map { [$0] } ?? [])
        }
    }

    private let dependencies: Dependencies
    private var context: ChannelHandlerContext?
    private var current: Current?
    /// Requests passed to the router whose answer has not ended: while there are any, everything goes to the router.
    private var forwardedInFlight = 0
    /// Parts that arrived while this handler was answering (pipelined requests), replayed afterwards. While any wait,
    /// nothing more is read (`read(context:)`): a client pipelining behind a parked long-poll fills its own socket
    /// buffer, not this process's memory.
    ///
    /// An array, not NIO's `CircularBuffer`: that one allocates 16 slots when created, a few KB on each of 10,000 idle
    /// connections, for a queue that is nearly always empty (an empty array allocates nothing).
    private var queued: [HTTPRequestPart] = []
    /// A read the channel asked for while `queued` held parts: issued once they are replayed.
    private var readHeld = false
    /// The rest of an answered request (its `.end` had not arrived) is dropped.
    private var draining = false
    /// A graceful-shutdown quiesce held back until the current answer is written.
    private var heldQuiesce: Any?
    /// The end of the client's input (it half-closed), held back until no whole request waits here: passed on, it ended
    /// the router's loop, whose closing of the output then closed the connection (an output closed after the input is a
    /// full close) under the request held here, never answered.
    private var heldInputClosed = false
    /// The first error (the decoder's refusal of a head) that arrived while a whole request waited here, held back until
    /// none does.
    private var heldError: (any Error)?
    /// Answers' ends written while an error or end of input is held, not yet handed to the socket: the held events wait
    /// for the last (an answer written in the same turn as the one before it, a queued poll answered at once, would
    /// otherwise be cut by the router's close).
    private var heldWritesPending = 0
    private var nextStep: UInt64 = 0
    /// The raw-bytes handler in front of the decoder, told whenever everything given to this one is answered.
    private var fastPath: DesiredStateFastPath?

    init(_ dependencies: Dependencies) {
        self.dependencies = dependencies
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        fastPath = try? context.pipeline.syncOperations.handler(type: DesiredStateFastPath.self)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        abandon()
        self.context = nil
        fastPath = nil
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fastPath?.downstreamFailed()
        if holdsRequest {
            // Passed on once no request is held here: the router, idle, answers a parse error at once (400, and its output
            // closes), and that 400 went out as the answer to the held request. The first only: it ends the router's
            // loop, and the decoder fails every later read with one of its own.
            if heldError == nil { heldError = error }
            return
        }
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        abandon()
        context.fireChannelInactive()
    }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        receive(unwrapInboundIn(data))
    }

    /// - Parameter replayed: `part` is the first of `queued` (taken out of it): it goes before the others.
    private func receive(_ part: HTTPRequestPart, replayed: Bool = false) {
        guard let context else { return }
        // Every head is a request unanswered until its answer ends, whoever takes it. The fast path closes for it even
        // if it opened between two requests of one read (the first answered at once): a poll it answered in a later
        // read went out before this one's answer, as its answer.
        if case .head = part { fastPath?.downstreamBecameBusy() }
        if current != nil {
            // Parts of the request being answered, until its end (unless earlier parts still wait in the queue).
            if current?.ended == false, queued.isEmpty || replayed {
                switch part {
                case .head:
                    // Never: a head follows the end of the request before it.
                    break
                case .body(var bytes) where current?.poll != nil:
                    // A poll has no body: one sent with a body is the router's, whose route never reads it. Held here it
                    // counted against no token's share of the body budget (a poll's principal has none yet), and 256
                    // parked polls of 1 MiB from one agent took the whole budget every report and publish shares.
                    current?.append(&bytes)
                    passOn()
                case .body(var bytes):
                    // Held until answered: a body larger than a report may be (a poll has none) is the router's to read,
                    // and so is one that does not fit in the budget every connection shares (the router refuses it).
                    let fits = dependencies.bodyBudget.reserve(bytes.readableBytes, for: current?.budgetHolder)
                    if fits { current?.reserved += bytes.readableBytes }
                    current?.append(&bytes)
                    if !fits || current?.bodyBytes ?? 0 > dependencies.maximumStatusBytes { passOn() }
                case .end:
                    current?.end = part
                    // A report is taken once all of it is here, its token looked up again: one revoked, or its agent
                    // replaced, while the body arrived (a byte within each idle timeout) acts no more.
                    if case .report = current?.kind { authenticate() }
                }
            } else {
                queued.append(part)
            }
            return
        }
        if draining {
            if case .end = part {
                draining = false
                noteIfIdle()
            }
            return
        }
        guard forwardedInFlight == 0, case .head(let head) = part, let kind = kind(of: head) else {
            if case .head = part { forwardedInFlight += 1 }
            context.fireChannelRead(wrapInboundOut(part))
            return
        }
        let now = ContinuousClock.now
        switch kind {
        case .poll(let poll):
            current = Current(kind: kind, head: part, startedAt: now, deadline: now + poll.wait)
            authenticate()
        case .report(let report):
            // Its body is held here only for a token known (cached) as this agent's; any other report is the router's at
            // once, whose authentication refuses it before reading its body. Held for any token that merely looked like
            // one, bodies up to the limit on every connection were memory anyone who could connect could take.
            guard let principal = dependencies.authenticator.cachedPrincipal(forToken: report.token), principal.role == .agent,
                principal.agentID == report.agentID
            else {
                forwardedInFlight += 1
                context.fireChannelRead(wrapInboundOut(part))
                return
            }
            // Taken once its body is here (`.end`), its token looked up again then.
            current = Current(kind: kind, head: part, startedAt: now, deadline: now)
            current?.budgetHolder = principal.budgetHolder
        }
    }

    private func kind(of head: HTTPRequest) -> Kind? {
        // A client that does not read its answers (the socket's send buffer is full) is the router's: its connection task
        // waits to write and reads no further request, so the slow-reader timeout closes the connection. Answered here,
        // each request of a client pipelining without reading would add an answer to the channel's outbound buffer, a
        // queue without bound, and the connection would count as idle and never time out.
        guard context?.channel.isWritable == true else { return nil }
        if let poll = Poll(head, maximumWait: dependencies.maximumWait) { return .poll(poll) }
        if dependencies.statusReports != nil, let report = Report(head) { return .report(report) }
        return nil
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent, current != nil {
            // Passed on once this answer is written, so the connection is not closed under a parked poll.
            heldQuiesce = event
            return
        }
        if event as? ChannelEvent == .inputClosed, holdsRequest {
            heldInputClosed = true
            // A parked poll is answered now, as at the end of its wait: a client that closed its connection for good sends
            // the same end of input, and its poll must not stay parked (and the connection open) for the rest of the wait.
            if let ticket = current?.ticket {
                dependencies.desiredStates.hub.cancel(ticket)
                current?.ticket = nil
                answerCurrent()
            }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// Whether a whole request waits here for its answer: the one being answered, or one queued behind it. One whose end
    /// has not arrived holds nothing back: at the end of the input it can never be answered, and an error is about it;
    /// the router answers the error, or closes the connection, as before.
    private var holdsRequest: Bool { current?.ended == true || !queued.isEmpty }

    // MARK: Outbound (the router's answers, the channel's reads)

    func read(context: ChannelHandlerContext) {
        guard queued.isEmpty else {
            readHeld = true
            return
        }
        context.read()
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard case .end = unwrapOutboundIn(data), forwardedInFlight > 0 else {
            context.write(data, promise: promise)
            return
        }
        forwardedInFlight -= 1
        context.write(data, promise: promise)
        noteIfIdle()
    }

    /// Tells the fast path when nothing this handler was given is unanswered.
    private func noteIfIdle() {
        if current == nil, forwardedInFlight == 0, queued.isEmpty, !draining { fastPath?.downstreamBecameIdle() }
    }

    // MARK: Steps

    /// What follows a successful authentication: the request's own step (a poll's state, a report's intake), or the
    /// answer of a poll that waited, with the state it is to be given.
    private enum AfterAuthentication: Sendable {
        case proceed
        case answer(RenderedDesiredState)
    }

    /// Looks the request's token up (in the cache, else in the store off the event loop), then goes on with `next`; a
    /// token refused is the router's to refuse, with its error.
    private func authenticate(then next: AfterAuthentication = .proceed) {
        guard let kind = current?.kind else { return }
        if let principal = dependencies.authenticator.cachedPrincipal(forToken: kind.token) {
            authenticated(principal, then: next)
            return
        }
        guard let eventLoop = context?.eventLoop else { return }
        let step = beginStep()
        let bound = NIOLoopBound(self, eventLoop: eventLoop)
        let authenticator = dependencies.authenticator
        let token = String(kind.token)
        Task {
            // Any refusal is the router's to give, with its error: pass the request on.
            let principal = try? await authenticator.principal(forToken: token[...], challenge: .bearer)
            bound.eventLoop.execute {
                let handler = bound.value
                guard handler.current?.step == step else { return }
                if let principal { handler.authenticated(principal, then: next) } else { handler.passOn() }
            }
        }
    }

    private func authenticated(_ principal: Principal, then next: AfterAuthentication) {
        guard let kind = current?.kind else { return }
        guard principal.role == .agent, principal.agentID == kind.agentID else {
            passOn()
            return
        }
        switch (next, kind) {
        case (.answer(let state), _): write(.ok, state)
        case (.proceed, .poll): resolveState()
        case (.proceed, .report(let report)): submit(report)
        }
    }

    /// Hands the report to the intake off the event loop; answers `204 No Content` once it is stored, or passes the
    /// request on when the intake refused it (nothing was changed: the route refuses it again with its error).
    private func submit(_ report: Report) {
        guard let current, let intake = dependencies.statusReports, let eventLoop = context?.eventLoop else { return passOn() }
        let body = current.body ?? ByteBuffer()
        let step = beginStep()
        let bound = NIOLoopBound(self, eventLoop: eventLoop)
        // The task holds the body's share of the budget until the report is stored or refused, whatever happens to the
        // connection: given back when it closed, a report still waiting for its batch counted for nothing, and one token
        // could queue reports without end by closing each connection once it had sent one.
        let (reserved, holder, budget) = (current.reserved, current.budgetHolder, dependencies.bodyBudget)
        self.current?.reserved = 0
        Task { [body] in
            let accepted: Bool
            do {
                try await intake.accept(body.readableBytesView, agentID: report.agentID)
                accepted = true
            } catch {
                accepted = false
            }
            budget.release(reserved, for: holder)
            bound.eventLoop.execute {
                let handler = bound.value
                guard handler.current?.step == step else { return }
                if accepted { handler.answerNoContent() } else { handler.passOn() }
            }
        }
    }

    /// Finds the current state (computed off the event loop when memory does not hold what it takes), then answers or
    /// parks.
    private func resolveState() {
        guard let poll = current?.poll else { return }
        let provider = dependencies.desiredStates
        // Read before the state: a change that lands in between ends the next park at once instead of being missed.
        let generation = provider.hub.generation
        // Cached, or computed here from memory (the common case after a publish: see `currentInMemory`).
        if let state = provider.currentInMemory(for: poll.agentID) {
            decide(state, generation: generation)
            return
        }
        computeState(of: poll.agentID) { handler, state in handler.decide(state, generation: generation) }
    }

    /// Computes the state of `agentID` (not cached) off the event loop, then gives it to `then` back on it — unless the
    /// request moved on meanwhile. No such agent (removed meanwhile), or the store failed: the router answers (404, or
    /// the error).
    ///
    /// At high priority: after a publish every woken long-poll of 10,000 computes its state here while the agents
    /// already answered send their status reports, whose handlers run at the default priority. At the same priority
    /// each computation queued behind thousands of report jobs in the cooperative pool and the last wakes came late
    /// (docs/benchmarks.md); delivering the new release comes first, a report's answer can wait.
    private func computeState(of agentID: String, then: @escaping (DesiredStatePollHandler, RenderedDesiredState) -> Void) {
        guard let eventLoop = context?.eventLoop else { return }
        let provider = dependencies.desiredStates
        let step = beginStep()
        let bound = NIOLoopBound(self, eventLoop: eventLoop)
        let then = NIOLoopBound(then, eventLoop: eventLoop)
        Task(priority: .high) {
            let state = try? await provider.current(for: agentID)
            bound.eventLoop.execute {
                let handler = bound.value
                guard handler.current?.step == step else { return }
                guard let state else { return handler.passOn() }
                then.value(handler, state)
            }
        }
    }

    private func decide(_ state: RenderedDesiredState, generation: UInt64) {
        guard let current else { return }
        guard let tag = current.poll?.ifNoneMatch, state.isMatched(byIfNoneMatch: tag) else {
            answer(.ok, state)
            return
        }
        let remaining = current.deadline - .now
        // After the end of the input, no wait: see `userInboundEventTriggered`.
        guard remaining > .zero, !heldInputClosed else {
            answer(.notModified, state)
            return
        }
        guard let eventLoop = context?.eventLoop else { return }
        let step = beginStep()
        let bound = NIOLoopBound(self, eventLoop: eventLoop)
        let ticket = dependencies.desiredStates.hub.park(
            agentID: current.kind.agentID,
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
        if self.current?.step == step {
            self.current?.ticket = ticket
            self.current?.waited = true
        }
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
            answerCurrent()
        }
    }

    /// Answers now with whatever the state is (the route answers 304 when it is still the agent's).
    private func answerCurrent() {
        guard let agentID = current?.kind.agentID else { return }
        if let state = dependencies.desiredStates.currentInMemory(for: agentID) {
            answerNow(state)
            return
        }
        computeState(of: agentID) { handler, state in handler.answerNow(state) }
    }

    /// Answers without waiting any longer: 304 when the agent has `state`, else 200.
    private func answerNow(_ state: RenderedDesiredState) {
        guard let current else { return }
        let unchanged = current.poll?.ifNoneMatch.map(state.isMatched(byIfNoneMatch:)) ?? false
        answer(unchanged ? .notModified : .ok, state)
    }

    private func beginStep() -> UInt64 {
        nextStep &+= 1
        current?.step = nextStep
        return nextStep
    }

    // MARK: Endings

    /// Answers with `state`. A new state after a wait goes out only once the token is looked up again (the state read
    /// first, then the token): an operator's re-enrolment of the agent (a replace) wakes it, and the old token must not
    /// be handed the new state, new services' releases included. A cache hit unless a token stopped working since; an
    /// unchanged state (304) or a wait that parks again tells the token nothing and costs no look-up, so the wake-up
    /// of every parked agent after a revocation is no burst of store reads.
    private func answer(_ status: HTTPResponse.Status, _ state: RenderedDesiredState) {
        guard status == .ok, current?.waited == true else { return write(status, state) }
        authenticate(then: .answer(state))
    }

    /// Writes the answer the route would give, then goes on with whatever arrived meanwhile.
    private func write(_ status: HTTPResponse.Status, _ state: RenderedDesiredState) {
        guard let context, let current else { return }
        let duration = ContinuousClock.now - current.startedAt
        if status == .ok {
            context.write(wrapOutboundOut(.head(Self.dated(state.okResponse))), promise: nil)
            context.write(wrapOutboundOut(.body(state.head)), promise: nil)
            context.write(wrapOutboundOut(.body(state.releases.bytes)), promise: nil)
            context.write(wrapOutboundOut(.body(state.tail)), promise: nil)
        } else {
            context.write(wrapOutboundOut(.head(Self.dated(state.notModifiedResponse))), promise: nil)
        }
        dependencies.recordAnswer(notModified: status != .ok, after: duration)
        finish(current, context: context)
    }

    /// Answers a stored report, as the route does.
    private func answerNoContent() {
        guard let context, let current else { return }
        context.write(wrapOutboundOut(.head(Self.dated(Self.noContent))), promise: nil)
        dependencies.recordReport(after: ContinuousClock.now - current.startedAt)
        finish(current, context: context)
    }

    /// The route's head for a stored report, but for its `Date`.
    private static let noContent = HTTPResponse(status: .noContent)

    /// `response` with the current `Date`, last, where Hummingbird puts it on the router's answers.
    static func dated(_ response: HTTPResponse) -> HTTPResponse {
        var response = response
        response.headerFields[.date] = HTTPDate.now
        return response
    }

    /// Writes the end of the answer to `answered`, then goes on with whatever arrived meanwhile.
    ///
    /// A close (`Connection: close`), or a held graceful-shutdown signal (which closes the connection), comes only once
    /// the answer is written: NIO's close drops the writes still pending, and a 200 larger than the socket's free send
    /// buffer went out cut short under its full `Content-Length`. Nothing that arrived meanwhile is taken then: the
    /// connection is closing. So does a held error or end of input, passed on once the requests replayed from the queue
    /// hold nothing here: the router's close of the output after an end of input is a full close. Otherwise the end is
    /// written without a promise (an allocation on every agent's poll).
    private func finish(_ answered: Current, context: ChannelHandlerContext) {
        dependencies.bodyBudget.release(answered.reserved, for: answered.budgetHolder)
        self.current = nil
        draining = !answered.ended
        if answered.kind.closesConnection {
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in channel.close(promise: nil) }
            return
        }
        if let event = heldQuiesce {
            heldQuiesce = nil
            context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { [self] _ in
                self.context?.fireUserInboundEventTriggered(event)
            }
            return
        }
        if heldInputClosed || heldError != nil {
            heldWritesPending += 1
            let written = context.writeAndFlush(wrapOutboundOut(.end(nil)))
            resumeQueued()
            noteIfIdle()
            // After the queue is replayed: an end written at once completes at once.
            written.assumeIsolated().whenComplete { [self] _ in
                heldWritesPending -= 1
                releaseHeldEvents()
            }
            return
        }
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        resumeQueued()
        noteIfIdle()
    }

    /// Gives the request to the router, as it arrived.
    private func passOn() {
        guard let context, let current else { return }
        // A poll parked here is the router's now.
        if let ticket = current.ticket { dependencies.desiredStates.hub.cancel(ticket) }
        dependencies.bodyBudget.release(current.reserved, for: current.budgetHolder)
        self.current = nil
        forwardedInFlight += 1
        for part in current.parts { context.fireChannelRead(wrapInboundOut(part)) }
        // Maybe outside any read of the channel (after an asynchronous step): the async channel behind delivers what it
        // was given only on a read-complete.
        context.fireChannelReadComplete()
        resumeQueued()
        releaseHeldEvents()
    }

    private func resumeQueued() {
        if current == nil, let event = heldQuiesce {
            heldQuiesce = nil
            context?.fireUserInboundEventTriggered(event)
        }
        var replayed = false
        // The next requests, and the rest of one taken from the queue (a report is taken once its end is here).
        while !queued.isEmpty, current == nil || current?.ended == false {
            let part = queued.removeFirst()
            receive(part, replayed: true)
            replayed = true
        }
        // An emptied array keeps its capacity: a burst of pipelined requests behind a parked poll would be held for the
        // connection's life.
        if replayed, queued.isEmpty { queued = [] }
        // Replayed parts given to the router are delivered on a read-complete (see `passOn`).
        if replayed { context?.fireChannelReadComplete() }
        if queued.isEmpty, readHeld {
            readHeld = false
            context?.read()
        }
    }

    /// Passes the held error and end of input on, in that order, once no whole request waits here and every answer's end
    /// written meanwhile has reached the socket: the router answers what it was given, then the error (400) and closes
    /// its output, or closes the connection at the end of input.
    private func releaseHeldEvents() {
        guard heldError != nil || heldInputClosed, !holdsRequest, heldWritesPending == 0, let context else { return }
        if let error = heldError {
            heldError = nil
            context.fireErrorCaught(error)
        }
        if heldInputClosed {
            heldInputClosed = false
            context.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        }
    }

    /// The connection is going away: a parked poll leaves the hub.
    private func abandon() {
        if let ticket = current?.ticket { dependencies.desiredStates.hub.cancel(ticket) }
        dependencies.bodyBudget.release(current?.reserved ?? 0, for: current?.budgetHolder)
        current = nil
        queued.removeAll()
        readHeld = false
        heldInputClosed = false
        heldError = nil
    }
}
