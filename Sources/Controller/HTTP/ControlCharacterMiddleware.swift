import Hummingbird

/// Refuses a URL that carries a control character, percent-encoded (`%00`, `%0A`, ...): no name, filter or id the API
/// takes has one, and a NUL would reach the database as a parameter PostgreSQL refuses (a 500 and an error log line for
/// any viewer's request). Routers answer 400 `invalid_url`.
struct ControlCharacterMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if let code = Self.encodedControlCharacter(in: request.uri.description) {
            throw APIError.badRequest(
                "invalid_url",
                "the URL carries a control character (%\(code)); names, filters and ids never hold one"
            )
        }
        return try await next(request, context)
    }

    /// The first percent-encoded control character (U+0000 to U+001F, U+007F) in `target`, as its two hex digits.
    static func encodedControlCharacter(in target: String) -> String? {
        let bytes = Array(target.utf8)
        var index = 0
        while index + 2 < bytes.count {
            if bytes[index] == UInt8(ascii: "%"), let high = hexValue(bytes[index + 1]), let low = hexValue(bytes[index + 2]) {
                let value = high << 4 | low
                if value < 0x20 || value == 0x7f { return String(decoding: bytes[(index + 1)...(index + 2)], as: UTF8.self) }
                index += 3
            } else {
                index += 1
            }
        }
        return nil
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
