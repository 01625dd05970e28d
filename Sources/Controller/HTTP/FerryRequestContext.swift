import Hummingbird
import NIOCore

/// The request context of every controller route: Hummingbird's core context plus who is asking.
///
/// `principal` is set by `AuthenticationMiddleware` on the route groups that need a token, before any handler runs;
/// handlers read it and never look at tokens themselves.
struct FerryRequestContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    /// The authenticated principal; `nil` on the open routes (`/healthz`, `/metrics`).
    var principal: Principal?
    /// The token `principal` was found for, to look it up again once a body has arrived (`ControllerCore.body`).
    var credential: Substring?
    /// The connection the request came on (for answers that last: an event stream looks whether its client left).
    let channel: any Channel

    init(source: Source) {
        coreContext = .init(source: source)
        principal = nil
        credential = nil
        channel = source.channel
    }

    /// The authenticated principal.
    /// - Throws: a 500 `APIError` when the route was registered without `AuthenticationMiddleware` (a programming
    ///   error: the request is refused rather than served unauthenticated).
    func authenticated() throws -> Principal {
        guard let principal else {
            throw APIError(.internalServerError, "internal_error", "this route was registered without authentication; see the controller's log")
        }
        return principal
    }
}
