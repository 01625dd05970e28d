import Foundation
import Hummingbird
import Shared

/// `GET /v1/rollouts` and `GET /v1/events` (viewer, operator), `POST /v1/services/{service}/rollout/{pause|resume|abort}`
/// (operator).
struct RolloutRoutes: Sendable {
    let core: ControllerCore

    /// Most rollouts or events one listing returns.
    static let maximumListing = 1000
    /// Most rollouts of one service a listing gives (`GET /v1/rollouts?service=S&limit=N`).
    static let maximumServiceHistory = 100

    func register(operators: RouterGroup<FerryRequestContext>, readers: RouterGroup<FerryRequestContext>) {
        readers.get("/v1/rollouts") { request, _ in try await rollouts(request) }
        readers.get("/v1/events") { request, _ in try await events(request) }
        for action in RolloutAction.allCases {
            operators.post("/v1/services/:service/rollout/\(action.rawValue)") { request, context in
                try await perform(action, request, context: context)
            }
        }
    }

    /// Without `service`: the latest rollout of every service (at most `limit`, default 1000, by service name). With
    /// it: that service's rollouts, newest first, at most `limit` (default 20, at most `maximumServiceHistory`).
    ///
    /// Each rollout listed costs the standing of every one of its agents (its members are read whole), so a service's
    /// history is bounded lower than the listing of every service's latest: a viewer asking for 1000 rollouts of a
    /// 10,000-agent service made the controller read and judge ten million standings per request.
    private func rollouts(_ request: Request) async throws -> Response {
        let query = request.uri.queryParameters
        let records: [RolloutRecord]
        if let service = query.get("service") {
            try Self.checkServiceName(service)
            let limit = try Self.limit(query.get("limit"), default: 20)
            guard limit <= Self.maximumServiceHistory else {
                throw APIError.badRequest(
                    "invalid_limit",
                    "a service's rollout history lists at most \(Self.maximumServiceHistory) rollouts (each one judges every agent); got \(limit)"
                )
            }
            records = try await core.store.rollouts(service: service, limit: limit)
        } else {
            let limit = try Self.limit(query.get("limit"), default: Self.maximumListing)
            records = Array(try await core.store.currentRollouts(for: nil).prefix(limit))
        }
        let views = try await RolloutView.load(records, from: core.store)
        return JSONResponse.make(.object(["rollouts": .array(views.map(\.json))]))
    }

    /// Newest first, at most `limit` (default 50), of `service` or of every service.
    private func events(_ request: Request) async throws -> Response {
        let query = request.uri.queryParameters
        let limit = try Self.limit(query.get("limit"), default: 50)
        let service = query.get("service")
        if let service { try Self.checkServiceName(service) }
        let events = try await core.store.events(service: service, limit: limit)
        return JSONResponse.make(.object(["events": .array(events.map(\.json))]))
    }

    private func perform(_ action: RolloutAction, _ request: Request, context: FerryRequestContext) async throws -> Response {
        let principal = try context.authenticated()
        let service = context.parameters.get("service") ?? ""
        try Self.checkServiceName(service)
        // `?serial=N`: the rollout the operator meant, not whichever is latest when the request arrives (a publish
        // in between would otherwise take the pause or the abort).
        let serial = try request.uri.queryParameters.get("serial").map(Self.serial)
        let rollout: RolloutRecord
        do {
            rollout = try await core.rollouts.perform(action, service: service, serial: serial, by: principal.name)
        } catch let error as RolloutControlError {
            switch error {
            case .noRollout where serial != nil:
                throw APIError.notFound("unknown_rollout", "service \(service) has no rollout of serial \(serial ?? 0)")
            case .noRollout:
                let known = try await core.store.serviceSummaries().contains { $0.name == service }
                throw known
                    ? APIError.notFound("no_rollout", "service \(service) has no rollout (none of its releases was published with one)")
                    : APIError.notFound("unknown_service", "no service \(service) is known here (no release, no agent)")
            case .refused:
                throw APIError(.conflict, "rollout_state_conflict", "\(error)")
            case .contended:
                throw APIError(.conflict, "rollout_contended", "\(error)")
            }
        }
        guard let view = try await RolloutView.load([rollout], from: core.store).first else {
            throw APIError(.internalServerError, "internal_error", "the rollout could not be shown")
        }
        return JSONResponse.make(view.json)
    }

    /// A serial given in a path or a query: 1 to 2^53, else 400 `invalid_serial`.
    static func serial(_ text: String) throws -> Int64 {
        guard text.utf8.count <= 19, let serial = Int64(text), (1...Release.maximumSerial).contains(serial) else {
            throw APIError.badRequest("invalid_serial", "a serial is a whole number from 1 to \(Release.maximumSerial), got \"\(text.prefix(40))\"")
        }
        return serial
    }

    static func checkServiceName(_ service: String) throws {
        guard Release.isValidServiceName(service) else {
            throw APIError.badRequest("invalid_service", "\"\(service.prefix(80))\" is not a service name (^[a-z0-9][a-z0-9-]{0,62}$)")
        }
    }

    static func limit(_ text: String?, default value: Int) throws -> Int {
        guard let text else { return value }
        guard text.utf8.count <= 6, let limit = Int(text), (1...maximumListing).contains(limit) else {
            throw APIError.badRequest("invalid_limit", "limit must be an integer from 1 to \(maximumListing), got \"\(text.prefix(40))\"")
        }
        return limit
    }
}
