import Hummingbird

/// Reads small request bodies (JSON documents) with a hard size cap.
enum RequestBodyReader {
    /// The whole body, refusing more than `limit` bytes with a 413 — before reading when `Content-Length` already
    /// says so, otherwise as soon as the stream passes the limit — given to `use`. Its bytes count against `budget`, as
    /// `holder`'s, while they arrive and until `use` returns: a body that does not fit is refused with a 503
    /// (`BodyBudget.exhausted`).
    static func collect<Value>(
        _ request: Request,
        limit: Int,
        what: String,
        budget: BodyBudget,
        holder: Principal?,
        _ use: ([UInt8]) async throws -> Value
    ) async throws -> Value {
        if let declared = request.headers[.contentLength].flatMap({ Int64($0) }), declared > Int64(limit) {
            throw APIError.contentTooLarge(limit: Int64(limit), what: what)
        }
        var bytes: [UInt8] = []
        var reserved = 0
        let holder = holder?.budgetHolder
        defer { budget.release(reserved, for: holder) }
        for try await chunk in request.body {
            guard bytes.count + chunk.readableBytes <= limit else { throw APIError.contentTooLarge(limit: Int64(limit), what: what) }
            guard budget.reserve(chunk.readableBytes, for: holder) else { throw BodyBudget.exhausted(what: what) }
            reserved += chunk.readableBytes
            bytes.append(contentsOf: chunk.readableBytesView)
        }
        return try await use(bytes)
    }
}

extension ControllerCore {
    /// The body of `request` on an authenticated route (`RequestBodyReader.collect` against the shared budget, as the
    /// principal's), then the principal checked again: a body may take hours to arrive (a byte within each idle timeout),
    /// and a token revoked meanwhile, or an agent's token replaced, must not act once it is complete. Its bytes are
    /// given back to the budget when this returns: for a route that is done with them by then, or nearly.
    func body(of request: Request, context: FerryRequestContext, limit: Int, what: String) async throws -> [UInt8] {
        try await withBody(of: request, context: context, limit: limit, what: what) { $0 }
    }

    /// `body(of:context:limit:what:)` given to `use`, its bytes counted as the principal's until `use` returns: for a
    /// route that holds what it read while it waits (a status report waits in `StatusReportQueue` for its batch to be
    /// committed). Given back as soon as the body was read, a token could keep thousands of reports' memory queued
    /// with none of it counted.
    func withBody<Value>(
        of request: Request,
        context: FerryRequestContext,
        limit: Int,
        what: String,
        _ use: ([UInt8]) async throws -> Value
    ) async throws -> Value {
        let principal = try context.authenticated()
        return try await RequestBodyReader.collect(request, limit: limit, what: what, budget: bodyBudget, holder: principal) { bytes in
            try await context.confirm(principal, with: authenticator)
            return try await use(bytes)
        }
    }
}

extension FerryRequestContext {
    /// Checks that the request's token still stands for `principal` (`Authenticator.confirm`).
    func confirm(_ principal: Principal, with authenticator: Authenticator) async throws {
        guard let credential else {
            throw APIError(.internalServerError, "internal_error", "this route was registered without authentication; see the controller's log")
        }
        try await authenticator.confirm(principal, token: credential, challenge: .bearer)
    }
}
