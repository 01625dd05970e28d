import Foundation
import Shared
import TestSupport
import Testing

/// TUF's rotation rules for Ferry's trust root, walked as one table: each case pins a root, offers envelopes in order,
/// and names the version that ends up accepted or the refusal of the last step.
@Suite("Trust root rotation")
struct TrustedRootTests {
    /// The keys of a three-root history: root 1's root keys A, B (threshold 2) and release key R1; root 2 moves the
    /// root role to C, D (threshold 2) and the release role to R2; root 3 moves the root role to E, F.
    struct Keys: Sendable {
        let a, b, c, d, e, f, r1, r2: SigningKey

        init() throws {
            a = try .generate()
            b = try .generate()
            c = try .generate()
            d = try .generate()
            e = try .generate()
            f = try .generate()
            r1 = try .generate()
            r2 = try .generate()
        }

        func root1(expiresAt: Date = Date().addingTimeInterval(365 * 86_400), signers: [SigningKey]? = nil) throws -> Envelope {
            try TestRoots.root(
                version: 1,
                expiresAt: expiresAt,
                rootKeys: [a, b],
                rootThreshold: 2,
                releaseKeys: [r1],
                signers: signers ?? [a, b]
            )
        }

        func root2(expiresAt: Date = Date().addingTimeInterval(365 * 86_400), signers: [SigningKey]? = nil) throws -> Envelope {
            try TestRoots.root(
                version: 2,
                expiresAt: expiresAt,
                rootKeys: [c, d],
                rootThreshold: 2,
                releaseKeys: [r2],
                signers: signers ?? [a, b, c, d]
            )
        }

        func root3(signers: [SigningKey]? = nil) throws -> Envelope {
            try TestRoots.root(version: 3, rootKeys: [e, f], rootThreshold: 2, releaseKeys: [r2], signers: signers ?? [c, d, e, f])
        }
    }

    enum Expected: Sendable, CustomStringConvertible {
        case accepted(version: Int64)
        /// Refused with this `RootError.code`.
        case refused(String)

        var description: String {
            switch self {
            case .accepted(let version): "accepted up to version \(version)"
            case .refused(let code): "refused (\(code))"
            }
        }
    }

    struct Case: Sendable, CustomStringConvertible {
        let name: String
        /// The pinned root (built from the keys).
        let pin: @Sendable (Keys) throws -> Envelope
        /// The envelopes offered after the pin, in order.
        let steps: @Sendable (Keys) throws -> [Envelope]
        let expected: Expected
        var description: String { name }
    }

    static let cases: [Case] = [
        Case(name: "1 → 2 → 3 accepted", pin: { try $0.root1() }, steps: { [try $0.root2(), try $0.root3()] }, expected: .accepted(version: 3)),
        Case(name: "1 → 3, skipping 2, refused", pin: { try $0.root1() }, steps: { [try $0.root3()] }, expected: .refused("root_skips_versions")),
        Case(
            name: "2 signed only by its new root keys refused",
            pin: { try $0.root1() },
            steps: { [try $0.root2(signers: [$0.c, $0.d])] },
            expected: .refused("root_not_signed_by_previous")
        ),
        Case(
            name: "2 signed only by root 1's keys refused",
            pin: { try $0.root1() },
            steps: { [try $0.root2(signers: [$0.a, $0.b])] },
            expected: .refused("root_not_signed_by_itself")
        ),
        Case(
            name: "2 signed by one old key only (threshold 2) refused",
            pin: { try $0.root1() },
            steps: { [try $0.root2(signers: [$0.a, $0.c, $0.d])] },
            expected: .refused("root_not_signed_by_previous")
        ),
        Case(
            name: "the same old key twice counts once",
            pin: { try $0.root1() },
            steps: { [try $0.root2(signers: [$0.a, $0.a, $0.c, $0.d])] },
            expected: .refused("root_not_signed_by_previous")
        ),
        Case(
            name: "the same new key twice counts once",
            pin: { try $0.root1() },
            steps: { [try $0.root2(signers: [$0.a, $0.b, $0.c, $0.c])] },
            expected: .refused("root_not_signed_by_itself")
        ),
        Case(
            name: "a release key cannot sign the next root",
            pin: { try $0.root1() },
            steps: { [try $0.root2(signers: [$0.a, $0.r1, $0.c, $0.d])] },
            expected: .refused("root_not_signed_by_previous")
        ),
        Case(
            name: "rollback to an older root refused",
            pin: { try $0.root1() },
            steps: { [try $0.root2(), try $0.root1()] },
            expected: .refused("root_not_newer")
        ),
        Case(
            name: "the same version again refused",
            pin: { try $0.root1() },
            steps: { [try $0.root2(), try $0.root2()] },
            expected: .refused("root_not_newer")
        ),
        Case(
            name: "an expired root 2 is still a step to a valid root 3",
            pin: { try $0.root1() },
            steps: { [try $0.root2(expiresAt: Date().addingTimeInterval(-86_400)), try $0.root3()] },
            expected: .accepted(version: 3)
        ),
        Case(
            name: "a tampered root 2 refused",
            pin: { try $0.root1() },
            steps: { keys in
                var envelope = try keys.root2()
                let text = String(decoding: envelope.payload, as: UTF8.self).replacingOccurrences(of: "\"threshold\":2", with: "\"threshold\":1")
                envelope.payload = Array(text.utf8)
                return [envelope]
            },
            expected: .refused("root_not_signed_by_previous")
        ),
        Case(
            name: "a release envelope offered as a root refused",
            pin: { try $0.root1() },
            steps: { [try TestRoots.release(signers: [$0.a, $0.b])] },
            expected: .refused("wrong_payload_type")
        ),
        Case(
            name: "root payload type over a document that is not a root refused",
            pin: { try $0.root1() },
            steps: { keys in
                let release = try TestRoots.release(signers: [keys.a])
                return [try Envelope.sign(payload: release.payload, payloadType: Root.payloadType, with: [keys.a, keys.b, keys.c, keys.d])]
            },
            expected: .refused("invalid_root")
        ),
        Case(
            name: "a pinned root not signed by its own threshold refused",
            pin: { try $0.root1(signers: [$0.a]) },
            steps: { _ in [] },
            expected: .refused("root_not_signed_by_itself")
        ),
    ]

    @Test("rotation rules", arguments: cases)
    func rotation(_ testCase: Case) throws {
        let keys = try Keys()
        var outcome: Expected
        do {
            var trusted = try TrustedRoot.pinning(try testCase.pin(keys))
            for step in try testCase.steps(keys) { trusted = try trusted.accepting(step) }
            outcome = .accepted(version: trusted.version)
        } catch let error as RootError {
            outcome = .refused(error.code)
        }
        #expect("\(outcome)" == "\(testCase.expected)", "\(testCase.name)")
    }

    @Test("a refused step names the versions and the keys that were missing")
    func refusalMessages() throws {
        let keys = try Keys()
        let root1 = try TrustedRoot.pinning(try keys.root1())
        #expect(throws: RootError.self) { try root1.accepting(try keys.root3()) }
        do {
            _ = try root1.accepting(try keys.root3())
        } catch {
            #expect("\(error)".contains("the next root must be version 2"), "\(error)")
        }
        do {
            _ = try root1.accepting(try keys.root2(signers: [keys.c, keys.d]))
            Issue.record("accepted a root signed only by its own keys")
        } catch {
            #expect("\(error)".contains("not signed by enough root keys of version 1"), "\(error)")
            #expect("\(error)".contains("0 distinct trusted key(s) signed, 2 required"), "\(error)")
        }
    }

    @Test("releases are checked against the newest accepted root's release role: a removed key stops counting")
    func revocation() throws {
        let keys = try Keys()
        let root1 = try TrustedRoot.pinning(try keys.root1())
        let root2 = try root1.accepting(try keys.root2())
        let oldKeyRelease = try TestRoots.release(serial: 5, signers: [keys.r1])
        let newKeyRelease = try TestRoots.release(serial: 6, signers: [keys.r2])
        #expect(throws: Never.self) { try root1.verifyRelease(oldKeyRelease) }
        #expect(throws: TrustError.self) { try root1.verifyRelease(newKeyRelease) }
        #expect(throws: TrustError.self) { try root2.verifyRelease(oldKeyRelease) }
        #expect(try root2.verifyRelease(newKeyRelease).keyIDs == [keys.r2.publicKey.keyID])
        // Root keys are not release keys.
        #expect(throws: TrustError.self) { try root2.verifyRelease(try TestRoots.release(signers: [keys.c, keys.d])) }
    }

    @Test("a release threshold of 2 counts distinct keys: the same key twice is one signature")
    func releaseThresholdCountsDistinctKeys() throws {
        let keys = try Keys()
        let envelope = try TestRoots.root(
            version: 1,
            rootKeys: [keys.a],
            releaseKeys: [keys.r1, keys.r2],
            releaseThreshold: 2,
            signers: [keys.a]
        )
        let root = try TrustedRoot.pinning(envelope)
        #expect(throws: TrustError.self) { try root.verifyRelease(try TestRoots.release(signers: [keys.r1, keys.r1])) }
        #expect(try root.verifyRelease(try TestRoots.release(signers: [keys.r1, keys.r2])).keyIDs.count == 2)
    }

    @Test("expiry: an expired root is recognised with the clock-skew grace")
    func expiry() throws {
        let keys = try Keys()
        let expiresAt = Date().addingTimeInterval(-60)
        let root = try TrustedRoot.pinning(try keys.root1(expiresAt: expiresAt))
        #expect(root.root.isExpired(at: Date()))
        #expect(!root.root.isExpired(at: Date(), grace: .seconds(300)))
        #expect(!root.root.isExpired(at: expiresAt.addingTimeInterval(-1)))
    }

    @Test("a root built from trusted-key flags is version 1 and rotates like any root 1")
    func fromTrustedKeys() throws {
        let keys = try Keys()
        let compat = try TrustedRoot.fromTrustedKeys([keys.a.publicKey, keys.b.publicKey, keys.a.publicKey], threshold: 2)
        #expect(compat.version == 1)
        #expect(compat.isFromTrustedKeys)
        #expect(compat.root.rootRole.keyIDs == [keys.a.publicKey.keyID, keys.b.publicKey.keyID].sorted())
        #expect(compat.root.releaseRole.threshold == 2)
        #expect(!compat.root.isExpired(at: Date().addingTimeInterval(100 * 365 * 86_400)))
        // Root 2 signed by both flag keys and its own root keys is followed; by one flag key, refused.
        #expect(try compat.accepting(try keys.root2()).version == 2)
        #expect(throws: RootError.self) { try compat.accepting(try keys.root2(signers: [keys.a, keys.c, keys.d])) }
        #expect(throws: RootError.self) { try TrustedRoot.fromTrustedKeys([keys.a.publicKey], threshold: 2) }
        #expect(throws: RootError.self) { try TrustedRoot.fromTrustedKeys([], threshold: 1) }
    }

    @Test("following a chain skips the versions already held and stops at the first bad step")
    func following() throws {
        let keys = try Keys()
        let compat = try TrustedRoot.fromTrustedKeys([keys.a.publicKey, keys.b.publicKey], threshold: 2)
        // The controller's chain starts with its own root 1 (the same keys, signed): the compat pin skips it.
        #expect(try compat.following([try keys.root1(), try keys.root2(), try keys.root3()]).version == 3)
        #expect(throws: RootError.self) { try compat.following([try keys.root1(), try keys.root3()]) }
    }
}
