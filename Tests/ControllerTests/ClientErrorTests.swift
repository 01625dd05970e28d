import Shared
import Testing

@testable import Controller

/// How the CLI addresses the controller and reads its failures: a problem with the file being uploaded is not "cannot
/// reach the controller" (no retry can help it), and every agent name makes a path segment that stays one.
@Suite struct ClientErrorTests {
    static let request = HTTPClient.Request(method: .post, url: "https://ci:s3cret@ferry.example/v1/artifacts")

    @Test(arguments: [
        (HTTPClientError.uploadSourceChanged(path: "build/api.tgz", expected: 100, sent: 50), "not sent: build/api.tgz"),
        (HTTPClientError.file(path: "build/api.tgz", operation: "read", errno: 5), "not sent: build/api.tgz"),
    ])
    func aLocalFileFailureIsNamedAsSuch(_ failure: HTTPClientError, _ expected: String) {
        let error = OperatorClient.transportError(failure, request: Self.request)
        #expect("\(error)".hasPrefix("POST https://ferry.example/v1/artifacts: \(expected)"), "\(error)")
        #expect(!"\(error)".contains("cannot reach"), "\(error)")
        #expect(!error.isTransient && !ReleasePublisher.mayBeTransient(error))
    }

    @Test func aRefusedConnectionStillReadsAsTheNetwork() {
        let error = OperatorClient.transportError(
            .connectionFailed(url: "https://ferry.example/v1/artifacts", code: 7, message: "Connection refused"),
            request: Self.request
        )
        #expect("\(error)".contains("cannot reach the controller"), "\(error)")
        #expect(error.isTransient)
    }

    /// Agent names that are dot segments are encoded, so that libcurl and browsers do not resolve them away (names
    /// enrolled before the controller refused them can still be shown and removed).
    @Test func dotSegmentNamesAreEncoded() throws {
        #expect(try AgentsCommand.pathSegment("..") == "%2E%2E")
        #expect(try AgentsCommand.pathSegment(".") == "%2E")
        #expect(try AgentsCommand.pathSegment("web.1") == "web.1")
        #expect(DetailPageRenderer.pathSegment("..") == "%2E%2E")
        #expect(DetailPageRenderer.pathSegment("a/b") == "a%2Fb")
    }
}
