import Hummingbird
import Logging

/// Turns every error into the API's JSON error body.
///
/// `APIError`s carry their own status and code. Hummingbird's `HTTPError`s (no route, a request it could not parse)
/// get a code derived from their status. Anything else is a bug or an outage: it is logged with the request's path
/// and answered 500 with a message that leaks nothing.
struct JSONErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as APIError {
            if error.status.code >= 500 {
                context.logger.error("Request failed", metadata: ["http.path": "\(request.uri.path)", "error.message": "\(error)"])
            }
            return APIError.jsonResponse(status: error.status, code: error.code, message: error.message, headers: error.headers)
        } catch let error as StoreError where error.isOutage {
            // An outage of the shared database (a failover takes a minute or two): clients retry.
            let (location, waited) = error.outage ?? ("", .zero)
            context.logger.warning(
                "Database unavailable",
                metadata: ["http.path": "\(request.uri.path)", "store.location": "\(location)", "store.waited": "\(waited)"]
            )
            return APIError.jsonResponse(
                status: .serviceUnavailable,
                code: "database_unavailable",
                message: "the controller cannot reach its database right now; retry shortly",
                headers: [.retryAfter: "5"]
            )
        } catch let error as HTTPError {
            let (code, message) = Self.describe(error)
            return APIError.jsonResponse(status: error.status, code: code, message: message, headers: error.headers)
        } catch {
            context.logger.error("Request failed unexpectedly", metadata: ["http.path": "\(request.uri.path)", "error.message": "\(error)"])
            return APIError.jsonResponse(
                status: .internalServerError,
                code: "internal_error",
                message: "the controller failed to answer this request; see its log"
            )
        }
    }

    private static func describe(_ error: HTTPError) -> (String, String) {
        switch error.status.code {
        case 404: ("not_found", "no such route: check the method and path")
        case 405: ("method_not_allowed", "this route does not accept that method")
        case 413: ("body_too_large", error.body ?? "the request body is too large")
        case 400: ("bad_request", error.body ?? "the request could not be parsed")
        default: ("http_\(error.status.code)", error.body ?? error.status.reasonPhrase)
        }
    }
}
