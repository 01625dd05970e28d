import Shared
import Testing

@testable import Controller

/// How a failed request reads to the operator: a problem with the file being uploaded is not "cannot reach the
/// controller", and no retry can help it.
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
}
