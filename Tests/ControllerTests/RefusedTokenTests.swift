import Foundation
import Shared
import Testing

@testable import Controller

/// `publish` starts with `HEAD /v1/artifacts/<sha256>`, whose error answer has no body: a refused token read
/// "401 http_401: no details". Against a live controller, each refused token now says what is wrong with it.
@Suite struct RefusedTokenTests {
    enum Holder: String, Sendable {
        case unknown, expired, revoked, viewer, enroll
    }

    struct Case: Sendable, CustomTestStringConvertible {
        let holder: Holder
        let status: Int
        /// Phrases the error must contain.
        let phrases: [String]
        var testDescription: String { "\(holder.rawValue) token" }
    }

    static let refusedByAuthentication = ["401 unauthorized", "refused the token", "--token or FERRY_TOKEN", "expired or been revoked"]
    static let refusedByRole = ["403 forbidden", "role or scope does not allow publishing service api", "operator token"]

    static let cases: [Case] = [
        Case(holder: .unknown, status: 401, phrases: refusedByAuthentication),
        Case(holder: .expired, status: 401, phrases: refusedByAuthentication),
        Case(holder: .revoked, status: 401, phrases: refusedByAuthentication),
        Case(holder: .viewer, status: 403, phrases: refusedByRole),
        Case(holder: .enroll, status: 403, phrases: refusedByRole),
    ]

    /// A token of `holder`'s kind, in the fixture's store where it has one.
    static func token(_ holder: Holder, in fixture: ControllerFixture) async throws -> String {
        let store = fixture.store
        switch holder {
        case .unknown:
            return Token.generate()
        case .expired:
            let token = Token.generate()
            let now = Date()
            try await store.createToken(
                hash: Token.digest(token),
                name: "old",
                role: .operator,
                expiresAt: now.addingTimeInterval(-60),
                at: now.addingTimeInterval(-120)
            )
            return token
        case .revoked:
            let token = Token.generate()
            let record = try await store.createToken(hash: Token.digest(token), name: "gone", role: .operator, at: Date())
            _ = try await store.revokeToken(id: record.id, at: Date())
            return token
        case .viewer:
            return fixture.viewerToken
        case .enroll:
            return fixture.enrollToken
        }
    }

    @Test("publish's first request names why the controller refused the token", arguments: cases)
    func refusedToken(_ testCase: Case) async throws {
        try await ControllerFixture.with { fixture in
            let token = try await Self.token(testCase.holder, in: fixture)
            try await fixture.withLiveServer { base in
                let client = OperatorClient(baseURL: base, token: token)
                let digest = SHA256.hash(Array("artifact".utf8))
                let error = await #expect(throws: ClientError.self) {
                    _ = try await client.hasArtifact(digest, publishing: "api")
                }
                let text = error.map { "\($0)" } ?? ""
                guard case .api(let method, _, let status, _, _)? = error else {
                    Issue.record("not an API error: \(text)")
                    return
                }
                #expect(method == "HEAD")
                #expect(status == testCase.status)
                for phrase in testCase.phrases { #expect(text.contains(phrase), "\(text)") }
                #expect(!text.contains("no details"), "\(text)")
            }
        }
    }
}
