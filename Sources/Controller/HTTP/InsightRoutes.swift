import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import Shared
import Synchronization

/// What operators look at to learn why a deploy failed and to follow one live (viewer, operator; Basic accepted on
/// these reads):
/// - `GET /v1/agents/{name}`: one agent with its services, processes, failures (diagnoses, log tails), last reports;
/// - `GET /v1/rollouts/{service}/{serial}`: one rollout with every agent's standing and failure;
/// - `GET /v1/events/stream`: the event stream as server-sent events, with keep-alive comments;
/// - `GET /agents/{name}`, `GET /rollouts/{service}/{serial}`: the dashboard's detail pages of the same.
struct InsightRoutes: Sendable {
    let core: ControllerCore
    let pages: DetailPageRenderer
    /// The event streams each token holds open, at most `maximumStreamsPerToken`.
    let streamSlots = StreamSlots()

    /// Event streams one token may hold open at once: a dashboard or two, a few CI jobs following rollouts. One leaked
    /// viewer token cannot hold the connection limit's every slot (each stream also polls the store twice a second).
    static let maximumStreamsPerToken = 16

    /// How often the event stream looks for new events.
    static let eventPollInterval: Duration = .milliseconds(500)
    /// Keep-alive comment interval of the event stream when the client names none (well under the 60 s idle timeout
    /// of common load balancers).
    static let defaultKeepAlive = 15
    /// Most events one look of the stream sends before looking again.
    static let eventBatch = 100
    /// What a reconnecting `EventSource` sends: the id of the last event it received.
    static let lastEventIDHeader = HTTPField.Name("Last-Event-ID")!
    /// Tells nginx to pass each event on at once (the same as `proxy_buffering off` for this answer).
    static let accelBufferingHeader = HTTPField.Name("X-Accel-Buffering")!

    func register(readers: RouterGroup<FerryRequestContext>, dashboardPage: RouterGroup<FerryRequestContext>) {
        readers.get("/v1/agents/:agent") { _, context in
            JSONResponse.make(try await agentDetail(context).json)
        }
        readers.get("/v1/rollouts/:service/:serial") { request, context in
            // `agents=failed`: only the failed agents (what `rollout wait` reads every few seconds), not one entry per
            // agent of the fleet.
            var onlyFailed = false
            if let text = request.uri.queryParameters.get("agents") {
                guard text == "all" || text == "failed" else {
                    throw APIError.badRequest("invalid_agents", "agents must be all or failed, got \"\(text.prefix(40))\"")
                }
                onlyFailed = text == "failed"
            }
            return JSONResponse.make(try await rolloutDetail(context, everyFailure: !onlyFailed).json(onlyFailed: onlyFailed))
        }
        readers.get("/v1/events/stream") { request, context in try await eventStream(request, context: context) }
        dashboardPage.get("/agents/:agent") { _, context in
            html(pages.render(try await agentDetail(context), now: core.now(), pollInterval: core.configuration.pollInterval))
        }
        dashboardPage.get("/rollouts/:service/:serial") { _, context in
            html(pages.render(try await rolloutDetail(context), now: core.now(), pollInterval: core.configuration.pollInterval))
        }
    }

    // MARK: Details

    private func agentDetail(_ context: FerryRequestContext) async throws -> AgentDetail {
        let raw = context.parameters.get("agent") ?? ""
        guard let name = raw.removingPercentEncoding, !name.isEmpty, name.utf8.count <= 128 else {
            throw APIError.badRequest("invalid_agent_name", "an agent name is 1 to 128 characters (percent-encoded in the path)")
        }
        guard let detail = try await AgentDetail.load(name, from: core) else {
            throw APIError.notFound("unknown_agent", "no agent named \(name) is enrolled here (ferry-controller agents lists them)")
        }
        return detail
    }

    private func rolloutDetail(_ context: FerryRequestContext, everyFailure: Bool = false) async throws -> RolloutDetail {
        let service = context.parameters.get("service") ?? ""
        try RolloutRoutes.checkServiceName(service)
        let serial = try RolloutRoutes.serial(context.parameters.get("serial") ?? "")
        guard let detail = try await RolloutDetail.load(service: service, serial: serial, everyFailure: everyFailure, from: core.store) else {
            throw APIError.notFound(
                "unknown_rollout",
                "service \(service) has no rollout of serial \(serial) (ferry-controller releases --service \(service) lists its releases)"
            )
        }
        return detail
    }

    private func html(_ page: String) -> Response {
        Response(
            status: .ok,
            headers: [
                .contentType: "text/html; charset=utf-8", .cacheControl: "no-store",
                .contentSecurityPolicy: DashboardRenderer.contentSecurityPolicy, .xContentTypeOptions: "nosniff",
            ],
            body: .init(byteBuffer: ByteBuffer(string: page))
        )
    }

    // MARK: Event stream

    /// `GET /v1/events/stream[?service=S][&after=ID][&keepalive=SECONDS]`: every event with an id above `after` (or
    /// the `Last-Event-ID` header a reconnecting `EventSource` sends; by default only events from now on), oldest
    /// first, as `id: <id>` + `data: <event JSON>` messages, and a `: keep-alive` comment after every `keepalive`
    /// seconds (1...60, default 15) without one, so proxies and load balancers never see an idle connection. Ends when
    /// the controller shuts down or the token stops working (revoked, expired).
    private func eventStream(_ request: Request, context: FerryRequestContext) async throws -> Response {
        let query = request.uri.queryParameters
        let service = query.get("service")
        if let service { try RolloutRoutes.checkServiceName(service) }
        let keepAlive = try Self.integer(query.get("keepalive"), name: "keepalive", in: 1...60) ?? Int64(Self.defaultKeepAlive)
        var after = try Self.integer(query.get("after"), name: "after", in: 0...Int64.max)
        // A reconnecting EventSource sends the URL it first used, `?after=` and all, with the id it last received:
        // that id wins, or every reconnect would replay everything after the first `after` again.
        if let header = request.headers[Self.lastEventIDHeader] {
            let lastReceived = try Self.integer(header, name: "Last-Event-ID", in: 0...Int64.max)
            after = max(after ?? 0, lastReceived ?? 0)
        }
        // Never past the newest event: a cursor from before the database was restored (ids start lower again), or a
        // made-up one, would match nothing for ever and the stream would show no event at all.
        let latest = try await core.store.latestEventID()
        let start = min(after ?? latest, latest)
        let token = request.headers[.authorization].flatMap { Authenticator.credentials(fromAuthorization: $0)?.token }.map(String.init)
        let principal = try context.authenticated()
        let holder = principal.tokenID ?? principal.name
        guard let slot = streamSlots.take(for: holder, limit: Self.maximumStreamsPerToken) else {
            throw APIError(
                .tooManyRequests,
                "too_many_streams",
                "this token holds \(Self.maximumStreamsPerToken) event streams open already; close one (or use another token)"
            )
        }
        let core = core
        let first = start
        let streams = core.metrics.eventStreams
        let channel = context.channel
        let body = ResponseBody { writer in
            streams.increment()
            // The slot goes back when the answer is done with, whether this ran or not (the closure holds it).
            defer { withExtendedLifetime(slot) { streams.decrement() } }
            var cursor = first
            var lastWrite = ContinuousClock.now
            try await writer.write(ByteBuffer(string: "retry: 2000\n: Ferry events after id \(first)\n\n"))
            while !core.desiredStates.hub.isShutDown {
                // A client that left ends its stream now, not at the next write (up to `keepalive` seconds later, while
                // the connection limit already counted its slot free and the stream went on reading the store).
                if await Self.peerClosed(channel) { return }
                // A revoked or expired token ends its streams too, at the next look.
                if let token {
                    do {
                        _ = try await core.authenticator.principal(forToken: Substring(token), challenge: .bearer)
                    } catch let error as APIError where error.status == .unauthorized || error.status == .forbidden {
                        try await writer.write(ByteBuffer(string: ": the token no longer works (revoked or expired)\n\n"))
                        try await writer.finish(nil)
                        return
                    } catch is CancellationError {
                        return
                    } catch {
                        // The store unreachable for a moment (a failover): not a revocation; looked at again next time.
                        try await Task.sleep(for: Self.eventPollInterval)
                        continue
                    }
                }
                let events = try await core.store.events(service: service, after: cursor, limit: Self.eventBatch)
                if !events.isEmpty {
                    var text = ""
                    for event in events {
                        text += "id: \(event.id)\ndata: \(String(decoding: event.json.encoded(), as: UTF8.self))\n\n"
                        cursor = event.id
                    }
                    try await writer.write(ByteBuffer(string: text))
                    lastWrite = .now
                    if events.count == Self.eventBatch { continue }
                } else if lastWrite.duration(to: .now) >= .seconds(keepAlive) {
                    try await writer.write(ByteBuffer(string: ": keep-alive\n\n"))
                    lastWrite = .now
                }
                try await Task.sleep(for: Self.eventPollInterval)
            }
            try await writer.write(ByteBuffer(string: ": the controller is shutting down; reconnect with Last-Event-ID\n\n"))
            try await writer.finish(nil)
        }
        return Response(
            status: .ok,
            headers: [
                .contentType: "text/event-stream; charset=utf-8", .cacheControl: "no-store", .xContentTypeOptions: "nosniff",
                Self.accelBufferingHeader: "no",
            ],
            body: body
        )
    }

    /// Whether the client of `channel` closed its end, seen without reading from it (the server reads nothing more of a
    /// connection while it answers a request): the TCP state is no longer `ESTABLISHED` (`CLOSE_WAIT` after the
    /// client's FIN, `CLOSE` after a reset). Linux copies as much of `tcp_info` as asked; its first byte is the state.
    static func peerClosed(_ channel: any Channel) async -> Bool {
        guard channel.isActive else { return true }
        let tcpInfo = ChannelOptions.Types.SocketOption(level: .tcp, name: NIOBSDSocket.Option(rawValue: CInt(TCP_INFO)))
        guard let head = try? await channel.getOption(tcpInfo).get() else { return false }
        let established: CInt = 1
        return head & 0xFF != established
    }

    private static func integer(_ text: String?, name: String, in range: ClosedRange<Int64>) throws -> Int64? {
        guard let text else { return nil }
        guard text.utf8.count <= 19, let value = Int64(text), range.contains(value) else {
            throw APIError.badRequest(
                "invalid_\(name.lowercased().replacingOccurrences(of: "-", with: "_"))",
                "\(name) must be a whole number from \(range.lowerBound) to \(range.upperBound), got \"\(text.prefix(40))\""
            )
        }
        return value
    }
}

/// How many event streams each token holds open.
final class StreamSlots: Sendable {
    private let held = Mutex<[String: Int]>([:])

    /// One stream's slot: given back when released (the stream ended, or its answer was dropped before it began).
    final class Slot: Sendable {
        let slots: StreamSlots
        let holder: String
        init(_ slots: StreamSlots, _ holder: String) {
            self.slots = slots
            self.holder = holder
        }
        deinit { slots.give(back: holder) }
    }

    /// Takes a slot for `holder`, or `nil` when it holds `limit` already.
    func take(for holder: String, limit: Int) -> Slot? {
        let taken = held.withLock { held in
            guard held[holder, default: 0] < limit else { return false }
            held[holder, default: 0] += 1
            return true
        }
        return taken ? Slot(self, holder) : nil
    }

    fileprivate func give(back holder: String) {
        held.withLock { held in
            let left = held[holder, default: 1] - 1
            held[holder] = left > 0 ? left : nil
        }
    }
}
