import Hummingbird
import Shared

/// `GET /v1/fleet` and the dashboard `GET /` (viewer, operator; HTTP Basic accepted for browsers), both with the
/// fleet query (`?service=&version=&phase=&health=&stale=&q=&offset=&limit=`, see `FleetQuery`).
struct FleetRoutes: Sendable {
    let core: ControllerCore
    let dashboard: DashboardRenderer

    func register(readers: RouterGroup<FerryRequestContext>, dashboardPage: RouterGroup<FerryRequestContext>) {
        readers.get("/v1/fleet") { request, _ in
            JSONResponse.make(try await FleetSnapshot.load(from: core, query: try Self.query(request)).json)
        }
        dashboardPage.get("/") { request, _ in
            let html = dashboard.render(try await FleetSnapshot.load(from: core, query: try Self.query(request)))
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

    /// The fleet query of `request`.
    /// - Throws: `APIError` 400 `invalid_query` naming the parameter.
    static func query(_ request: Request) throws -> FleetQuery {
        guard request.uri.query != nil else { return FleetQuery() }
        do {
            return try FleetQuery(parameters: request.uri.queryParameters.map { (name: String($0.key), value: String($0.value)) })
        } catch {
            throw APIError.badRequest("invalid_query", "\(error)")
        }
    }
}
