import Hummingbird

/// Assembles the routes of API v1, the dashboard and the operations endpoints.
enum ControllerRouter {
    static func build(core: ControllerCore) throws -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        // Metrics outermost so they see the status every error was turned into.
        router.add(middleware: RequestMetricsMiddleware(metrics: core.metrics.requests))
        router.add(middleware: JSONErrorMiddleware())
        OperationsRoutes(core: core).register(on: router)
        ArtifactRoutes(core: core).register(on: router)
        ReleaseRoutes(core: core).register(on: router)
        AgentRoutes(core: core).register(on: router)
        RolloutRoutes(core: core).register(on: router)
        FleetRoutes(core: core, dashboard: try DashboardRenderer()).register(on: router)
        return router
    }
}
