import Foundation
import Shared
import Testing

@testable import Agent

@Suite("DesiredStateEvaluator: signatures, documents, membership, serial order and expiry → one decision per service")
struct DesiredStateEvaluatorTests {
    /// Keys made fresh for every case: two the agent trusts, one it does not.
    struct Keys: Sendable {
        let trusted: SigningKey
        let second: SigningKey
        let rogue: SigningKey

        init() throws {
            trusted = try SigningKey.generate()
            second = try SigningKey.generate()
            rogue = try SigningKey.generate()
        }
    }

    /// What a case expects for service `api`.
    enum Expected: Sendable {
        case install(serial: Int64)
        case keep
        case skipFailed(serial: Int64)
        case refuse(serial: Int64?, reasonContains: [String])
        /// No decision for `api` at all (the envelope was for someone else).
        case none
    }

    struct Case: Sendable, CustomStringConvertible {
        var description: String
        var envelopes: @Sendable (Keys) throws -> [Envelope]
        var state: AgentState = DesiredStateEvaluatorTests.appliedFive
        var threshold = 1
        /// The trust root's verdict (`AgentTrust.Snapshot.problem`): expired, or a newer root not accepted.
        var trustProblem: String? = nil
        var expected: Expected
        /// Refusals listed for `api` (serial, words the reason must contain), in order.
        var refusals: [(serial: Int64?, reasonContains: String)] = []
        /// Refusals for services this instance does not run.
        var foreign: [(service: String?, serial: Int64?, reasonContains: String)] = []
    }

    static let five = CoreFixture.applied(CoreFixture.release(serial: 5))

    /// `api` runs serial 5 (the highest accepted).
    static let appliedFive: AgentState = {
        var state = AgentState()
        state["api"] = ServiceState(highestAcceptedSerial: 5, applied: five)
        return state
    }()

    static func signed(_ release: Release, by keys: [SigningKey]) throws -> Envelope {
        try Envelope.sign(payload: release.payload(), payloadType: Release.payloadType, with: keys)
    }

    /// A validly signed envelope whose payload was then changed (the signature no longer covers it).
    static func tampered(_ release: Release, by key: SigningKey) throws -> Envelope {
        var envelope = try signed(release, by: [key])
        var changed = release
        changed.env["INJECTED"] = "1"
        envelope.payload = changed.payload()
        return envelope
    }

    static let cases: [Case] = [
        Case(
            description: "a valid new serial is installed",
            envelopes: { [try signed(CoreFixture.release(serial: 6), by: [$0.trusted])] },
            expected: .install(serial: 6)
        ),
        Case(
            description: "the first release of a service is installed",
            envelopes: { [try signed(CoreFixture.release(serial: 1), by: [$0.trusted])] },
            state: AgentState(),
            expected: .install(serial: 1)
        ),
        Case(
            description: "the applied serial is kept",
            envelopes: { [try signed(CoreFixture.release(serial: 5), by: [$0.trusted])] },
            expected: .keep
        ),
        Case(
            description: "an applied serial that has since expired keeps running",
            envelopes: { [try signed(CoreFixture.release(serial: 5, expiresIn: -86_400), by: [$0.trusted])] },
            expected: .keep
        ),
        Case(
            description: "a serial rolled back here is skipped until a newer one arrives",
            envelopes: { [try signed(CoreFixture.release(serial: 6), by: [$0.trusted])] },
            state: {
                var state = appliedFive
                state["api"] = ServiceState(
                    highestAcceptedSerial: 6,
                    applied: five,
                    failures: [.init(serial: 6, reason: "not healthy within 60s", kind: .rolledBack)]
                )
                return state
            }(),
            expected: .skipFailed(serial: 6)
        ),
        Case(
            description: "a serial refused earlier (not rolled back) is judged again",
            envelopes: { [try signed(CoreFixture.release(serial: 6), by: [$0.trusted])] },
            state: {
                var state = appliedFive
                state["api"] = ServiceState(
                    highestAcceptedSerial: 5,
                    applied: five,
                    failures: [.init(serial: 6, reason: "signature check failed", kind: .refused)]
                )
                return state
            }(),
            expected: .install(serial: 6)
        ),
        Case(
            description: "a pending serial (install interrupted by a crash) is resumed although it is the highest accepted",
            envelopes: { [try signed(CoreFixture.release(serial: 6), by: [$0.trusted])] },
            state: {
                var state = appliedFive
                state["api"] = ServiceState(highestAcceptedSerial: 6, applied: five, pending: CoreFixture.applied(CoreFixture.release(serial: 6)))
                return state
            }(),
            expected: .install(serial: 6)
        ),
        Case(
            description: "the highest accepted serial that is neither applied nor pending is a replay",
            envelopes: { [try signed(CoreFixture.release(serial: 6), by: [$0.trusted])] },
            state: {
                var state = appliedFive
                state["api"] = ServiceState(highestAcceptedSerial: 6, applied: five)
                return state
            }(),
            expected: .refuse(serial: 6, reasonContains: ["serial 6 is not above serial 6", "replay"]),
            refusals: [(6, "replay")]
        ),
        Case(
            description: "an older serial is a replay and is refused with the reason",
            envelopes: { [try signed(CoreFixture.release(serial: 4), by: [$0.trusted])] },
            expected: .refuse(serial: 4, reasonContains: ["release api serial 4 is not above serial 5", "replay"]),
            refusals: [(4, "not above serial 5")]
        ),
        Case(
            description: "an expired release is refused",
            envelopes: { [try signed(CoreFixture.release(serial: 6, expiresIn: -3600), by: [$0.trusted])] },
            expected: .refuse(
                serial: 6,
                reasonContains: ["release api serial 6 expired at 2027-01-15T07:00:00Z, which this instance's clock is past"]
            ),
            refusals: [(6, "expired")]
        ),
        Case(
            description: "a release expired within the clock-skew grace (5 min) is installed",
            envelopes: { [try signed(CoreFixture.release(serial: 6, expiresIn: -240), by: [$0.trusted])] },
            expected: .install(serial: 6)
        ),
        Case(
            description: "a release signed by an untrusted key is refused, attributed to the service it claims",
            envelopes: { [try signed(CoreFixture.release(serial: 6), by: [$0.rogue])] },
            expected: .refuse(
                serial: 6,
                reasonContains: ["signature check failed", "0 distinct trusted key(s) signed, 1 required", "not trusted here"]
            ),
            refusals: [(6, "signature check failed")]
        ),
        Case(
            description: "a tampered payload is refused, attributed to the service it claims",
            envelopes: { [try tampered(CoreFixture.release(serial: 6), by: $0.trusted)] },
            expected: .refuse(serial: 6, reasonContains: ["signature check failed", "does not verify"]),
            refusals: [(6, "does not verify")]
        ),
        Case(
            description: "a wrong payload type is refused",
            envelopes: { keys in
                [try Envelope.sign(payload: CoreFixture.release(serial: 6).payload(), payloadType: "application/json", with: [keys.trusted])]
            },
            expected: .refuse(serial: 6, reasonContains: ["payloadType is \"application/json\""]),
            refusals: [(6, "payloadType")]
        ),
        Case(
            description: "a validly signed but invalid release document is refused, attributed to the service it claims",
            envelopes: { keys in
                let json = CoreFixture.release(serial: 6).json.setting("surprise", to: .bool(true))
                return [try Envelope.sign(payload: Array(json.encoded()), payloadType: Release.payloadType, with: [keys.trusted])]
            },
            expected: .refuse(serial: 6, reasonContains: ["invalid release document", "surprise: unknown field"]),
            refusals: [(6, "invalid release document")]
        ),
        Case(
            description: "a validly signed release whose min_uptime overflows Int64 is refused naming the field, not a crash",
            envelopes: { keys in
                var release = CoreFixture.release(serial: 6)
                release.pm2.apps[0].options["min_uptime"] = .string("999999999999999999h")
                return [try Envelope.sign(payload: release.payload(), payloadType: Release.payloadType, with: [keys.trusted])]
            },
            expected: .refuse(
                serial: 6,
                reasonContains: ["invalid release document", #"pm2.apps[0].min_uptime: "999999999999999999h" is too long: at most 86400000 ms"#]
            ),
            refusals: [(6, "invalid release document")]
        ),
        Case(
            description: "a release for a service this instance does not run is foreign, never a decision",
            envelopes: { [try signed(CoreFixture.release("billing", serial: 6), by: [$0.trusted])] },
            expected: .none,
            foreign: [("billing", 6, "service billing is not one this instance runs")]
        ),
        Case(
            description: "a tampered release claiming a foreign service is foreign, with the signature failure as reason",
            envelopes: { [try tampered(CoreFixture.release("billing", serial: 6), by: $0.trusted)] },
            expected: .none,
            foreign: [("billing", 6, "signature check failed")]
        ),
        Case(
            description: "a payload claiming a serial no release can have: refused for its service, with no serial",
            envelopes: {
                [try Envelope.sign(payload: Array(#"{"service":"api","serial":-1}"#.utf8), payloadType: Release.payloadType, with: [$0.trusted])]
            },
            expected: .refuse(serial: nil, reasonContains: ["invalid release document"]),
            refusals: [(nil, "invalid release document")]
        ),
        Case(
            description: "an unverified payload claiming a serial beyond 2^53: refused for its service, with no serial",
            envelopes: {
                [
                    try Envelope.sign(
                        payload: Array(#"{"service":"api","serial":1152921504606846976}"#.utf8),
                        payloadType: Release.payloadType,
                        with: [$0.rogue]
                    )
                ]
            },
            expected: .refuse(serial: nil, reasonContains: ["signature check failed"]),
            refusals: [(nil, "signature check failed")]
        ),
        Case(
            description: "a payload naming the service but no serial: refused for its service, with no serial",
            envelopes: {
                [try Envelope.sign(payload: Array(#"{"service":"api","serial":"7"}"#.utf8), payloadType: Release.payloadType, with: [$0.trusted])]
            },
            expected: .refuse(serial: nil, reasonContains: ["invalid release document"]),
            refusals: [(nil, "invalid release document")]
        ),
        Case(
            description: "an envelope whose payload names no service at all is foreign with no service",
            envelopes: { [try Envelope.sign(payload: Array("not json".utf8), payloadType: Release.payloadType, with: [$0.trusted])] },
            expected: .none,
            foreign: [(nil, nil, "invalid release document")]
        ),
        Case(
            description: "two envelopes for one service, the newer tampered: the older valid one is kept and the refusal listed",
            envelopes: { keys in
                [try signed(CoreFixture.release(serial: 5), by: [keys.trusted]), try tampered(CoreFixture.release(serial: 7), by: keys.trusted)]
            },
            expected: .keep,
            refusals: [(7, "signature check failed")]
        ),
        Case(
            description: "two valid envelopes for one service in any order: the higher serial is installed",
            envelopes: { keys in
                [try signed(CoreFixture.release(serial: 6), by: [keys.trusted]), try signed(CoreFixture.release(serial: 8), by: [keys.trusted])]
            },
            expected: .install(serial: 8)
        ),
        Case(
            description: "a replayed older envelope beside the applied one is kept and the replay listed",
            envelopes: { keys in
                [try signed(CoreFixture.release(serial: 3), by: [keys.trusted]), try signed(CoreFixture.release(serial: 5), by: [keys.trusted])]
            },
            expected: .keep,
            refusals: [(3, "replay")]
        ),
        Case(
            description: "threshold 2 with one signature is refused",
            envelopes: { [try signed(CoreFixture.release(serial: 6), by: [$0.trusted])] },
            threshold: 2,
            expected: .refuse(serial: 6, reasonContains: ["1 distinct trusted key(s) signed, 2 required"]),
            refusals: [(6, "2 required")]
        ),
        Case(
            description: "threshold 2 with the same key signing twice is refused",
            envelopes: { [try signed(CoreFixture.release(serial: 6), by: [$0.trusted, $0.trusted])] },
            threshold: 2,
            expected: .refuse(serial: 6, reasonContains: ["1 distinct trusted key(s) signed, 2 required"]),
            refusals: [(6, "2 required")]
        ),
        Case(
            description: "threshold 2 with a trusted and an untrusted signature is refused",
            envelopes: { [try signed(CoreFixture.release(serial: 6), by: [$0.trusted, $0.rogue])] },
            threshold: 2,
            expected: .refuse(
                serial: 6,
                reasonContains: ["1 distinct trusted key(s) signed, 2 required", "1 signature(s) by keys that are not trusted"]
            ),
            refusals: [(6, "2 required")]
        ),
        Case(
            description: "threshold 2 with two trusted signatures is installed",
            envelopes: { [try signed(CoreFixture.release(serial: 6), by: [$0.trusted, $0.second])] },
            threshold: 2,
            expected: .install(serial: 6)
        ),
        Case(
            description: "trust root expired: a valid new serial is refused with the reason",
            envelopes: { [try signed(CoreFixture.release(serial: 6), by: [$0.trusted])] },
            trustProblem: expiredRoot,
            expected: .refuse(serial: 6, reasonContains: ["trust root expired", "what runs keeps running"]),
            refusals: [(6, "trust root expired")]
        ),
        Case(
            description: "trust root expired: the applied serial is kept",
            envelopes: { [try signed(CoreFixture.release(serial: 5), by: [$0.trusted])] },
            trustProblem: expiredRoot,
            expected: .keep
        ),
        Case(
            description: "trust root expired: an install interrupted before it resumes (it was admitted already)",
            envelopes: { [try signed(CoreFixture.release(serial: 6), by: [$0.trusted])] },
            state: {
                var state = AgentState()
                state["api"] = ServiceState(highestAcceptedSerial: 6, applied: five, pending: CoreFixture.applied(CoreFixture.release(serial: 6)))
                return state
            }(),
            trustProblem: expiredRoot,
            expected: .install(serial: 6)
        ),
        Case(
            description: "a newer root that could not be verified: a valid new serial is refused",
            envelopes: { [try signed(CoreFixture.release(serial: 6), by: [$0.trusted])] },
            trustProblem: "trust root version 2 refused: root version 2 is not signed by enough root keys of version 1",
            expected: .refuse(serial: 6, reasonContains: ["trust root version 2 refused"]),
            refusals: [(6, "trust root version 2 refused")]
        ),
    ]

    static let expiredRoot =
        "trust root expired: version 2 expired at 2026-01-01T00:00:00Z; no new release is installed until operators publish a "
        + "renewed root (what runs keeps running)"

    @Test(arguments: cases)
    func decides(_ testCase: Case) throws {
        let keys = try Keys()
        var evaluator = DesiredStateEvaluator(
            policy: try TrustPolicy(trustedKeys: [keys.trusted.publicKey, keys.second.publicKey], threshold: testCase.threshold),
            admission: ReleaseAdmission(now: { CoreFixture.now }),
            services: ["api", "web"]
        )
        evaluator.trustProblem = testCase.trustProblem
        let envelopes = try testCase.envelopes(keys)
        let result = evaluator.evaluate(DesiredState(agentID: "a1", pollSeconds: 15, releases: envelopes), state: testCase.state)

        // `web` has no envelope: it gets no decision, and nothing is invented for it.
        #expect(result.decisions["web"] == nil)
        #expect(Set(result.decisions.keys).isSubset(of: ["api"]))
        let decision = result.decisions["api"]
        switch testCase.expected {
        case .install(let serial):
            guard case .install(let release, let payload)? = decision else {
                Issue.record("expected an install of serial \(serial), got \(String(describing: decision))")
                return
            }
            #expect(release.serial == serial)
            // The payload is exactly the signed bytes, and the release is what they say.
            let envelope = try #require(envelopes.first { (try? Release.decode($0.payload))?.serial == serial })
            #expect(payload == envelope.payload)
            #expect(release == (try Release.decode(envelope.payload)))
        case .keep:
            #expect(decision == .keep)
        case .skipFailed(let serial):
            #expect(decision == .skipFailed(serial: serial))
        case .refuse(let serial, let words):
            guard case .refuse(let gotSerial, let reason)? = decision else {
                Issue.record("expected a refusal, got \(String(describing: decision))")
                return
            }
            #expect(gotSerial == serial)
            for word in words { #expect(reason.contains(word), "reason: \(reason)") }
        case .none:
            #expect(decision == nil)
        }

        let refusals = result.refusals["api"] ?? []
        #expect(refusals.count == testCase.refusals.count, "refusals: \(refusals)")
        for (got, want) in zip(refusals, testCase.refusals) {
            #expect(got.serial == want.serial)
            #expect(got.reason.contains(want.reasonContains), "reason: \(got.reason)")
        }
        #expect(Set(result.refusals.keys).isSubset(of: ["api"]))

        #expect(result.foreign.count == testCase.foreign.count, "foreign: \(result.foreign)")
        for (got, want) in zip(result.foreign, testCase.foreign) {
            #expect(got.service == want.service)
            #expect(got.serial == want.serial)
            #expect(got.reason.contains(want.reasonContains), "reason: \(got.reason)")
        }
    }

    /// An expired release the controller keeps offering is refused with the same words at every pass, so the service
    /// state takes it as news once: its reason held the time of the check, and each pass saved the state, logged and
    /// reported it again.
    @Test func anExpiredReleaseIsNewsOnce() throws {
        let keys = try Keys()
        let envelope = try Self.signed(CoreFixture.release(serial: 6, expiresIn: -3600), by: [keys.trusted])
        var service = ServiceState(highestAcceptedSerial: 5, applied: CoreFixture.applied(CoreFixture.release(serial: 5)))
        var actions: [ServiceState.Action] = []
        for later in [0.0, 1, 45] {
            let evaluator = DesiredStateEvaluator(
                policy: try TrustPolicy(trustedKeys: [keys.trusted.publicKey], threshold: 1),
                admission: ReleaseAdmission(now: { CoreFixture.now.addingTimeInterval(later) }),
                services: ["api"]
            )
            let result = evaluator.evaluate(DesiredState(agentID: "a1", pollSeconds: 15, releases: [envelope]), state: AgentState())
            guard case .refuse(let serial, let reason)? = result.decisions["api"] else {
                Issue.record("not refused: \(String(describing: result.decisions["api"]))")
                return
            }
            let action: ServiceState.Action = try service.handle(ServiceState.Event.releaseRefused(serial: serial, reason: reason))
            actions.append(action)
        }
        #expect(actions == [.save, .none, .none])
    }

    @Test func servicesAreDecidedIndependently() throws {
        let keys = try Keys()
        let evaluator = DesiredStateEvaluator(
            policy: try TrustPolicy(trustedKeys: [keys.trusted.publicKey]),
            admission: ReleaseAdmission(now: { CoreFixture.now }),
            services: ["api", "web"]
        )
        let envelopes = [
            try Self.tampered(CoreFixture.release("web", serial: 2), by: keys.trusted),
            try Self.signed(CoreFixture.release("api", serial: 6), by: [keys.trusted]),
            try Self.signed(CoreFixture.release("billing", serial: 1), by: [keys.trusted]),
        ]
        let result = evaluator.evaluate(DesiredState(agentID: "a1", pollSeconds: 15, releases: envelopes), state: Self.appliedFive)
        let api6 = CoreFixture.release("api", serial: 6)
        #expect(result.decisions["api"] == .install(api6, payload: api6.payload()))
        guard case .refuse(2, let reason)? = result.decisions["web"] else {
            Issue.record("web: expected a refusal of serial 2, got \(String(describing: result.decisions["web"]))")
            return
        }
        #expect(reason.contains("signature check failed"))
        #expect(result.refusals["web"]?.map(\.serial) == [2])
        #expect(result.refusals["api"] == nil)
        #expect(result.foreign.map(\.service) == ["billing"])
    }
}

extension JSONValue {
    /// A copy of an object with one top-level field set.
    func setting(_ key: String, to value: JSONValue) -> JSONValue {
        guard case .object(var fields) = self else { return self }
        fields[key] = value
        return .object(fields)
    }
}
