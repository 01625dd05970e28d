import Hummingbird
import Shared

/// `GET /v1/fleet` (viewer, operator) and the dashboard `GET /` (the same, with HTTP Basic for browsers).
struct FleetRoutes: Sendable {
    let core: ControllerCore
    let dashboard: DashboardRenderer

    func register(on router: Router<BasicRequestContext>) {
        router.get("/v1/fleet") { request, _ in
            _ = try await core.authenticator.require([.viewer, .operator], for: request)
            return JSONResponse.make(try await FleetSnapshot.load(from: core).json)
        }
        router.get("/") { request, _ in
            _ = try await core.authenticator.require([.viewer, .operator], for: request, challenge: .basic)
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
