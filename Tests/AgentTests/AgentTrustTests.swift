import Foundation
import Logging
import Shared
import TestSupport
import Testing

@testable import Agent

/// The agent's trust root: following the controller's chain from the pin, step by step, keeping the newest accepted
/// root across restarts, and saying why no new release may be installed when a step fails or the root expired. (The
/// chain is fetched over HTTP from a real controller in TrustRootEndToEndTests; here `fetch` serves signed envelopes.)
@Suite("Agent trust root")
struct AgentTrustTests {
    static let logger = Logger(label: "ferry.test") { _ in SwiftLogNoOpLogHandler() }

    /// The flag key (root 1 built from `--trusted-key`), then root keys and release keys of roots 2 and 3.
    struct Keys: Sendable {
        let flag, rootKey2, rootKey3, release2: SigningKey
        /// When the roots expire, fixed once: a test comparing a stored file with a root made again later got another
        /// expiry (another document) whenever the clock passed a second in between (seen on a loaded machine).
        let expiresAt = Date().addingTimeInterval(86_400)
        /// Root 3's, later (as `TestRoots.root`'s default), fixed once too.
        let laterExpiresAt = Date().addingTimeInterval(365 * 86_400)

        init() throws {
            flag = try .generate()
            rootKey2 = try .generate()
            rootKey3 = try .generate()
            release2 = try .generate()
        }

        var pin: TrustedRoot { get throws { try TrustedRoot.fromTrustedKeys([flag.publicKey], threshold: 1) } }

        func root2(signers: [SigningKey]? = nil, expiresAt: Date? = nil) throws -> Envelope {
            try TestRoots.root(
                version: 2,
                expiresAt: expiresAt ?? self.expiresAt,
                rootKeys: [rootKey2],
                releaseKeys: [release2],
                signers: signers ?? [flag, rootKey2]
            )
        }

        func root3() throws -> Envelope {
            try TestRoots.root(version: 3, expiresAt: laterExpiresAt, rootKeys: [rootKey3], releaseKeys: [release2], signers: [rootKey2, rootKey3])
        }
    }

    struct NotServed: Error, CustomStringConvertible {
        let version: Int64
        var description: String { "controller refused http://127.0.0.1/v1/roots/\(version): HTTP 404 unknown_root" }
    }

    /// A fetch serving `chain` by version.
    static func serving(_ chain: [Int64: Envelope]) -> @Sendable (Int64) async throws -> Envelope {
        { version in
            guard let envelope = chain[version] else { throw NotServed(version: version) }
            return envelope
        }
    }

    @Test("1 → 2 → 3: each step verified, the newest kept across a restart, never rolled back")
    func followsTheChain() async throws {
        try await TestPaths.withTemporaryDirectory { directory in
            let keys = try Keys()
            let file = directory.appendingPathComponent("trust-root.json").path
            let trust = AgentTrust(pinned: try keys.pin, file: file, logger: Self.logger)
            let chain = [2: try keys.root2(), 3: try keys.root3()] as [Int64: Envelope]
            await trust.catchUp(to: 3, fetch: Self.serving(chain))
            #expect(await trust.current.version == 3)
            #expect(await trust.updateProblem == nil)
            let snapshot = await trust.snapshot(at: Date())
            #expect(snapshot.problem == nil)
            #expect(snapshot.report?.version == 3 && snapshot.report?.problem == nil && snapshot.report?.expiresAt != nil)
            #expect(throws: Never.self) {
                try snapshot.releasePolicy.verify(try TestRoots.release(signers: [keys.release2]), expecting: Release.payloadType)
            }
            #expect(throws: TrustError.self) {
                try snapshot.releasePolicy.verify(try TestRoots.release(signers: [keys.flag]), expecting: Release.payloadType)
            }

            // A restart resumes from the stored root 3, and a controller naming an older version moves nothing.
            let restarted = AgentTrust(pinned: try keys.pin, file: file, logger: Self.logger)
            #expect(await restarted.current.version == 3)
            await restarted.catchUp(to: 2, fetch: Self.serving([:]))
            #expect(await restarted.current.version == 3)
            #expect(await restarted.updateProblem == nil)
            await restarted.catchUp(to: nil, fetch: Self.serving([:]))
            #expect(await restarted.current.version == 3)
        }
    }

    struct Failure: Sendable, CustomStringConvertible {
        let description: String
        /// What the controller serves, by version.
        let chain: @Sendable (Keys) throws -> [Int64: Envelope]
        let target: Int64
        /// The version the agent ends on, and words of its problem.
        let version: Int64
        let problem: [String]
    }

    static let failures: [Failure] = [
        Failure(
            description: "the named version is not served",
            chain: { _ in [:] },
            target: 2,
            version: 1,
            problem: ["cannot fetch trust root version 2", "the controller names version 2", "404"]
        ),
        Failure(
            description: "root 2 signed only by its new root key",
            chain: { [2: try $0.root2(signers: [$0.rootKey2])] },
            target: 2,
            version: 1,
            problem: ["trust root version 2 refused", "not signed by enough root keys of version 1"]
        ),
        Failure(
            description: "root 2 signed only by the old key",
            chain: { [2: try $0.root2(signers: [$0.flag])] },
            target: 2,
            version: 1,
            problem: ["trust root version 2 refused", "not signed by enough of its own root keys"]
        ),
        Failure(
            description: "root 3 served as version 2 (skipping)",
            chain: { [2: try $0.root3()] },
            target: 3,
            version: 1,
            problem: ["trust root version 2 refused", "the next root must be version 2"]
        ),
        Failure(
            description: "a good root 2, then a root 3 not signed by root 2's keys",
            chain: { keys in
                [
                    2: try keys.root2(),
                    3: try TestRoots.root(version: 3, rootKeys: [keys.rootKey3], releaseKeys: [keys.release2], signers: [keys.flag, keys.rootKey3]),
                ]
            },
            target: 3,
            version: 2,
            problem: ["trust root version 3 refused", "not signed by enough root keys of version 2"]
        ),
        Failure(
            description: "a release envelope served as a root",
            chain: { [2: try TestRoots.release(signers: [$0.flag])] },
            target: 2,
            version: 1,
            problem: ["trust root version 2 refused", "expected \"application/vnd.ferry.root.v1+json\""]
        ),
    ]

    @Test("a step that cannot be fetched or verified stops the catch-up and blocks new releases until one gets through", arguments: failures)
    func failedStep(_ failure: Failure) async throws {
        try await TestPaths.withTemporaryDirectory { directory in
            let keys = try Keys()
            let trust = AgentTrust(pinned: try keys.pin, file: directory.appendingPathComponent("trust-root.json").path, logger: Self.logger)
            await trust.catchUp(to: failure.target, fetch: Self.serving(try failure.chain(keys)))
            #expect(await trust.current.version == failure.version)
            let snapshot = await trust.snapshot(at: Date())
            let problem = try #require(snapshot.problem)
            for word in failure.problem { #expect(problem.contains(word), "problem: \(problem)") }
            #expect(snapshot.report?.problem == problem && snapshot.report?.version == failure.version)
            // The controller fixes its chain: the next pass gets through and the problem clears.
            await trust.catchUp(to: 3, fetch: Self.serving([2: try keys.root2(), 3: try keys.root3()]))
            #expect(await trust.current.version == 3)
            #expect(await trust.snapshot(at: Date()).problem == nil)
        }
    }

    @Test("an expired newest root blocks new releases with 'trust root expired'; the clock-skew grace applies")
    func expiredRoot() async throws {
        try await TestPaths.withTemporaryDirectory { directory in
            let keys = try Keys()
            let expiresAt = Date().addingTimeInterval(-3600)
            let trust = AgentTrust(pinned: try keys.pin, file: directory.appendingPathComponent("trust-root.json").path, logger: Self.logger)
            // An expired root is still a valid step (TUF: only the newest root's expiry matters).
            await trust.catchUp(to: 2, fetch: Self.serving([2: try keys.root2(expiresAt: expiresAt)]))
            #expect(await trust.current.version == 2)
            let snapshot = await trust.snapshot(at: Date())
            let problem = try #require(snapshot.problem)
            #expect(problem.hasPrefix("trust root expired: version 2 expired at \(Timestamp.format(expiresAt))"))
            #expect(snapshot.report == TrustRootStatus(version: 2, expiresAt: Timestamp.parse(Timestamp.format(expiresAt)), problem: problem))
            #expect(await trust.snapshot(at: expiresAt.addingTimeInterval(200)).problem == nil, "within the 300 s grace")
        }
    }

    /// One release offered after the agent followed the controller's chain: the decision of the real evaluator under
    /// the root the agent ended on (its release keys, and its verdict: expired, or a newer root not accepted).
    struct ReleaseUnderRoot: Sendable, CustomStringConvertible {
        let description: String
        /// What the controller serves, by version, and the version it names.
        let chain: @Sendable (Keys) throws -> [Int64: Envelope]
        var target: Int64? = nil
        /// The release of `api` (5 runs, so 6 is new) and who signed it.
        let serial: Int64
        let signers: @Sendable (Keys) -> [SigningKey]
        /// `nil`: installed (6) or kept (5); else words of the refusal.
        let refusal: [String]?
    }

    /// Roots valid at the evaluator's clock (`CoreFixture.now`), or expired an hour before it.
    static let valid = CoreFixture.now.addingTimeInterval(30 * 86_400)
    static let expired = CoreFixture.now.addingTimeInterval(-3600)

    static let releasesUnderRoots: [ReleaseUnderRoot] = [
        ReleaseUnderRoot(
            description: "root 1 (the flag key): its release installs",
            chain: { _ in [:] },
            serial: 6,
            signers: { [$0.flag] },
            refusal: nil
        ),
        ReleaseUnderRoot(
            description: "root 2 accepted: the new release key's release installs",
            chain: { [2: try $0.root2(expiresAt: valid)] },
            target: 2,
            serial: 6,
            signers: { [$0.release2] },
            refusal: nil
        ),
        ReleaseUnderRoot(
            description: "root 2 accepted: the removed flag key's release is refused (revocation)",
            chain: { [2: try $0.root2(expiresAt: valid)] },
            target: 2,
            serial: 6,
            signers: { [$0.flag] },
            refusal: ["signature check failed"]
        ),
        ReleaseUnderRoot(
            description: "1 → 2 → 3: root 3's release role still counts the key root 2 added",
            chain: { keys in
                [
                    2: try keys.root2(expiresAt: valid),
                    3: try TestRoots.root(
                        version: 3,
                        expiresAt: valid,
                        rootKeys: [keys.rootKey3],
                        releaseKeys: [keys.release2],
                        signers: [keys.rootKey2, keys.rootKey3]
                    ),
                ]
            },
            target: 3,
            serial: 6,
            signers: { [$0.release2] },
            refusal: nil
        ),
        ReleaseUnderRoot(
            description: "root 2 expired: a new release is refused with 'trust root expired'",
            chain: { [2: try $0.root2(expiresAt: expired)] },
            target: 2,
            serial: 6,
            signers: { [$0.release2] },
            refusal: ["trust root expired", "what runs keeps running"]
        ),
        ReleaseUnderRoot(
            description: "root 2 expired: the running serial is kept",
            chain: { [2: try $0.root2(expiresAt: expired)] },
            target: 2,
            serial: 5,
            signers: { [$0.release2] },
            refusal: nil
        ),
        ReleaseUnderRoot(
            description: "root 2 not signed by root 1's key: the agent stays on root 1 but admits nothing new, not even root 1's key",
            chain: { [2: try $0.root2(signers: [$0.rootKey2], expiresAt: valid)] },
            target: 2,
            serial: 6,
            signers: { [$0.flag] },
            refusal: ["trust root version 2 refused"]
        ),
        ReleaseUnderRoot(
            description: "the controller names root 2 but cannot serve it: nothing new is admitted",
            chain: { _ in [:] },
            target: 2,
            serial: 6,
            signers: { [$0.flag] },
            refusal: ["cannot fetch trust root version 2"]
        ),
    ]

    @Test("releases are judged under the newest accepted root: revoked keys, expiry, a root that cannot be accepted", arguments: releasesUnderRoots)
    func releaseUnderRoot(_ testCase: ReleaseUnderRoot) async throws {
        try await TestPaths.withTemporaryDirectory { directory in
            let keys = try Keys()
            let trust = AgentTrust(pinned: try keys.pin, file: directory.appendingPathComponent("trust-root.json").path, logger: Self.logger)
            await trust.catchUp(to: testCase.target, fetch: Self.serving(try testCase.chain(keys)))
            let snapshot = await trust.snapshot(at: CoreFixture.now)
            var evaluator = DesiredStateEvaluator(
                policy: snapshot.releasePolicy,
                admission: ReleaseAdmission(now: { CoreFixture.now }),
                services: ["api"]
            )
            evaluator.trustProblem = snapshot.problem
            let envelope = try DesiredStateEvaluatorTests.signed(CoreFixture.release(serial: testCase.serial), by: testCase.signers(keys))
            let result = evaluator.evaluate(
                DesiredState(agentID: "a1", pollSeconds: 15, releases: [envelope]),
                state: DesiredStateEvaluatorTests.appliedFive
            )
            let decision = try #require(result.decisions["api"])
            switch (decision, testCase.refusal) {
            case (.install(let release, _), nil): #expect(release.serial == 6 && testCase.serial == 6)
            case (.keep, nil): #expect(testCase.serial == 5)
            case (.refuse(let serial, let reason), let words?):
                #expect(serial == testCase.serial)
                for word in words { #expect(reason.contains(word), "\(reason)") }
            default: Issue.record("\(testCase.description): got \(decision)")
            }
        }
    }

    @Test("a root built from trusted keys reports nothing while nothing is wrong")
    func quietCompatibility() async throws {
        try await TestPaths.withTemporaryDirectory { directory in
            let keys = try Keys()
            let trust = AgentTrust(pinned: try keys.pin, file: directory.appendingPathComponent("trust-root.json").path, logger: Self.logger)
            #expect(await trust.current.version == 1)
            let snapshot = await trust.snapshot(at: Date().addingTimeInterval(50 * 365 * 86_400))
            #expect(snapshot.problem == nil && snapshot.report == nil)
        }
    }

    /// An unreadable file may have held roots newer than the pin (one that revoked a key): new releases are held back,
    /// whatever version the controller names, and the file is left as it is (a restart still knows).
    @Test("an unreadable stored chain holds new releases back until it is removed")
    func unreadableStorage() async throws {
        try await TestPaths.withTemporaryDirectory { directory in
            let keys = try Keys()
            let file = directory.appendingPathComponent("trust-root.json")
            try Data("{not json".utf8).write(to: file)
            let trust = AgentTrust(pinned: try keys.pin, file: file.path, logger: Self.logger)
            #expect(await trust.current.version == 1)
            await trust.catchUp(to: 2, fetch: Self.serving([2: try keys.root2()]))
            #expect(await trust.current.version == 2)
            let problem = await trust.snapshot(at: Date()).problem
            #expect(problem?.contains("cannot be read") == true, "\(problem ?? "no problem")")
            #expect(try Data(contentsOf: file) == Data("{not json".utf8), "the damaged file is kept")
            try FileManager.default.removeItem(at: file)
            let again = AgentTrust(pinned: try keys.pin, file: file.path, logger: Self.logger)
            #expect(await again.snapshot(at: Date()).problem == nil)
        }
    }

    /// A stored chain whose later steps do not verify keeps the steps that do, and holds new releases back until the
    /// controller's chain verifies up to the highest version the file named; the file is not overwritten meanwhile.
    @Test("a damaged later step keeps the steps before it and holds releases back until the chain verifies past it")
    func damagedLaterStep() async throws {
        try await TestPaths.withTemporaryDirectory { directory in
            let keys = try Keys()
            let file = directory.appendingPathComponent("trust-root.json")
            let damaged = Self.chainFile([try keys.root2(), try keys.root3().resigned(by: [keys.rootKey3])])
            try Data(damaged).write(to: file)
            let trust = AgentTrust(pinned: try keys.pin, file: file.path, logger: Self.logger)
            #expect(await trust.current.version == 2)
            // A controller naming version 2 (or 1) does not clear it.
            await trust.catchUp(to: 2, fetch: Self.serving([:]))
            let held = await trust.snapshot(at: Date()).problem
            #expect(held?.contains("name version 3") == true, "\(held ?? "no problem")")
            #expect(try Data(contentsOf: file) == Data(damaged))
            await trust.catchUp(to: 3, fetch: Self.serving([3: try keys.root3()]))
            #expect(await trust.current.version == 3)
            #expect(await trust.snapshot(at: Date()).problem == nil)
            #expect(try Data(contentsOf: file) == Data(Self.chainFile([try keys.root2(), try keys.root3()])))
        }
    }

    /// A root accepted but not stored (a full disk) would be lost at a restart, which then starts below it: new releases
    /// are held back until the write succeeds, tried again at every catch-up.
    @Test("a root that cannot be stored holds releases back until it is")
    func unsavedRoot() async throws {
        try await TestPaths.withTemporaryDirectory { directory in
            let keys = try Keys()
            // The file's directory is a file: every write fails until it is a directory.
            let parent = directory.appendingPathComponent("state")
            try Data().write(to: parent)
            let file = parent.appendingPathComponent("trust-root.json")
            let trust = AgentTrust(pinned: try keys.pin, file: file.path, logger: Self.logger)
            await trust.catchUp(to: 2, fetch: Self.serving([2: try keys.root2()]))
            #expect(await trust.current.version == 2)
            let problem = await trust.snapshot(at: Date()).problem
            #expect(problem?.contains("cannot store trust root version 2") == true, "\(problem ?? "no problem")")
            try FileManager.default.removeItem(at: parent)
            try FileManager.default.createDirectory(at: parent, withIntermediateDirectories: false)
            await trust.catchUp(to: 2, fetch: Self.serving([:]))
            #expect(await trust.snapshot(at: Date()).problem == nil)
            #expect(try Data(contentsOf: file) == Data(Self.chainFile([try keys.root2()])))
        }
    }

    struct StoredChain: Sendable, CustomStringConvertible {
        let description: String
        /// The file's content, from the keys of the chain the agent followed (roots 2 and 3 of `Keys`).
        let file: @Sendable (Keys) throws -> [UInt8]
        /// The pin of the restarted agent: `nil` for the same one.
        let repin: (@Sendable (Keys) throws -> TrustedRoot)?
        /// The version the restarted agent starts from.
        let version: Int64
        /// Whether it holds new releases back (the file named roots that do not verify, or could not be read).
        var heldBack = false
    }

    static func chainFile(_ envelopes: [Envelope]) -> [UInt8] {
        Array(JSONValue.object(["chain": .array(envelopes.map(\.json))]).encoded())
    }

    static let storedChains: [StoredChain] = [
        StoredChain(description: "the chain it wrote", file: { chainFile([try $0.root2(), try $0.root3()]) }, repin: nil, version: 3),
        StoredChain(
            description: "enrolled again with another fleet's root: the stored chain does not follow from the new pin",
            file: { chainFile([try $0.root2(), try $0.root3()]) },
            repin: { _ in try Keys().pin },
            version: 1
        ),
        StoredChain(
            description: "pinned since to the same root 3 (signed by its own key): kept",
            file: { chainFile([try $0.root2(), try $0.root3()]) },
            repin: { try TrustedRoot.pinning(try $0.root3().resigned(by: [$0.rootKey3])) },
            version: 3
        ),
        StoredChain(
            description: "root 3 in the file not signed by root 2's key (tampered): root 2 is kept, releases held back",
            file: { keys in
                chainFile([try keys.root2(), try keys.root3().resigned(by: [keys.rootKey3])])
            },
            repin: nil,
            version: 2,
            heldBack: true
        ),
        StoredChain(
            description: "root 3 alone (a step is missing): releases held back",
            file: { chainFile([try $0.root3()]) },
            repin: nil,
            version: 1,
            heldBack: true
        ),
        StoredChain(
            description: "a first step that is not a root: releases held back",
            file: { chainFile([try TestRoots.release(signers: [$0.rootKey2])]) },
            repin: nil,
            version: 1,
            heldBack: true
        ),
        StoredChain(
            description: "a bare envelope (an early version kept only the newest root): read as a chain of one",
            file: { Array(try $0.root2().encoded()) },
            repin: nil,
            version: 2
        ),
        StoredChain(
            description: "an unknown field: releases held back",
            file: { keys in
                Array(JSONValue.object(["chain": .array([try keys.root2().json]), "newest": .integer(2)]).encoded())
            },
            repin: nil,
            version: 1,
            heldBack: true
        ),
    ]

    @Test("a restart resumes from the stored chain only when it follows, step by step, from the pin", arguments: storedChains)
    func restartFromStoredChain(_ stored: StoredChain) async throws {
        try await TestPaths.withTemporaryDirectory { directory in
            let keys = try Keys()
            let file = directory.appendingPathComponent("trust-root.json")
            try Data(try stored.file(keys)).write(to: file)
            let pin = try stored.repin?(keys) ?? keys.pin
            let trust = AgentTrust(pinned: pin, file: file.path, logger: Self.logger)
            #expect(await trust.current.version == stored.version)
            #expect((await trust.snapshot(at: Date()).problem != nil) == stored.heldBack)
        }
    }

    @Test("the file keeps every root accepted after the pin, oldest first")
    func fileKeepsTheChain() async throws {
        try await TestPaths.withTemporaryDirectory { directory in
            let keys = try Keys()
            let file = directory.appendingPathComponent("trust-root.json")
            let trust = AgentTrust(pinned: try keys.pin, file: file.path, logger: Self.logger)
            let root2 = try keys.root2()
            let root3 = try keys.root3()
            await trust.catchUp(to: 3, fetch: Self.serving([2: root2, 3: root3]))
            #expect(try Data(contentsOf: file) == Data(Self.chainFile([root2, root3])))
            let mode = try FileManager.default.attributesOfItem(atPath: file.path)[.posixPermissions] as? Int
            #expect(mode == 0o600)
        }
    }
}

extension Envelope {
    /// The same payload signed by `keys` only.
    fileprivate func resigned(by keys: [SigningKey]) throws -> Envelope {
        try Envelope.sign(payload: payload, payloadType: payloadType, with: keys)
    }
}
