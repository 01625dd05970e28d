import Hummingbird

/// Assembles the routes of API v1, the dashboard and the operations endpoints.
///
/// Authorization lives here, in one place: each route group states its `AccessPolicy`, and its
/// `AuthenticationMiddleware` puts the principal in the request context before any handler runs.
enum ControllerRouter {
    static func build(core: ControllerCore) throws -> Router<FerryRequestContext> {
        let router = Router(context: FerryRequestContext.self)
        // Metrics outermost so they see the status every error was turned into.
        router.add(middleware: RequestMetricsMiddleware(metrics: core.metrics.requests))
        router.add(middleware: JSONErrorMiddleware())
        // Before authentication: a forged cross-site request is refused whatever credentials the browser attached.
        router.add(middleware: SameOriginMiddleware())
        router.add(middleware: ControlCharacterMiddleware())
        OperationsRoutes(core: core).register(on: router.group())
        let routes = Routes(core: core, router: router)
        ArtifactRoutes(core: core).register(uploads: routes.group(.operators), downloads: routes.group(.artifactReaders))
        ReleaseRoutes(core: core).register(operators: routes.group(.operators), readers: routes.group(.fleetReaders))
        AgentRoutes(core: core).register(
            enrollment: routes.group(.enrollment),
            agents: routes.group(.agents),
            operators: routes.group(.operators)
        )
        RolloutRoutes(core: core).register(operators: routes.group(.operators), readers: routes.group(.fleetReaders))
        TokenRoutes(core: core).register(operators: routes.group(.operators))
        RootRoutes(core: core).register(operators: routes.group(.operators), readers: routes.group(.rootReaders))
        FleetRoutes(core: core, dashboard: try DashboardRenderer()).register(
            readers: routes.group(.fleetReaders),
            dashboardPage: routes.group(.dashboard)
        )
        InsightRoutes(core: core, pages: try DetailPageRenderer()).register(
            readers: routes.group(.fleetReaders),
            dashboardPage: routes.group(.dashboard)
        )
        return router
    }

    /// Makes route groups behind an access policy.
    private struct Routes {
        let core: ControllerCore
        let router: Router<FerryRequestContext>

        func group(_ policy: AccessPolicy) -> RouterGroup<FerryRequestContext> {
            router.group().add(middleware: AuthenticationMiddleware(authenticator: core.authenticator, policy: policy))
        }
    }
}
