import Hummingbird
import Shared

/// `GET /v1/fleet` and the dashboard `GET /` (viewer, operator; HTTP Basic accepted for browsers).
struct FleetRoutes: Sendable {
    let core: ControllerCore
    let dashboard: DashboardRenderer

    func register(readers: RouterGroup<FerryRequestContext>, dashboardPage: RouterGroup<FerryRequestContext>) {
        readers.get("/v1/fleet") { _, _ in
            JSONResponse.make(try await FleetSnapshot.load(from: core).json)
        }
        dashboardPage.get("/") { _, _ in
            let html = dashboard.render(try await FleetSnapshot.load(from: core))
            return Response(
                status: .ok,
                headers: [
                    .contentType: "text/html; charset=utf-8", .cacheControl: "no-store",
                    .contentSecurityPolicy: DashboardRenderer.contentSecurityPolicy,
                    .xContentTypeOptions: "nosniff",
                ],
                body: .init(byteBuffer: ByteBuffer(string: html))
            )
        }
    }
}
