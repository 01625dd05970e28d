import Foundation
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

/// A Hummingbird file server on 127.0.0.1, port 0, standing in for the controller's artifact endpoint and for an
/// object store: serves published byte strings with `Range` (206 / 416) and `HEAD`, records every request, and
/// can misbehave on purpose (ignore ranges, drop the connection partway, redirect).
final class TestFileServer: Sendable {
    /// How one published path answers.
    struct Behaviour: Sendable {
        /// Answer `Range` requests with 206/416; `false` always sends 200 with everything.
        var honourRange = true
        /// Drop the connection after this many body bytes, for the first this-many responses (`dropCount`).
        var dropAfterBytes: Int?
        var dropCount = 1
        /// Answer with a redirect to this path instead of the bytes.
        var redirect: String?
        /// A slow link: send the body `bytes` at a time, one chunk every `every` (until the server shuts down).
        var trickle: (bytes: Int, every: Duration)?
        /// A broken proxy: answer a `Range` request with 206 and everything, its `Content-Range` starting at 0.
        var wrongContentRange = false

        init(
            honourRange: Bool = true,
            dropAfterBytes: Int? = nil,
            dropCount: Int = 1,
            redirect: String? = nil,
            trickle: (bytes: Int, every: Duration)? = nil,
            wrongContentRange: Bool = false
        ) {
            self.wrongContentRange = wrongContentRange
            self.honourRange = honourRange
            self.dropAfterBytes = dropAfterBytes
            self.dropCount = dropCount
            self.redirect = redirect
            self.trickle = trickle
        }
    }

    /// A request as received.
    struct RecordedRequest: Sendable {
        var method: String
        var path: String
        var range: String?
        var authorization: String?
        /// When it arrived.
        var at = ContinuousClock.now
    }

    private struct Published {
        var bytes: [UInt8]
        var behaviour: Behaviour
        var drops = 0
    }

    private struct State {
        var files: [String: Published] = [:]
        var requests: [RecordedRequest] = []
    }

    private let state = Mutex(State())
    private let portValue = Mutex<Int?>(nil)
    /// Set when the server begins to shut down: a trickling body stops, so the graceful shutdown does not wait for it.
    private let closing = Mutex(false)

    /// Runs `body` with a started server, and always shuts it down (gracefully) afterwards.
    @discardableResult
    static func with<R>(_ body: (TestFileServer) async throws -> R) async throws -> R {
        let server = TestFileServer()
        let router = Router()
        router.get("**") { request, _ in server.respond(to: request, head: false) }
        router.head("**") { request, _ in server.respond(to: request, head: true) }
        // Recorded and refused: a stand-in for a controller shows what a command sent it.
        router.post("**") { request, _ in
            server.state.withLock { $0.requests.append(RecordedRequest(method: "POST", path: request.uri.path, range: nil, authorization: nil)) }
            return Response(status: .methodNotAllowed)
        }
        return try await LoopbackServer.with(
            router: router,
            label: "test-file-server",
            started: { port in server.portValue.withLock { $0 = port } },
            closing: { server.closing.withLock { $0 = true } },
            { try await body(server) }
        )
    }

    var port: Int { portValue.withLock { $0 } ?? 0 }

    /// `http://127.0.0.1:<port>`
    var baseURL: String { "http://127.0.0.1:\(port)" }

    /// Serves `bytes` at `path` (which starts with "/").
    func publish(_ bytes: [UInt8], at path: String, _ behaviour: Behaviour = Behaviour()) {
        state.withLock { $0.files[path] = Published(bytes: bytes, behaviour: behaviour) }
    }

    /// Every request so far, oldest first.
    var requests: [RecordedRequest] { state.withLock { $0.requests } }

    private func respond(to request: Request, head: Bool) -> Response {
        let path = request.uri.path
        let range = request.headers[.range]
        let recorded = RecordedRequest(
            method: head ? "HEAD" : "GET",
            path: path,
            range: range,
            authorization: request.headers[.authorization]
        )
        let lookup: (Published, dropAfter: Int?)? = state.withLock { state in
            state.requests.append(recorded)
            guard var file = state.files[path] else { return nil }
            var dropAfter: Int?
            if let limit = file.behaviour.dropAfterBytes, file.drops < file.behaviour.dropCount, !head {
                file.drops += 1
                dropAfter = limit
            }
            state.files[path] = file
            return (file, dropAfter)
        }
        guard let (file, dropAfter) = lookup else { return Response(status: .notFound) }
        if let target = file.behaviour.redirect {
            return Response(status: .temporaryRedirect, headers: [.location: target])
        }
        var status = HTTPResponse.Status.ok
        var body = file.bytes[...]
        var headers: HTTPFields = [.acceptRanges: "bytes"]
        if file.behaviour.wrongContentRange, range != nil {
            status = .partialContent
            headers[.contentRange] = "bytes 0-\(file.bytes.count - 1)/\(file.bytes.count)"
        } else if file.behaviour.honourRange, let range, let start = Self.rangeStart(range) {
            guard start < file.bytes.count else {
                return Response(status: .rangeNotSatisfiable, headers: [.contentRange: "bytes */\(file.bytes.count)"])
            }
            status = .partialContent
            body = file.bytes[start...]
            headers[.contentRange] = "bytes \(start)-\(file.bytes.count - 1)/\(file.bytes.count)"
        }
        headers[.contentLength] = "\(body.count)"
        if head { return Response(status: status, headers: headers, body: ResponseBody()) }
        let payload = Array(body)
        return Response(
            status: status,
            headers: headers,
            body: ResponseBody(contentLength: payload.count) { writer in
                if let dropAfter {
                    try await writer.write(ByteBuffer(bytes: payload.prefix(dropAfter)))
                    throw DroppedOnPurpose()
                }
                if let trickle = file.behaviour.trickle {
                    var offset = 0
                    while offset < payload.count {
                        guard !self.closing.withLock({ $0 }) else { throw DroppedOnPurpose() }
                        let end = min(offset + max(1, trickle.bytes), payload.count)
                        try await writer.write(ByteBuffer(bytes: payload[offset..<end]))
                        offset = end
                        try await Task.sleep(for: trickle.every)
                    }
                    try await writer.finish(nil)
                    return
                }
                var offset = 0
                while offset < payload.count {
                    let end = min(offset + 64 * 1024, payload.count)
                    try await writer.write(ByteBuffer(bytes: payload[offset..<end]))
                    offset = end
                }
                try await writer.finish(nil)
            }
        )
    }

    struct DroppedOnPurpose: Error {}

    private static func rangeStart(_ header: String) -> Int? {
        guard header.hasPrefix("bytes="), let dash = header.firstIndex(of: "-") else { return nil }
        return Int(header[header.index(header.startIndex, offsetBy: 6)..<dash])
    }
}
