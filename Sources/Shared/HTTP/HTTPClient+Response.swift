extension HTTPClient {
    /// A complete response from `HTTPClient.send` (nested so it never collides with swift-http-types' `HTTPResponse`).
    package struct Response: Sendable {
        /// The status code of the final response (after redirects, when followed).
        package var status: Int
        /// The headers of the final response; look up case-insensitively (`headers["etag"]`).
        package var headers: Headers
        /// The whole body (at most the request's `maxResponseBytes`).
        package var body: [UInt8]

        package init(status: Int, headers: Headers = [:], body: [UInt8] = []) {
            self.status = status
            self.headers = headers
            self.body = body
        }

        /// Whether the status is 2xx.
        package var isSuccess: Bool { (200...299).contains(status) }
    }

    /// What `HTTPClient.download` tells its handler, on the transfer's thread, in order.
    package enum DownloadEvent {
        /// The response started. Body bytes land in the file from `offset`: the requested resume offset for a
        /// `206`, `0` when the server ignored the `Range` and sent the whole file (the file was truncated, so a
        /// handler that already hashed the old part must start over).
        case began(status: Int, offset: Int64)
        /// These bytes were just written to the file (already written when the handler sees them).
        case chunk(UnsafeRawBufferPointer)
    }

    /// How a download ended.
    package struct DownloadResult: Sendable, Equatable {
        /// The status of the final response (`200`, `206`, or `416` when `alreadyComplete`).
        package var status: Int
        /// Where this transfer's bytes started in the file (the resume offset, or `0`).
        package var startOffset: Int64
        /// Bytes this transfer wrote.
        package var bytesWritten: Int64
        /// The file's size afterwards.
        package var fileSize: Int64
        /// The server answered `416 Range Not Satisfiable` to a resume: the file already holds every byte the server
        /// has. The caller must still verify it.
        package var alreadyComplete: Bool

        package init(status: Int, startOffset: Int64, bytesWritten: Int64, fileSize: Int64, alreadyComplete: Bool) {
            self.status = status
            self.startOffset = startOffset
            self.bytesWritten = bytesWritten
            self.fileSize = fileSize
            self.alreadyComplete = alreadyComplete
        }
    }
}
