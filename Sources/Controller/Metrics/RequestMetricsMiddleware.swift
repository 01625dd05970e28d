import Hummingbird

/// Records every request in `RequestMetrics`. Sits outside `JSONErrorMiddleware`, so errors arrive as responses.
struct RequestMetricsMiddleware<Context: RequestContext>: RouterMiddleware {
    let metrics: RequestMetrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = ContinuousClock.now
        do {
            let response = try await next(request, context)
            metrics.record(
                route: context.endpointPath ?? "unmatched",
                method: request.method,
                status: response.status.code,
                duration: ContinuousClock.now - start
            )
            return response
        } catch {
            let status = (error as? any HTTPResponseError)?.status.code ?? 500
            metrics.record(route: context.endpointPath ?? "unmatched", method: request.method, status: status, duration: ContinuousClock.now - start)
            throw error
        }
    }
}
