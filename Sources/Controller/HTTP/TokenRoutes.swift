import Foundation
import Hummingbird
import Shared

/// `GET /v1/tokens` and `DELETE /v1/tokens/{id}` (operator): the operator, enroll and viewer tokens, and revoking
/// one. Revocation is effective at once on every route.
struct TokenRoutes: Sendable {
    let core: ControllerCore

    func register(operators: RouterGroup<FerryRequestContext>) {
        operators.get("/v1/tokens") { _, _ in
            let tokens = try await core.store.tokens()
            return JSONResponse.make(.object(["tokens": .array(tokens.map(\.json))]))
        }
        operators.delete("/v1/tokens/:id") { _, context in try await revoke(context: context) }
    }

    private func revoke(context: FerryRequestContext) async throws -> Response {
        let principal = try context.authenticated()
        let id = context.parameters.get("id") ?? ""
        guard Token.isWellFormedID(id) else {
            throw APIError.badRequest("invalid_token_id", "a token id is tok_ and 16 lowercase hex characters, got \"\(id.prefix(80))\"")
        }
        guard let token = try await core.store.revokeToken(id: id, at: core.now()) else {
            throw APIError.notFound("unknown_token", "no token \(id) exists here (GET /v1/tokens lists them)")
        }
        core.tokenRevoked()
        core.logger.info(
            "Token revoked",
            metadata: ["ferry.token.id": "\(token.id)", "ferry.token.name": "\(token.name)", "ferry.token": "\(principal.name)"]
        )
        return JSONResponse.make(token.json)
    }
}
