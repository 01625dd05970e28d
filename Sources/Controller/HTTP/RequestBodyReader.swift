import Hummingbird

/// Reads small request bodies (JSON documents) with a hard size cap.
enum RequestBodyReader {
    /// The whole body, refusing more than `limit` bytes with a 413 — before reading when `Content-Length` already
    /// says so, otherwise as soon as the stream passes the limit. Its bytes count against `budget` while they arrive, as
    /// `holder`'s: a body that does not fit is refused with a 503 (`BodyBudget.exhausted`).
    static func collect(_ request: Request, limit: Int, what: String, budget: BodyBudget, holder: Principal?) async throws -> [UInt8] {
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
        return bytes
    }
}

extension ControllerCore {
    /// The body of `request` on an authenticated route (`RequestBodyReader.collect` against the shared budget, as the
    /// principal's), then the principal checked again: a body may take hours to arrive (a byte within each idle timeout),
    /// and a token revoked meanwhile, or an agent's token replaced, must not act once it is complete.
    func body(of request: Request, context: FerryRequestContext, limit: Int, what: String) async throws -> [UInt8] {
        let principal = try context.authenticated()
        let bytes = try await RequestBodyReader.collect(request, limit: limit, what: what, budget: bodyBudget, holder: principal)
        try await context.confirm(principal, with: authenticator)
        return bytes
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
