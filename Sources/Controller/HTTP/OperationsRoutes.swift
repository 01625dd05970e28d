import Foundation
import Hummingbird
import Synchronization

/// `GET /healthz` (liveness) and `GET /metrics` (Prometheus text). Unauthenticated, as scrapers and load balancers
/// expect; neither shows anything about releases beyond counts.
struct OperationsRoutes: Sendable {
    let core: ControllerCore
    var fleetGauges = FleetGauges()

    func register(on router: RouterGroup<FerryRequestContext>) {
        router.get("/healthz") { _, _ in
            JSONResponse.make(.object(["status": .string("ok")]))
        }
        router.get("/metrics") { [fleetGauges] _, _ in
            await fleetGauges.refresh(core)
            return Response(
                status: .ok,
                headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8", .cacheControl: "no-store"],
                body: .init(byteBuffer: ByteBuffer(bytes: core.metrics.registry.emitToBuffer()))
            )
        }
    }
}

/// The fleet gauges of `/metrics` (enrolled and stale agents), computed at scrape time: one count in the database
/// instead of bookkeeping on every report (it used to read and decode every agent: tens of milliseconds a scrape at
/// 10,000 agents). Counted at most once per `interval` however often the unauthenticated route is hit, and waited
/// for at most `patience`: a count that fails or takes longer (the database is away, a failover) keeps the last
/// values and the scrape still answers, with the connection, status and long-poll metrics that matter most then.
final class FleetGauges: Sendable {
    let interval: Duration
    let patience: Duration
    /// When the last count began, and whether a count has set the gauges yet: until then there is nothing to keep,
    /// and the count is waited for (bounded by the statement timeout) rather than leaving them at 0.
    private let state = Mutex<(lastCount: ContinuousClock.Instant?, counted: Bool)>((nil, false))

    init(interval: Duration = .seconds(1), patience: Duration = .seconds(2)) {
        self.interval = interval
        self.patience = patience
    }

    func refresh(_ core: ControllerCore) async {
        let now = ContinuousClock.now
        let (due, hasCounted) = state.withLock { state -> (Bool, Bool) in
            if let last = state.lastCount, now - last < interval { return (false, state.counted) }
            state.lastCount = now
            return (true, state.counted)
        }
        guard due else { return }
        do {
            let totals = try await Unawaited.result(of: "the fleet gauges' count of agents", within: hasCounted ? patience : nil) {
                try await core.store.agentTotals(staleBefore: core.staleBefore(core.now()))
            }
            core.metrics.agents.set(to: Double(totals.enrolled))
            core.metrics.staleAgents.set(to: Double(totals.stale))
            state.withLock { $0.counted = true }
        } catch {
            core.logger.warning("/metrics keeps the last fleet gauges: counting the agents failed", metadata: ["error.message": "\(error)"])
        }
    }
}
