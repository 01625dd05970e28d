import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Shared
import Testing

@testable import Controller

/// What `publish` makes of the latest serial a controller lists, from a live stand-in on 127.0.0.1 that answers
/// `GET /v1/services/api/releases` with each body: a broken or hostile controller's numbers get a clear error, never a
/// trap (`Int64.max + 1` crashed the CLI, after the artifact upload).
@Suite struct HostileControllerAnswerTests {
    struct Case: Sendable, CustomTestStringConvertible {
        let body: String
        /// The next serial, or the error text expected.
        let expected: Result
        enum Result: Sendable {
            case serial(Int64)
            case error(String)
        }
        var testDescription: String { body }
    }

    static let cases: [Case] = [
        Case(body: #"{"releases":[]}"#, expected: .serial(1)),
        Case(body: #"{"releases":[{"serial":41}]}"#, expected: .serial(42)),
        Case(body: #"{"releases":[{"serial":9007199254740991}]}"#, expected: .serial(9_007_199_254_740_992)),
        Case(body: #"{"releases":[{"serial":9223372036854775807}]}"#, expected: .error("latest serial 9223372036854775807 is outside")),
        Case(body: #"{"releases":[{"serial":9007199254740992}]}"#, expected: .error("is outside")),
        Case(body: #"{"releases":[{"serial":0}]}"#, expected: .error("latest serial 0 is outside")),
        Case(body: #"{"releases":[{"serial":-9223372036854775808}]}"#, expected: .error("is outside")),
        Case(body: #"{"releases":[{"serial":"7"}]}"#, expected: .error("a release without a serial")),
        Case(body: #"{"releases":{}}"#, expected: .error("no releases array")),
    ]

    @Test(arguments: cases)
    func theNextSerial(_ testCase: Case) async throws {
        let router = Router()
        router.get("/v1/services/:service/releases") { _, _ in
            Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: testCase.body)))
        }
        let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)))
        try await app.test(.live) { client in
            let port = try #require(client.port)
            let publisher = ReleasePublisher(client: OperatorClient(baseURL: "http://127.0.0.1:\(port)", token: Token.generate()))
            switch testCase.expected {
            case .serial(let serial):
                #expect(try await publisher.nextSerial(of: "api") == serial)
            case .error(let text):
                await #expect {
                    _ = try await publisher.nextSerial(of: "api")
                } throws: { error in
                    "\(error)".contains(text)
                }
            }
        }
    }
}
