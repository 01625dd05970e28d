import Foundation
import HTTPTypes
import Hummingbird
import Shared

/// An expected failure of an API request, answered as `{"error": "<code>", "message": "<sentence>"}`.
///
/// `code` is stable and machine-readable (clients and tests switch on it); `message` is for humans and names what was
/// wrong. Unexpected errors never become an `APIError` directly: `JSONErrorMiddleware` logs them and answers a 500
/// that leaks nothing.
struct APIError: Error, HTTPResponseError, CustomStringConvertible {
    var status: HTTPResponse.Status
    var code: String
    var message: String
    var headers: HTTPFields = [:]

    init(_ status: HTTPResponse.Status, _ code: String, _ message: String, headers: HTTPFields = [:]) {
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
    }

    var description: String { "\(status.code) \(code): \(message)" }

    func response(from request: Request, context: some RequestContext) throws -> Response {
        Self.jsonResponse(status: status, code: code, message: message, headers: headers)
    }

    static func jsonResponse(status: HTTPResponse.Status, code: String, message: String, headers: HTTPFields = [:]) -> Response {
        let body = JSONValue.object(["error": .string(code), "message": .string(message)]).encoded()
        var fields = headers
        fields[.contentType] = "application/json; charset=utf-8"
        fields[.cacheControl] = "no-store"
        // An error quotes what the request said (a name, a query value): opened in a browser, it is data, never a
        // page, whatever a browser makes of the bytes.
        fields[.xContentTypeOptions] = "nosniff"
        fields[.contentSecurityPolicy] = errorContentSecurityPolicy
        return Response(status: status, headers: fields, body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }

    /// The policy of every error answer: nothing may load, run or frame it.
    static let errorContentSecurityPolicy = "default-src 'none'; frame-ancestors 'none'"
}

extension APIError {
    static func unauthorized(_ message: String, challenge: String) -> APIError {
        APIError(.unauthorized, "unauthorized", message, headers: [.wwwAuthenticate: challenge])
    }

    static func forbidden(_ message: String) -> APIError { APIError(.forbidden, "forbidden", message) }

    static func badRequest(_ code: String, _ message: String) -> APIError { APIError(.badRequest, code, message) }

    static func unprocessable(_ code: String, _ message: String) -> APIError { APIError(.unprocessableContent, code, message) }

    static func notFound(_ code: String, _ message: String) -> APIError { APIError(.notFound, code, message) }

    static func contentTooLarge(limit: Int64, what: String) -> APIError {
        APIError(.contentTooLarge, "body_too_large", "\(what) is over the limit of \(limit) bytes")
    }

    /// Maps a request-document error: shape problems are the client's syntax (400), the rest are refused content (422).
    static func document(_ error: DocumentError, what: String) -> APIError {
        switch error {
        case .malformedJSON: .badRequest("malformed_json", "\(what): \(error)")
        case .unknownField: .badRequest("unknown_field", "\(what): \(error)")
        case .missingField: .badRequest("missing_field", "\(what): \(error)")
        case .wrongType: .badRequest("wrong_type", "\(what): \(error)")
        case .tooLarge, .tooMany, .invalidValue, .ownedByFerry, .duplicateAppName:
            .unprocessable("invalid_document", "\(what): \(error)")
        }
    }
}

extension HTTPResponse.Status {
    /// 507 (RFC 4918): the server cannot store what the request carries. swift-http-types has no name for it.
    static let insufficientStorage = HTTPResponse.Status(code: 507, reasonPhrase: "Insufficient Storage")
}
