import Foundation
import Testing

@testable import Controller

/// The rollout's transition table: every state × every event → the next state and the action, or the refusal.
@Suite struct RolloutStateMachineTests {
    /// An event of a stored rollout, as the coordinator and the store send it.
    enum Event: Sendable, CustomStringConvertible {
        case evaluated(RolloutEvaluator.Decision)
        case requested(RolloutAction)
        case superseded(serial: Int64)
        /// Release keys approved: `signed` of `required` signatures now.
        case approved(signed: Int, required: Int)

        /// The kind of event, for the coverage check.
        var name: String {
            switch self {
            case .evaluated(.wait): "wait"
            case .evaluated(.advance): "advance"
            case .evaluated(.complete): "complete"
            case .evaluated(.halt): "halt"
            case .requested(let action): action.rawValue
            case .superseded: "superseded"
            case .approved: "approved"
            }
        }

        var description: String {
            switch self {
            case .evaluated(.advance(let wave)): "advance to wave index \(wave)"
            case .superseded(let serial): "superseded by serial \(serial)"
            case .approved(let signed, let required): "approved: \(signed) of \(required) signatures"
            default: name
            }
        }

        static let all: [String] = ["wait", "advance", "complete", "halt", "pause", "resume", "abort", "superseded", "approved"]
    }

    enum Outcome: Sendable {
        /// The rollout moves: new state, wave, reason; one event of `kind`; whether agents' desired releases change.
        case moves(to: RolloutState, wave: Int, kind: RolloutEventKind, changesDesiredState: Bool, reason: String)
        /// Nothing to do.
        case stays
        /// Refused with this error, whose message is `message`.
        case refused(RolloutTransitionError, message: String)
    }

    struct Row: Sendable, CustomTestStringConvertible {
        var from: RolloutState
        var wave: Int = 0
        var event: Event
        var outcome: Outcome

        var testDescription: String { "\(from) (wave index \(wave)) + \(event)" }
    }

    static let instant = Date(timeIntervalSince1970: 1_800_000_000)
    static let failure = RolloutEvaluator.AgentFailure(agentID: "agt_a", kind: "rolled-back", reason: "crashed at boot")
    static let haltReason = "1 agent(s) failed serial 2, more than the 0 allowed: a (rolled-back): crashed at boot"
    static let abortReason =
        "aborted by alice: 1 agent(s) already run serial 2 and keep it (a) — agents never go back to a lower serial; to move "
        + "them back, publish the previous version as a new serial with `ferry-controller rollback --service web`. The other "
        + "agents stay on serial 1"

    /// Serial 2 of `web`, one agent per wave over three agents (waves 0, 1, 2), stable serial 1.
    static func rollout(_ state: RolloutState, wave: Int = 0) -> RolloutRecord {
        RolloutRecord(
            id: 7,
            service: "web",
            serial: 2,
            version: "2.0.0",
            stableSerial: 1,
            strategy: .oneAtATime,
            waveStable: .seconds(60),
            maxFailures: 0,
            state: state,
            currentWave: wave,
            agentOrder: ["agt_a", "agt_b", "agt_c"],
            createdAt: Date(timeIntervalSince1970: 1_700_000_000),
            updatedAt: Date(timeIntervalSince1970: 1_700_000_000),
            reason: state == .paused ? "paused by bob" : ""
        )
    }

    static func notAllowed(_ action: RolloutAction, _ state: RolloutState, _ hint: String) -> Outcome {
        .refused(
            .actionNotAllowed(action: action, service: "web", serial: 2, state: state),
            message: "cannot \(action.rawValue) the rollout of serial 2 of web: it is \(state.rawValue); \(hint)"
        )
    }

    static func notApplicable(_ decision: RolloutEvaluator.Decision, _ state: RolloutState, wave: Int = 0) -> Outcome {
        let what: String
        switch decision {
        case .advance(let target): what = "advance the rollout of serial 2 of web to wave \(target + 1)"
        case .complete: what = "complete the rollout of serial 2 of web"
        case .halt: what = "halt the rollout of serial 2 of web"
        case .wait: what = "wait on the rollout of serial 2 of web"
        }
        return .refused(
            .decisionNotApplicable(decision: decision, service: "web", serial: 2, state: state, wave: wave),
            message: "cannot \(what): it is \(state.rawValue) at wave \(wave + 1)"
        )
    }

    static let advance = RolloutEvaluator.Decision.advance(toWave: 1)
    static let halt = RolloutEvaluator.Decision.halt(failures: [failure])
    static let superseding = Event.superseded(serial: 3)
    static let supersededReason = "superseded by serial 3 (3.0.0)"
    static let approvedInFull = Event.approved(signed: 2, required: 2)

    static func notAwaiting(_ state: RolloutState, _ why: String) -> Outcome {
        .refused(
            .notAwaitingApproval(service: "web", serial: 2, state: state),
            message: "serial 2 of web is not awaiting approval (its rollout is \(state.rawValue)): \(why)"
        )
    }

    static let table: [Row] = [
        // awaiting approval (two-person rule)
        Row(from: .awaitingApproval, event: .evaluated(.wait), outcome: .stays),
        Row(from: .awaitingApproval, event: .evaluated(advance), outcome: notApplicable(advance, .awaitingApproval)),
        Row(from: .awaitingApproval, event: .evaluated(.complete), outcome: notApplicable(.complete, .awaitingApproval)),
        Row(from: .awaitingApproval, event: .evaluated(halt), outcome: notApplicable(halt, .awaitingApproval)),
        Row(
            from: .awaitingApproval,
            event: .requested(.pause),
            outcome: notAllowed(.pause, .awaitingApproval, "pause applies to a rollout that is rolling")
        ),
        Row(
            from: .awaitingApproval,
            event: .requested(.resume),
            outcome: notAllowed(.resume, .awaitingApproval, "resume applies to a rollout that is paused")
        ),
        Row(
            from: .awaitingApproval,
            event: .requested(.abort),
            outcome: .moves(to: .aborted, wave: 0, kind: .aborted, changesDesiredState: true, reason: abortReason)
        ),
        Row(
            from: .awaitingApproval,
            event: superseding,
            outcome: .moves(to: .superseded, wave: 0, kind: .superseded, changesDesiredState: true, reason: supersededReason)
        ),
        Row(
            from: .awaitingApproval,
            event: approvedInFull,
            outcome: .moves(to: .rolling, wave: 0, kind: .approved, changesDesiredState: true, reason: "")
        ),
        Row(
            from: .awaitingApproval,
            event: .approved(signed: 2, required: 3),
            outcome: .moves(
                to: .awaitingApproval,
                wave: 0,
                kind: .approved,
                changesDesiredState: false,
                reason: "awaiting approval: 2 of 3 release-key signatures"
            )
        ),
        Row(from: .rolling, event: approvedInFull, outcome: notAwaiting(.rolling, "it already met its signature threshold")),
        Row(from: .paused, event: approvedInFull, outcome: notAwaiting(.paused, "it already met its signature threshold")),
        Row(from: .halted, event: approvedInFull, outcome: notAwaiting(.halted, "it already met its signature threshold")),
        Row(from: .completed, wave: 2, event: approvedInFull, outcome: notAwaiting(.completed, "it already met its signature threshold")),
        Row(from: .aborted, event: approvedInFull, outcome: notAwaiting(.aborted, "its rollout was aborted; publish it again as a new serial")),
        Row(
            from: .superseded,
            event: approvedInFull,
            outcome: notAwaiting(.superseded, "a newer release of web replaced it; approve that one")
        ),
        // rolling
        Row(from: .rolling, event: .evaluated(.wait), outcome: .stays),
        Row(
            from: .rolling,
            event: .evaluated(advance),
            outcome: .moves(to: .rolling, wave: 1, kind: .waveAdvanced, changesDesiredState: true, reason: "")
        ),
        Row(
            from: .rolling,
            event: .evaluated(.complete),
            outcome: .moves(to: .completed, wave: 2, kind: .completed, changesDesiredState: true, reason: "")
        ),
        Row(
            from: .rolling,
            event: .evaluated(halt),
            outcome: .moves(to: .halted, wave: 0, kind: .halted, changesDesiredState: false, reason: haltReason)
        ),
        Row(
            from: .rolling,
            event: .requested(.pause),
            outcome: .moves(to: .paused, wave: 0, kind: .paused, changesDesiredState: false, reason: "paused by alice")
        ),
        Row(from: .rolling, event: .requested(.resume), outcome: notAllowed(.resume, .rolling, "it is not paused")),
        Row(
            from: .rolling,
            event: .requested(.abort),
            outcome: .moves(to: .aborted, wave: 0, kind: .aborted, changesDesiredState: true, reason: abortReason)
        ),
        Row(
            from: .rolling,
            event: superseding,
            outcome: .moves(to: .superseded, wave: 0, kind: .superseded, changesDesiredState: true, reason: supersededReason)
        ),
        // paused
        Row(from: .paused, event: .evaluated(.wait), outcome: .stays),
        Row(from: .paused, event: .evaluated(advance), outcome: notApplicable(advance, .paused)),
        Row(from: .paused, event: .evaluated(.complete), outcome: notApplicable(.complete, .paused)),
        Row(
            from: .paused,
            event: .evaluated(halt),
            outcome: .moves(to: .halted, wave: 0, kind: .halted, changesDesiredState: false, reason: haltReason)
        ),
        Row(from: .paused, event: .requested(.pause), outcome: notAllowed(.pause, .paused, "it is already paused")),
        Row(
            from: .paused,
            event: .requested(.resume),
            outcome: .moves(to: .rolling, wave: 0, kind: .resumed, changesDesiredState: false, reason: "")
        ),
        Row(
            from: .paused,
            event: .requested(.abort),
            outcome: .moves(to: .aborted, wave: 0, kind: .aborted, changesDesiredState: true, reason: abortReason)
        ),
        Row(
            from: .paused,
            event: superseding,
            outcome: .moves(to: .superseded, wave: 0, kind: .superseded, changesDesiredState: true, reason: supersededReason)
        ),
        // halted
        Row(from: .halted, event: .evaluated(.wait), outcome: .stays),
        Row(from: .halted, event: .evaluated(advance), outcome: notApplicable(advance, .halted)),
        Row(from: .halted, event: .evaluated(.complete), outcome: notApplicable(.complete, .halted)),
        Row(from: .halted, event: .evaluated(halt), outcome: notApplicable(halt, .halted)),
        Row(from: .halted, event: .requested(.pause), outcome: notAllowed(.pause, .halted, "pause applies to a rollout that is rolling")),
        Row(
            from: .halted,
            event: .requested(.resume),
            outcome: notAllowed(.resume, .halted, "a halted rollout does not resume: publish a fixed release (a new serial) or abort it")
        ),
        Row(
            from: .halted,
            event: .requested(.abort),
            outcome: .moves(to: .aborted, wave: 0, kind: .aborted, changesDesiredState: true, reason: abortReason)
        ),
        Row(
            from: .halted,
            event: superseding,
            outcome: .moves(to: .superseded, wave: 0, kind: .superseded, changesDesiredState: true, reason: supersededReason)
        ),
        // completed (at its last wave)
        Row(from: .completed, wave: 2, event: .evaluated(.wait), outcome: .stays),
        Row(from: .completed, wave: 2, event: .evaluated(advance), outcome: notApplicable(advance, .completed, wave: 2)),
        Row(from: .completed, wave: 2, event: .evaluated(.complete), outcome: notApplicable(.complete, .completed, wave: 2)),
        Row(from: .completed, wave: 2, event: .evaluated(halt), outcome: notApplicable(halt, .completed, wave: 2)),
        Row(from: .completed, wave: 2, event: .requested(.pause), outcome: notAllowed(.pause, .completed, "it already reached every agent")),
        Row(from: .completed, wave: 2, event: .requested(.resume), outcome: notAllowed(.resume, .completed, "it already reached every agent")),
        Row(from: .completed, wave: 2, event: .requested(.abort), outcome: notAllowed(.abort, .completed, "it already reached every agent")),
        Row(from: .completed, wave: 2, event: superseding, outcome: .stays),
        // aborted
        Row(from: .aborted, event: .evaluated(.wait), outcome: .stays),
        Row(from: .aborted, event: .evaluated(advance), outcome: notApplicable(advance, .aborted)),
        Row(from: .aborted, event: .evaluated(.complete), outcome: notApplicable(.complete, .aborted)),
        Row(from: .aborted, event: .evaluated(halt), outcome: notApplicable(halt, .aborted)),
        Row(from: .aborted, event: .requested(.pause), outcome: notAllowed(.pause, .aborted, "pause applies to a rollout that is rolling")),
        Row(from: .aborted, event: .requested(.resume), outcome: notAllowed(.resume, .aborted, "resume applies to a rollout that is paused")),
        Row(
            from: .aborted,
            event: .requested(.abort),
            outcome: notAllowed(.abort, .aborted, "abort applies to a rollout that is awaiting-approval or halted or paused or rolling")
        ),
        Row(from: .aborted, event: superseding, outcome: .stays),
        // superseded
        Row(from: .superseded, event: .evaluated(.wait), outcome: .stays),
        Row(from: .superseded, event: .evaluated(advance), outcome: notApplicable(advance, .superseded)),
        Row(from: .superseded, event: .evaluated(.complete), outcome: notApplicable(.complete, .superseded)),
        Row(from: .superseded, event: .evaluated(halt), outcome: notApplicable(halt, .superseded)),
        Row(from: .superseded, event: .requested(.pause), outcome: notAllowed(.pause, .superseded, "a newer release of web replaced it")),
        Row(from: .superseded, event: .requested(.resume), outcome: notAllowed(.resume, .superseded, "a newer release of web replaced it")),
        Row(from: .superseded, event: .requested(.abort), outcome: notAllowed(.abort, .superseded, "a newer release of web replaced it")),
        Row(from: .superseded, event: superseding, outcome: .stays),
        // Waves are reached one at a time, and only those that exist.
        Row(from: .rolling, event: .evaluated(.advance(toWave: 2)), outcome: notApplicable(.advance(toWave: 2), .rolling)),
        Row(from: .rolling, wave: 2, event: .evaluated(.advance(toWave: 3)), outcome: notApplicable(.advance(toWave: 3), .rolling, wave: 2)),
        Row(from: .rolling, wave: 1, event: .evaluated(.advance(toWave: 1)), outcome: notApplicable(.advance(toWave: 1), .rolling, wave: 1)),
        // Only a newer serial supersedes, open rollout or final.
        Row(
            from: .rolling,
            event: .superseded(serial: 2),
            outcome: .refused(
                .notNewer(service: "web", serial: 2, by: 2),
                message: "serial 2 of web cannot supersede the rollout of serial 2: it is not newer"
            )
        ),
        Row(
            from: .completed,
            wave: 2,
            event: .superseded(serial: 1),
            outcome: .refused(
                .notNewer(service: "web", serial: 2, by: 1),
                message: "serial 1 of web cannot supersede the rollout of serial 2: it is not newer"
            )
        ),
    ]

    static func apply(_ event: Event, to machine: inout RolloutStateMachine) throws(RolloutTransitionError) -> RolloutStateMachine.Action {
        switch event {
        case .evaluated(let decision):
            try machine.evaluated(decision, agentNames: ["agt_a": "a"], at: instant)
        case .requested(let action):
            try machine.requested(action, by: "alice", agentsOnSerial: ["a"], at: instant)
        case .superseded(let serial):
            try machine.superseded(bySerial: serial, version: "\(serial).0.0", at: instant)
        case .approved(let signed, let required):
            try machine.approved(
                by: "alice",
                newKeys: ["k\(signed)"],
                signedBy: (1...signed).map { "k\($0)" },
                required: required,
                agentOrder: machine.rollout.agentOrder,
                at: instant
            )
        }
    }

    @Test func theTableCoversEveryStateAndEvent() {
        let covered = Set(Self.table.map { "\($0.from.rawValue) + \($0.event.name)" })
        let all = Set(RolloutState.allCases.flatMap { state in Event.all.map { "\(state.rawValue) + \($0)" } })
        #expect(all.subtracting(covered).isEmpty, "missing: \(all.subtracting(covered).sorted())")
        #expect(Set(RolloutAction.allCases.map(\.rawValue)).isSubset(of: Set(Event.all)))
    }

    @Test(arguments: table)
    func transition(_ row: Row) throws {
        let before = Self.rollout(row.from, wave: row.wave)
        var machine = RolloutStateMachine(before)
        let result = Result { () throws(RolloutTransitionError) in try Self.apply(row.event, to: &machine) }
        switch (row.outcome, result) {
        case (.moves(let state, let wave, let kind, let changes, let reason), .success(.persist(let transition))):
            let after = machine.rollout
            #expect(after.state == state)
            #expect(after.currentWave == wave)
            #expect(after.reason == reason)
            #expect(after.updatedAt == Self.instant)
            // The facts of the rollout never change.
            #expect(
                [after.id, after.serial, after.stableSerial ?? -1, Int64(after.maxFailures)]
                    == [before.id, before.serial, before.stableSerial ?? -1, Int64(before.maxFailures)]
            )
            #expect(after.agentOrder == before.agentOrder && after.createdAt == before.createdAt && after.strategy == before.strategy)
            #expect(transition.rollout == after)
            #expect(transition.expected == RolloutRevision(before), "the store compares against the state it was decided from")
            #expect(transition.changesDesiredState == changes)
            let event = try #require(transition.events.first)
            #expect(transition.events.count == 1)
            #expect(event.kind == kind && event.serial == 2 && event.service == "web" && event.at == Self.instant && event.agentID == nil)
        case (.stays, .success(.none)):
            #expect(machine.rollout == before)
        case (.refused(let expected, let message), .failure(let error)):
            #expect(error == expected)
            #expect("\(error)" == message)
            #expect(machine.rollout == before, "a refused event changes nothing")
        default:
            Issue.record("expected \(row.outcome), got \(result)")
        }
    }

    /// The messages of the events a rollout records, as operators read them in `GET /v1/events`.
    @Test(arguments: [
        (Event.evaluated(.advance(toWave: 1)), "serial 2 (2.0.0) of web reached wave 2 of 3: 2 of 3 agents"),
        (.evaluated(.complete), "serial 2 (2.0.0) reached all 3 agents of web; it is the stable serial now"),
        (
            .evaluated(.halt(failures: [failure])),
            "rollout of serial 2 (2.0.0) of web halted: \(haltReason). Agents not reached stay on serial 1"
        ),
        (.requested(.pause), "rollout of serial 2 (2.0.0) of web paused by alice"),
        (.requested(.abort), "rollout of serial 2 (2.0.0) of web \(abortReason)"),
        (.superseded(serial: 3), "the rolling rollout of serial 2 (2.0.0) was superseded by serial 3 (3.0.0)"),
    ])
    func eventMessages(_ event: Event, message: String) throws {
        try Self.expectMessage(of: event, from: .rolling, message)
    }

    /// The messages of approvals, from awaiting approval.
    @Test(arguments: [
        (
            Event.approved(signed: 2, required: 2),
            "serial 2 (2.0.0) of web approved by alice (key k2): 2 of 2 release-key signatures; rolling out with strategy "
                + "one-at-a-time: 3 wave(s) over 3 agent(s), each stable for 60 s, halting above 0 failure(s)"
        ),
        (
            .approved(signed: 2, required: 3),
            "serial 2 (2.0.0) of web signed by alice (key k2): 2 of 3 release-key signatures; still awaiting approval"
        ),
        (.superseded(serial: 3), "the awaiting-approval rollout of serial 2 (2.0.0) was superseded by serial 3 (3.0.0)"),
    ])
    func approvalMessages(_ event: Event, message: String) throws {
        try Self.expectMessage(of: event, from: .awaitingApproval, message)
    }

    static func expectMessage(of event: Event, from state: RolloutState, _ message: String) throws {
        var machine = RolloutStateMachine(Self.rollout(state))
        guard case .persist(let transition) = try Self.apply(event, to: &machine) else {
            Issue.record("\(event) did not move the rollout")
            return
        }
        #expect(transition.events.map(\.message) == [message])
    }

    /// A resume's event, from paused.
    @Test func resumeMessage() throws {
        var machine = RolloutStateMachine(Self.rollout(.paused))
        guard case .persist(let transition) = try machine.requested(.resume, by: "alice", at: Self.instant) else {
            Issue.record("resume did not move the rollout")
            return
        }
        #expect(transition.events.map(\.message) == ["rollout of serial 2 (2.0.0) of web resumed by alice"])
    }

    /// An abort before any agent installed the serial, and a halt with many failures (the reason stays bounded).
    @Test func abortWithoutAgentsOnTheSerialAndLongHaltReasons() throws {
        var aborted = RolloutStateMachine(Self.rollout(.rolling))
        _ = try aborted.requested(.abort, by: "alice", at: Self.instant)
        #expect(aborted.rollout.reason == "aborted by alice: every agent stays on serial 1")

        let failures = (0..<12).map {
            RolloutEvaluator.AgentFailure(agentID: "agt_\($0)", kind: "refused", reason: String(repeating: "x", count: 400))
        }
        var halted = RolloutStateMachine(Self.rollout(.rolling))
        _ = try halted.evaluated(.halt(failures: failures), at: Self.instant)
        let reason = halted.rollout.reason
        #expect(
            reason.hasPrefix("12 agent(s) failed serial 2, more than the 0 allowed: agt_0 (refused): \(String(repeating: "x", count: 300)); agt_1")
        )
        #expect(reason.hasSuffix("; and 2 more"))
        #expect(!reason.contains("agt_10"))
    }

    /// Publish: the first state comes from the plan.
    @Test(arguments: [
        (RolloutStrategy.all, 3, RolloutState.completed, "to all 3 agent(s) at once (strategy all)"),
        (.oneAtATime, 0, .completed, "to all 0 agent(s) at once (strategy one-at-a-time)"),
        (
            .waves([34, 100]), 3, .rolling,
            "with strategy waves:34,100: 2 wave(s) over 3 agent(s), each stable for 60 s, halting above 0 failure(s)"
        ),
        (.canary(1), 2, .rolling, "with strategy canary:1: 2 wave(s) over 2 agent(s), each stable for 60 s, halting above 0 failure(s)"),
    ])
    func publish(strategy: RolloutStrategy, agents: Int, state: RolloutState, how: String) throws {
        let release = try StoreTests.record(serial: 4, service: "web")
        let plan = RolloutPlan(parameters: RolloutParameters(strategy: strategy), agentOrder: (0..<agents).map { "agt_\($0)" })
        let opening = RolloutStateMachine.publish(release, plan: plan)
        #expect(opening.state == state)
        #expect(opening.plan == plan)
        #expect(opening.events.map(\.kind) == [.published])
        #expect(opening.events.map(\.message) == ["serial 4 (\(release.version)) of web published by alice \(how)"])
        #expect(opening.events.first?.at == release.createdAt && opening.events.first?.serial == 4)
    }

    /// The states each operator action applies to, as the refusal messages name them.
    @Test func allowedStatesComeFromTheTransitions() {
        #expect(RolloutStateMachine.states(allowing: .pause) == [.rolling])
        #expect(RolloutStateMachine.states(allowing: .resume) == [.paused])
        #expect(RolloutStateMachine.states(allowing: .abort) == [.awaitingApproval, .rolling, .paused, .halted])
    }

    /// Publish with fewer signatures than required: the rollout waits for approval, whatever the strategy.
    @Test(arguments: [RolloutStrategy.all, .oneAtATime])
    func publishAwaitingApproval(strategy: RolloutStrategy) throws {
        var release = try StoreTests.record(serial: 4, service: "web")
        release.signedBy = [String(repeating: "ab", count: 32)]
        release.signaturesRequired = 2
        let plan = RolloutPlan(parameters: RolloutParameters(strategy: strategy), agentOrder: ["agt_0", "agt_1"])
        let opening = RolloutStateMachine.publish(release, plan: plan)
        #expect(opening.state == .awaitingApproval)
        #expect(
            opening.events.map(\.message) == [
                "serial 4 (\(release.version)) of web published by alice awaiting approval: 1 of 2 release-key signatures (signed by "
                    + "abababababab); no agent receives it until `ferry-controller approve --service web --serial 4 --key KEY` adds the "
                    + "missing ones"
            ]
        )
        release.signedBy.append(String(repeating: "cd", count: 32))
        #expect(RolloutStateMachine.publish(release, plan: plan).state == (strategy == .all ? .completed : .rolling))
    }
}
