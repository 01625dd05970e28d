import Hummingbird
import Shared

/// JSON responses built from `JSONValue` (sorted keys, so equal documents are equal bytes).
enum JSONResponse {
    static func make(_ value: JSONValue, status: HTTPResponse.Status = .ok, headers: HTTPFields = [:]) -> Response {
        var fields = headers
        fields[.contentType] = "application/json; charset=utf-8"
        if fields[.cacheControl] == nil { fields[.cacheControl] = "no-store" }
        // What an agent reported (a failure reason, a log tail) is in these documents as it wrote it: opened in a
        // browser, a document is data, never a page, whatever a browser makes of the bytes (as an error answer is).
        fields[.xContentTypeOptions] = "nosniff"
        if fields[.contentSecurityPolicy] == nil { fields[.contentSecurityPolicy] = APIError.errorContentSecurityPolicy }
        return Response(status: status, headers: fields, body: .init(byteBuffer: ByteBuffer(bytes: value.encoded())))
    }
}
