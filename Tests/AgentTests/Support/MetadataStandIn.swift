import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

/// The EC2 instance metadata service (IMDSv2) as the agent uses it, on 127.0.0.1 port 0: `PUT /latest/api/token` with
/// `X-aws-ec2-metadata-token-ttl-seconds` hands out a session token, `GET /latest/meta-data/instance-id` with that
/// token answers the instance id; without the header or the token it answers 400 / 401 as the real service does.
/// Tests never reach the real link-local address. What it answers can be changed mid-test (the image "launched" on
/// another instance), and it can misbehave on purpose.
final class MetadataStandIn: Sendable {
    struct Behaviour: Sendable {
        /// The instance id answered.
        var instanceID = "i-0123456789abcdef0"
        /// Status of the token request (200: the token below).
        var tokenStatus = 200
        /// The token's body; `nil` sends the stand-in's token.
        var tokenBody: String?
        /// Status of the instance-id request when the token is right.
        var instanceIDStatus = 200
        /// The instance-id body; `nil` sends `instanceID`.
        var instanceIDBody: String?
        /// Answer nothing for this long (the client's timeout is shorter).
        var stall: Duration?
        /// The instance identity document and its PKCS #7 signature (base64), as
        /// `/latest/dynamic/instance-identity/document` and `/pkcs7` serve them; `nil` answers 404.
        var identityDocument: String?
        var identitySignature: String?
    }

    struct RecordedRequest: Sendable {
        var method: String
        var path: String
        var ttlHeader: String?
        var token: String?
    }

    static let token = "AQAEAFstandinTokenStandinToken=="

    private let behaviourValue = Mutex(Behaviour())
    private let requestsValue = Mutex<[RecordedRequest]>([])
    private let portValue = Mutex<Int?>(nil)
    private let closing = Mutex(false)

    var behaviour: Behaviour {
        get { behaviourValue.withLock { $0 } }
        set { behaviourValue.withLock { $0 = newValue } }
    }

    var requests: [RecordedRequest] { requestsValue.withLock { $0 } }
    var baseURL: String { "http://127.0.0.1:\(portValue.withLock { $0 } ?? 0)" }

    /// Runs `body` with a started stand-in, and always shuts it down afterwards.
    @discardableResult
    static func with<R>(_ behaviour: Behaviour = Behaviour(), _ body: (MetadataStandIn) async throws -> R) async throws -> R {
        let server = MetadataStandIn()
        server.behaviour = behaviour
        let router = Router()
        router.put("/latest/api/token") { request, _ in try await server.token(request) }
        router.get("/latest/meta-data/instance-id") { request, _ in try await server.instanceID(request) }
        router.get("/latest/dynamic/instance-identity/document") { request, _ in
            try await server.answer(request) { $0.identityDocument }
        }
        router.get("/latest/dynamic/instance-identity/pkcs7") { request, _ in
            try await server.answer(request) { $0.identitySignature }
        }
        return try await LoopbackServer.with(
            router: router,
            label: "metadata-stand-in",
            started: { port in server.portValue.withLock { $0 = port } },
            closing: { server.closing.withLock { $0 = true } },
            { try await body(server) }
        )
    }

    private func record(_ request: Request) -> Behaviour {
        requestsValue.withLock {
            $0.append(
                RecordedRequest(
                    method: request.method.rawValue,
                    path: request.uri.path,
                    ttlHeader: request.headers[HTTPField.Name("X-aws-ec2-metadata-token-ttl-seconds")!],
                    token: request.headers[HTTPField.Name("X-aws-ec2-metadata-token")!]
                )
            )
        }
        return behaviour
    }

    /// Sleeps for `stall`, or until the stand-in shuts down.
    private func stall(_ behaviour: Behaviour) async throws {
        guard let stall = behaviour.stall else { return }
        let end = ContinuousClock.now + stall
        while ContinuousClock.now < end, !closing.withLock({ $0 }) { try await Task.sleep(for: .milliseconds(20)) }
    }

    private func token(_ request: Request) async throws -> Response {
        let behaviour = record(request)
        try await stall(behaviour)
        guard request.headers[HTTPField.Name("X-aws-ec2-metadata-token-ttl-seconds")!] != nil else { return Self.text(.badRequest, "") }
        guard behaviour.tokenStatus == 200 else { return Self.text(.init(code: behaviour.tokenStatus), "") }
        return Self.text(.ok, behaviour.tokenBody ?? Self.token)
    }

    private func instanceID(_ request: Request) async throws -> Response {
        let behaviour = record(request)
        try await stall(behaviour)
        guard request.headers[HTTPField.Name("X-aws-ec2-metadata-token")!] == (behaviour.tokenBody ?? Self.token) else {
            return Self.text(.unauthorized, "")
        }
        guard behaviour.instanceIDStatus == 200 else { return Self.text(.init(code: behaviour.instanceIDStatus), "") }
        return Self.text(.ok, behaviour.instanceIDBody ?? behaviour.instanceID)
    }

    /// What `body` picks from the behaviour, to a request with the session token; 404 when it picks nothing.
    private func answer(_ request: Request, _ body: (Behaviour) -> String?) async throws -> Response {
        let behaviour = record(request)
        try await stall(behaviour)
        guard request.headers[HTTPField.Name("X-aws-ec2-metadata-token")!] == (behaviour.tokenBody ?? Self.token) else {
            return Self.text(.unauthorized, "")
        }
        guard let text = body(behaviour) else { return Self.text(.notFound, "") }
        return Self.text(.ok, text)
    }

    private static func text(_ status: HTTPResponse.Status, _ body: String) -> Response {
        Response(
            status: status,
            headers: [.contentType: "text/plain"],
            body: ResponseBody(byteBuffer: ByteBuffer(string: body))
        )
    }
}
