import Foundation
import Testing

@testable import Controller

@Suite struct AuthenticatorTests {
    @Test func tokensAreWellFormedAndUnique() {
        let tokens = (0..<100).map { _ in Token.generate() }
        #expect(Set(tokens).count == 100)
        #expect(tokens.allSatisfy { Token.isWellFormed($0) && $0.count == 52 })
        #expect(!Token.isWellFormed("fyt_XYZ"))
        #expect(Token.digest("fyt_a").count == 64)
        #expect(Token.constantTimeEquals("abc", "abc"))
        #expect(!Token.constantTimeEquals("abc", "abd"))
        #expect(!Token.constantTimeEquals("abc", "abcd"))
    }

    @Test func authorizationHeaders() {
        let basic = "Basic " + Data("user:fyt_secret:with:colons".utf8).base64EncodedString()
        #expect(Authenticator.token(fromAuthorization: basic) == "fyt_secret:with:colons")
        #expect(Authenticator.token(fromAuthorization: "Bearer fyt_x") == "fyt_x")
        #expect(Authenticator.token(fromAuthorization: "bearer   fyt_x") == "fyt_x")
        #expect(Authenticator.token(fromAuthorization: "Basic !!!") == nil)
        #expect(Authenticator.token(fromAuthorization: "Digest x") == nil)
        #expect(Authenticator.token(fromAuthorization: "Bearer") == nil)
    }
}
