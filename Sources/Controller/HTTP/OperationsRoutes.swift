import Foundation
import Hummingbird

/// `GET /healthz` (liveness) and `GET /metrics` (Prometheus text). Unauthenticated, as scrapers and load balancers
/// expect; neither shows anything about releases beyond counts.
struct OperationsRoutes: Sendable {
    let core: ControllerCore

    func register(on router: RouterGroup<FerryRequestContext>) {
        router.get("/healthz") { _, _ in
            JSONResponse.make(.object(["status": .string("ok")]))
        }
        router.get("/metrics") { _, _ in
            // Fleet gauges are computed at scrape time: one count in the database instead of bookkeeping on every
            // report (it used to read and decode every agent: tens of milliseconds a scrape at 10,000 agents).
            let totals = try await core.store.agentTotals(staleBefore: core.staleBefore(core.now()))
            core.metrics.agents.set(to: Double(totals.enrolled))
            core.metrics.staleAgents.set(to: Double(totals.stale))
            return Response(
                status: .ok,
                headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8", .cacheControl: "no-store"],
                body: .init(byteBuffer: ByteBuffer(bytes: core.metrics.registry.emitToBuffer()))
            )
        }
    }
}
