import Shared
import Testing

@testable import Agent

/// The controller's `ETag` is sent back on every poll: one a request cannot carry must be dropped, not kept, or every
/// later poll fails before it leaves the instance and the agent never fetches its desired state again.
@Suite struct ControllerETagTests {
    struct Case: Sendable, CustomStringConvertible {
        var description: String
        var etag: String?
        var kept: Bool
        /// Whether a request carrying it is refused before it is sent (what keeping it did).
        var unsendable = false
    }

    static let cases: [Case] = [
        Case(description: "Ferry's own", etag: #""sha256-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef""#, kept: true),
        Case(description: "a weak validator", etag: #"W/"v7""#, kept: true),
        Case(description: "none", etag: nil, kept: false),
        Case(description: "empty", etag: "", kept: false),
        Case(description: "a bare CR inside", etag: "\"a\rb\"", kept: false, unsendable: true),
        Case(description: "a bare LF inside", etag: "\"a\nb\"", kept: false, unsendable: true),
        Case(description: "a NUL", etag: "\"a\u{0}b\"", kept: false, unsendable: true),
        Case(description: "a DEL", etag: "\"a\u{7F}b\"", kept: false),
        Case(description: "non-ASCII", etag: "\"é\"", kept: false),
        Case(description: "longer than 1 KiB", etag: "\"" + String(repeating: "x", count: 1024) + "\"", kept: false),
    ]

    @Test(arguments: cases)
    func anETagIsKeptOnlyWhenARequestCanCarryIt(_ testCase: Case) throws {
        #expect(AgentControllerClient.usableETag(testCase.etag) == (testCase.kept ? testCase.etag : nil))
        guard testCase.unsendable, let etag = testCase.etag else { return }
        #expect(throws: HTTPClientError.self) {
            try HTTPClient.validate("http://127.0.0.1:1/v1/agents/a/desired-state", headers: ["If-None-Match": etag])
        }
    }
}
