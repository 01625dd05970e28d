import Hummingbird

/// Reads small request bodies (JSON documents) with a hard size cap.
enum RequestBodyReader {
    /// The whole body, refusing more than `limit` bytes with a 413 — before reading when `Content-Length` already
    /// says so, otherwise as soon as the stream passes the limit.
    static func collect(_ request: Request, limit: Int, what: String) async throws -> [UInt8] {
        if let declared = request.headers[.contentLength].flatMap({ Int64($0) }), declared > Int64(limit) {
            throw APIError.contentTooLarge(limit: Int64(limit), what: what)
        }
        var bytes: [UInt8] = []
        for try await chunk in request.body {
            guard bytes.count + chunk.readableBytes <= limit else { throw APIError.contentTooLarge(limit: Int64(limit), what: what) }
            bytes.append(contentsOf: chunk.readableBytesView)
        }
        return bytes
    }
}
