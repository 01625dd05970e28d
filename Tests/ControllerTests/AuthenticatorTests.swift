import Foundation
import SQLKit
import Shared
import TestSupport
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

/// The principal cache against a real SQLite file: never a revoked, removed or expired token, and last use written at
/// most once per interval.
@Suite struct AuthenticatorCacheTests {
    struct World {
        let store: SQLiteControllerStore
        let revocations: TokenRevocations
        let clock: TestClock
        let authenticator: Authenticator
    }

    static func with(_ body: (World) async throws -> Void) async throws {
        try await TestPaths.withTemporaryDirectory("ferry-auth") { directory in
            let store = try await StoreTests.open(directory)
            let revocations = TokenRevocations(dataDirectory: directory.path)
            try revocations.prepare()
            let clock = TestClock()
            let world = World(
                store: store,
                revocations: revocations,
                clock: clock,
                authenticator: Authenticator(store: store, revocations: revocations, now: { clock.now })
            )
            do {
                try await body(world)
            } catch {
                try? await store.close()
                throw error
            }
            try await store.close()
        }
    }

    static func code(_ body: () async throws -> Principal) async -> String? {
        do {
            _ = try await body()
            return nil
        } catch let error as APIError {
            return error.code
        } catch {
            return "\(error)"
        }
    }

    @Test func aCachedTokenIsDroppedOnRevocationByAnotherProcessAndOnExpiry() async throws {
        try await Self.with { world in
            let token = Token.generate()
            let record = try await world.store.createToken(
                hash: Token.digest(token),
                name: "dash",
                role: .viewer,
                expiresAt: world.clock.now.addingTimeInterval(60),
                at: world.clock.now
            )
            let principal = try await world.authenticator.principal(forToken: token[...], challenge: .bearer)
            #expect(principal.tokenID == record.id && principal.role == .viewer)
            // Another process deletes the row behind the server's back without signalling: the cached principal is
            // still served (this is the cache the poll path relies on) ...
            let other = try await SQLiteControllerStore.open(.init(path: world.store.path), logger: ControllerFixture.logger)
            _ = try await other.transaction { db in try await db.raw("DELETE FROM tokens WHERE id = \(bind: record.id)").run() }
            #expect(try await world.authenticator.principal(forToken: token[...], challenge: .bearer) == principal)
            // ... but never past its expiry, checked at every use ...
            world.clock.advance(by: 61)
            #expect(await Self.code { try await world.authenticator.principal(forToken: token[...], challenge: .bearer) } == "token_expired")
            world.clock.advance(by: -61)
            // ... and never once a revocation was signalled, as `token revoke` does after its commit.
            try world.revocations.bump()
            #expect(await Self.code { try await world.authenticator.principal(forToken: token[...], challenge: .bearer) } == "unauthorized")
            try await other.close()
        }
    }

    /// While other controllers' revocations cannot be heard (a shared database whose change listener is down), no
    /// token is served from the cache: a revocation committed through another controller, which arrives only as a
    /// notification, is seen at the next request. The cache was used as if the listener heard everything, and a
    /// controller whose listener could not reconnect kept accepting revoked tokens for as long as that lasted.
    @Test func nothingIsServedFromTheCacheWhileOthersAreUnheard() async throws {
        try await Self.with { world in
            let token = Token.generate()
            let record = try await world.store.createToken(hash: Token.digest(token), name: "ci", role: .operator, at: world.clock.now)
            _ = try await world.authenticator.principal(forToken: token[...], challenge: .bearer)
            #expect(world.authenticator.cachedPrincipal(forToken: token[...]) != nil, "cached while heard")
            world.revocations.othersUnheard(true)
            // Used while unheard: read from the database, and not kept; the signal file is not made again for it either
            // (every request created it, with two more system calls, while there was no stamp to take).
            unlink(world.revocations.path)
            _ = try await world.authenticator.principal(forToken: token[...], challenge: .bearer)
            #expect(world.authenticator.cachedPrincipal(forToken: token[...]) == nil, "the poll path's cache is off")
            #expect(!FileManager.default.fileExists(atPath: world.revocations.path))
            // Another controller revokes it: the row changes, no notification arrives, no file here changes.
            _ = try await world.store.revokeToken(id: record.id, at: world.clock.now)
            #expect(await Self.code { try await world.authenticator.principal(forToken: token[...], challenge: .bearer) } == "token_revoked")
            // Heard again (the listener's resync): the cache is back for tokens that are still good.
            world.revocations.othersUnheard(false)
            let other = Token.generate()
            _ = try await world.store.createToken(hash: Token.digest(other), name: "ops", role: .operator, at: world.clock.now)
            _ = try await world.authenticator.principal(forToken: other[...], challenge: .bearer)
            #expect(world.authenticator.cachedPrincipal(forToken: other[...]) != nil)
            #expect(FileManager.default.fileExists(atPath: world.revocations.path), "made again once heard")
        }
    }

    @Test func aRevokedTokenIsRefusedAndNotCached() async throws {
        try await Self.with { world in
            let token = Token.generate()
            let record = try await world.store.createToken(hash: Token.digest(token), name: "ci", role: .operator, at: world.clock.now)
            _ = try await world.authenticator.principal(forToken: token[...], challenge: .bearer)
            _ = try await world.store.revokeToken(id: record.id, at: world.clock.now)
            try world.revocations.bump()
            for _ in 0..<2 {
                #expect(await Self.code { try await world.authenticator.principal(forToken: token[...], challenge: .bearer) } == "token_revoked")
            }
        }
    }

    @Test func lastUseIsWrittenAtMostOncePerInterval() async throws {
        try await Self.with { world in
            let token = Token.generate()
            let record = try await world.store.createToken(hash: Token.digest(token), name: "ci", role: .operator, at: world.clock.now)
            func lastUsed() async throws -> Date? { try await world.store.tokens().first { $0.id == record.id }?.lastUsedAt }
            let first = world.clock.now
            for _ in 0..<50 { _ = try await world.authenticator.principal(forToken: token[...], challenge: .bearer) }
            // Nothing is written on the request path.
            #expect(try await lastUsed() == nil)
            try await world.authenticator.flushUsage()
            #expect(try await lastUsed().map(StoredTime.milliseconds) == StoredTime.milliseconds(first))
            world.clock.advance(by: 30)
            _ = try await world.authenticator.principal(forToken: token[...], challenge: .bearer)
            try await world.authenticator.flushUsage()
            #expect(try await lastUsed().map(StoredTime.milliseconds) == StoredTime.milliseconds(first))
            world.clock.advance(by: 31)
            _ = try await world.authenticator.principal(forToken: token[...], challenge: .bearer)
            try await world.authenticator.flushUsage()
            #expect(try await lastUsed().map(StoredTime.milliseconds) == StoredTime.milliseconds(world.clock.now))
        }
    }

    /// Each token's note is kept for the interval only: a pipeline that makes a token per run does not grow the
    /// controller's memory by one note per token it ever used.
    @Test func notesOfLastUseAreForgottenAfterTheInterval() async throws {
        try await Self.with { world in
            var tokens: [String] = []
            for index in 0..<20 {
                let token = Token.generate()
                _ = try await world.store.createToken(hash: Token.digest(token), name: "ci-\(index)", role: .operator, at: world.clock.now)
                _ = try await world.authenticator.principal(forToken: token[...], challenge: .bearer)
                tokens.append(token)
            }
            #expect(world.authenticator.notedTokens == 20)
            try await world.authenticator.flushUsage()
            #expect(world.authenticator.notedTokens == 20, "still within the interval: kept, so uses are not written again")
            world.clock.advance(by: 30)
            _ = try await world.authenticator.principal(forToken: tokens[0][...], challenge: .bearer)
            world.clock.advance(by: 31)
            try await world.authenticator.flushUsage()
            #expect(world.authenticator.notedTokens == 0)
            // A use after the prune is noted and written as before.
            _ = try await world.authenticator.principal(forToken: tokens[1][...], challenge: .bearer)
            #expect(world.authenticator.notedTokens == 1)
            try await world.authenticator.flushUsage()
            let written = try await world.store.tokens().first { $0.name == "ci-1" }?.lastUsedAt
            #expect(written.map(StoredTime.milliseconds) == StoredTime.milliseconds(world.clock.now))
        }
    }
}
