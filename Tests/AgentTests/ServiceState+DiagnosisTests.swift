import Foundation
import Shared
import Testing

@testable import Agent

/// The evidence of a failed release travels with the state machine's `rolledBack` and `failedReleaseRemoved` events,
/// stays with the newest failure only, is masked with the rest of the state, and survives `state.json`.
@Suite("ServiceState: failure diagnoses")
struct ServiceStateDiagnosisTests {
    static let r5 = ServiceStateTests.r5
    static let r6 = ServiceStateTests.r6
    static let r7 = ServiceStateTests.r7
    static let secret = "hunter2-secret-value"

    static func diagnosis(_ line: String) -> FailureDiagnosis {
        FailureDiagnosis(
            stage: .healthGate,
            cause: .crashed,
            at: CoreFixture.now,
            instances: [FailureDiagnosis.Instance(app: "api", pmId: 0, status: "errored", restarts: 2, exitCode: 1)],
            logs: [FailureDiagnosis.LogTail(app: "api", pmIds: [0], stream: .stderr, lines: [line], truncated: false)]
        )
    }

    static func deploying(_ pending: AppliedRelease, over applied: AppliedRelease?, failures: [ServiceState.Failure] = []) -> ServiceState {
        ServiceState(
            highestAcceptedSerial: pending.serial,
            applied: applied,
            pending: pending,
            failures: failures,
            phase: .deploying,
            message: "deploying"
        )
    }

    @Test func aRollbackKeepsItsDiagnosisWithTheFailure() throws {
        var state = Self.deploying(Self.r6, over: Self.r5)
        let reason = ServiceState.UnhealthyReason.healthGate("api: pm_id 0 errored")
        #expect(try state.handle(.releaseUnhealthy(reason, canRollBack: true)) == .rollBack(failed: Self.r6, to: Self.r5))
        #expect(try state.handle(.rolledBack(reason, diagnosis: Self.diagnosis("boom 6"))) == .save)
        #expect(state.failures.first?.serial == 6)
        #expect(state.failures.first?.diagnosis == Self.diagnosis("boom 6"))
    }

    @Test func onlyTheNewestFailureKeepsADiagnosis() throws {
        var state = Self.deploying(
            Self.r7,
            over: nil,
            failures: [.init(serial: 6, reason: "old", kind: .rolledBack, diagnosis: Self.diagnosis("boom 6"))]
        )
        let reason = ServiceState.UnhealthyReason.healthGate("api: pm_id 0 errored")
        #expect(try state.handle(.releaseUnhealthy(reason, canRollBack: false)) == .removeFailedRelease(Self.r7))
        #expect(try state.handle(.failedReleaseRemoved(reason, diagnosis: Self.diagnosis("boom 7"))) == .save)
        #expect(state.failures.map(\.serial) == [7, 6])
        #expect(state.failures[0].diagnosis == Self.diagnosis("boom 7"))
        #expect(state.failures[1].diagnosis == nil, "the older failure gave its evidence up")
    }

    @Test func aRefusalLeavesTheDiagnosisOfTheLastRollback() throws {
        var state = ServiceState(
            highestAcceptedSerial: 6,
            applied: Self.r5,
            failures: [.init(serial: 6, reason: "crashed", kind: .rolledBack, diagnosis: Self.diagnosis("boom 6"))],
            phase: .rolledBack,
            message: "rolled back"
        )
        #expect(try state.handle(.releaseRefused(serial: 8, reason: "bad signature")) == .save)
        #expect(state.failures.map(\.serial) == [8, 6])
        #expect(state.failures[1].diagnosis == Self.diagnosis("boom 6"))
    }

    @Test func maskingCoversTheDiagnosisAndTheStateFileKeepsIt() throws {
        var agent = AgentState()
        agent["api"] = ServiceState(
            highestAcceptedSerial: 6,
            applied: Self.r5,
            failures: [.init(serial: 6, reason: "crashed with \(Self.secret)", kind: .rolledBack, diagnosis: Self.diagnosis("pw \(Self.secret)"))],
            phase: .rolledBack,
            message: "rolled back"
        )
        agent.mask(with: SecretMask([["DB_PASSWORD": Self.secret]]))
        let failure = try #require(agent["api"].failures.first)
        #expect(failure.reason == "crashed with ${DB_PASSWORD}")
        #expect(failure.diagnosis?.logs.first?.lines == ["pw ${DB_PASSWORD}"])

        let encoded = try JSONEncoder().encode(agent)
        #expect(String(decoding: encoded, as: UTF8.self).contains(Self.secret) == false)
        #expect(try JSONDecoder().decode(AgentState.self, from: encoded) == agent)
    }

    @Test func aStateFileFromBeforeDiagnosesStillLoads() throws {
        let old = #"{"serial": 6, "reason": "crashed", "kind": "rolled-back"}"#
        let failure = try JSONDecoder().decode(ServiceState.Failure.self, from: Data(old.utf8))
        #expect(failure == ServiceState.Failure(serial: 6, reason: "crashed", kind: .rolledBack))
    }
}
