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
            // Fleet gauges are computed at scrape time: one cheap read instead of bookkeeping on every report.
            let now = core.now()
            let agents = try await core.store.agents()
            core.metrics.agents.set(to: Double(agents.count))
            core.metrics.staleAgents.set(to: Double(agents.filter { core.isStale($0, at: now) }.count))
            return Response(
                status: .ok,
                headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8", .cacheControl: "no-store"],
                body: .init(byteBuffer: ByteBuffer(bytes: core.metrics.registry.emitToBuffer()))
            )
        }
    }
}
