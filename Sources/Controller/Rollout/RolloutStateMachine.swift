import Foundation

/// The lifecycle of one rollout, decided in one place.
///
/// ```
/// publish ─▶ awaiting-approval ──approved──▶ completed | rolling   fewer signatures than the release threshold
///            awaiting-approval ──approved──▶ awaiting-approval     still short of the threshold (3 of N)
/// publish ─▶ completed                                    strategy `all`, or no agents
/// publish ─▶ rolling ──advance──▶ rolling                 the next wave is stable
///            rolling ──complete─▶ completed               the last wave is stable
///   rolling, paused  ──halt─────▶ halted                  more failures than allowed, or every agent reached failed
///            rolling ──pause────▶ paused ──resume──▶ rolling
///   awaiting-approval, rolling, paused, halted ──abort──────────▶ aborted
///   awaiting-approval, rolling, paused, halted ──newer publish──▶ superseded
/// ```
/// `completed`, `aborted` and `superseded` are final: a newer publish leaves them as they are. A newer publish that
/// awaits approval supersedes only a rollout awaiting approval: one that started goes on until the newer release is
/// approved, which supersedes it then (the store decides which rollouts an event reaches: `insertRelease`,
/// `recordApproval`).
///
/// A machine holds one rollout. Each event (`publish`, `evaluated`, `requested`, `superseded`) changes its state, wave,
/// reason and time, and returns what the caller does: the change to persist with its events, and whether agents'
/// desired releases change. An event the state does not allow throws `RolloutTransitionError` and changes nothing.
/// The store persists only what a machine decided (`Transition` and `Opening` are made here alone); the coordinator
/// performs the actions. Every legal transition is one case of the `switch` in `handle(_:at:)`.
struct RolloutStateMachine: Sendable, Equatable {
    /// The rollout as it stands after the last event.
    private(set) var rollout: RolloutRecord

    /// A machine for a stored rollout.
    init(_ rollout: RolloutRecord) {
        self.rollout = rollout
    }

    /// What the caller does after an event.
    enum Action: Sendable, Equatable {
        /// Nothing changed.
        case none
        /// Write the transition (`ControllerStore.updateRollout(_:)`); once written, drop the rollout's health timers
        /// when it is no longer evaluated, and when `changesDesiredState`, drop the cached desired states and wake the
        /// service's long-polls.
        case persist(Transition)
    }

    /// A change of one rollout, decided by a machine.
    struct Transition: Sendable, Equatable {
        /// The rollout after the change.
        let rollout: RolloutRecord
        /// The state and wave the change was decided from: the store writes it only while they are still the stored
        /// ones (compare-and-set, so two evaluations or replicas never both advance a wave).
        let expected: RolloutRevision
        /// Stored with the change, in the same transaction.
        let events: [RolloutEventDraft]
        /// Whether some agent's desired release changes (a wave reached, completion, abort, a newer publish).
        let changesDesiredState: Bool

        fileprivate init(rollout: RolloutRecord, expected: RolloutRevision, events: [RolloutEventDraft], changesDesiredState: Bool) {
            self.rollout = rollout
            self.expected = expected
            self.events = events
            self.changesDesiredState = changesDesiredState
        }
    }

    /// The start of a rollout, decided by `publish(_:plan:)`: the store inserts it with its release.
    struct Opening: Sendable, Equatable {
        let plan: RolloutPlan
        /// The first state: `awaiting-approval`, `completed` or `rolling`, at wave 0.
        let state: RolloutState
        /// Stored with the rollout: the `published` event.
        let events: [RolloutEventDraft]

        fileprivate init(plan: RolloutPlan, state: RolloutState, events: [RolloutEventDraft]) {
            self.plan = plan
            self.state = state
            self.events = events
        }
    }

    // MARK: Events

    /// Event: `release` is published with `plan`. A release with fewer signatures than it requires
    /// (`signedBy` below `signaturesRequired`: the two-person rule) waits for approval and reaches no agent; otherwise a
    /// rollout with strategy `all`, or without agents, is complete at once, and any other starts rolling at its first
    /// wave. (The service's previous rollout gets `superseded`.)
    static func publish(_ release: ReleaseRecord, plan: RolloutPlan) -> Opening {
        let awaiting = release.isAwaitingApproval
        let (state, how) = awaiting ? (.awaitingApproval, awaitingText(release)) : start(plan)
        let event = RolloutEventDraft(
            at: release.createdAt,
            service: release.service,
            serial: release.serial,
            kind: .published,
            message: "serial \(release.serial) (\(release.version)) of \(release.service) published by \(release.publishedBy) \(how)",
            agentID: nil
        )
        return Opening(plan: plan, state: state, events: [event])
    }

    /// The first state of a rollout that may reach agents, and how it will.
    private static func start(_ plan: RolloutPlan) -> (RolloutState, String) {
        let parameters = plan.parameters
        let agents = plan.agentOrder.count
        if parameters.strategy == .all || plan.agentOrder.isEmpty {
            return (.completed, "to all \(agents) agent(s) at once (strategy \(parameters.strategy))")
        }
        let waves = parameters.strategy.waveSizes(agentCount: agents).count
        return (
            .rolling,
            "with strategy \(parameters.strategy): \(waves) wave(s) over \(agents) agent(s), each stable for "
                + "\(parameters.waveStable.components.seconds) s, halting above \(parameters.maxFailures) failure(s)"
        )
    }

    private static func awaitingText(_ release: ReleaseRecord) -> String {
        "awaiting approval: \(release.signedBy.count) of \(release.signaturesRequired) release-key signatures "
            + "(signed by \(keyList(release.signedBy))); no agent receives it until `ferry-controller approve --service "
            + "\(release.service) --serial \(release.serial) --key KEY` adds the missing ones"
    }

    /// Short key ids for messages.
    static func keyList(_ keyIDs: [String]) -> String {
        keyIDs.isEmpty ? "no key" : keyIDs.map { String($0.prefix(12)) }.joined(separator: ", ")
    }

    /// Event: release-role keys approved the release: its signatures now come from `signedBy` (distinct key ids) of the
    /// `required`. At the threshold the rollout starts as a publish would now (`completed` for strategy `all` or without
    /// agents, `rolling` at wave 0 otherwise) over `agentOrder`, the service's agents at the approval: the members stored
    /// at the publish may have been removed while it waited (all of them: it would complete to no agent and make its
    /// serial the stable one of every agent enrolled since, with no gate), and agents enrolled meanwhile belong to it.
    /// Below the threshold it keeps waiting with its members, and the approval is recorded.
    /// - Parameters:
    ///   - actor: the token that sent the signatures; `newKeys`: the key ids it added.
    /// - Throws: `RolloutTransitionError.notAwaitingApproval` in any other state.
    mutating func approved(
        by actor: String,
        newKeys: [String],
        signedBy: [String],
        required: Int,
        agentOrder: [String],
        at instant: Date
    ) throws(RolloutTransitionError) -> Action {
        try handle(.approved(actor: actor, newKeys: newKeys, signed: signedBy.count, required: required, agentOrder: agentOrder), at: instant)
    }

    /// Event: the evaluator decided (`RolloutEvaluator.decide`). `wait` changes nothing in any state.
    /// - Parameter agentNames: agent names by id, for the reason of a halt (an id stands in for a missing name).
    /// - Throws: `RolloutTransitionError.decisionNotApplicable` when the state or wave does not allow the decision.
    mutating func evaluated(
        _ decision: RolloutEvaluator.Decision,
        agentNames: [String: String] = [:],
        at instant: Date
    ) throws(RolloutTransitionError) -> Action {
        try handle(.evaluated(decision, agentNames: agentNames), at: instant)
    }

    /// Event: an operator asked for `action`.
    /// - Parameters:
    ///   - actor: who asked (the token's name), recorded in the reason and the event.
    ///   - agentsOnSerial: for `abort`, the names of the rollout's agents that already run its serial (they keep it).
    /// - Throws: `RolloutTransitionError.actionNotAllowed`, whose message says why and what to do instead.
    mutating func requested(
        _ action: RolloutAction,
        by actor: String,
        agentsOnSerial: [String] = [],
        at instant: Date
    ) throws(RolloutTransitionError) -> Action {
        try handle(.requested(action, actor: actor, agentsOnSerial: agentsOnSerial), at: instant)
    }

    /// Event: serial `serial` (`version`) of the service was published (or approved, for a release that awaited
    /// approval). An open rollout (awaiting approval, rolling, paused, halted) is superseded; a final one stays as it is.
    /// - Throws: `RolloutTransitionError.notNewer` unless `serial` is above the rollout's.
    mutating func superseded(bySerial serial: Int64, version: String, at instant: Date) throws(RolloutTransitionError) -> Action {
        try handle(.superseded(serial: serial, version: version), at: instant)
    }

    // MARK: Transitions

    private enum Event {
        case approved(actor: String, newKeys: [String], signed: Int, required: Int, agentOrder: [String])
        case evaluated(RolloutEvaluator.Decision, agentNames: [String: String])
        case requested(RolloutAction, actor: String, agentsOnSerial: [String])
        case superseded(serial: Int64, version: String)
    }

    private mutating func handle(_ event: Event, at instant: Date) throws(RolloutTransitionError) -> Action {
        let rollout = rollout
        let sizes = rollout.waveSizes
        let name = "rollout of serial \(rollout.serial) (\(rollout.version)) of \(rollout.service)"
        switch (rollout.state, event) {
        case (_, .evaluated(.wait, _)):
            return .none

        case (.awaitingApproval, .approved(let actor, let keys, let signed, let required, let agentOrder)) where signed >= required:
            let plan = RolloutPlan(
                parameters: RolloutParameters(strategy: rollout.strategy, waveStable: rollout.waveStable, maxFailures: rollout.maxFailures),
                agentOrder: agentOrder
            )
            let (state, how) = Self.start(plan)
            return move(
                to: state,
                wave: 0,
                agentOrder: agentOrder,
                reason: "",
                event: .approved,
                "serial \(rollout.serial) (\(rollout.version)) of \(rollout.service) approved by \(actor) (key \(Self.keyList(keys))): "
                    + "\(signed) of \(required) release-key signatures; rolling out \(how)",
                changesDesiredState: true,
                at: instant
            )

        case (.awaitingApproval, .approved(let actor, let keys, let signed, let required, _)):
            let reason = "awaiting approval: \(signed) of \(required) release-key signatures"
            return move(
                to: .awaitingApproval,
                reason: reason,
                event: .approved,
                "serial \(rollout.serial) (\(rollout.version)) of \(rollout.service) signed by \(actor) (key \(Self.keyList(keys))): "
                    + "\(signed) of \(required) release-key signatures; still awaiting approval",
                changesDesiredState: false,
                at: instant
            )

        case (let state, .approved):
            throw .notAwaitingApproval(service: rollout.service, serial: rollout.serial, state: state)

        case (.rolling, .evaluated(.advance(let wave), _)) where wave == rollout.currentWave + 1 && wave < sizes.count:
            return move(
                to: .rolling,
                wave: wave,
                reason: "",
                event: .waveAdvanced,
                "serial \(rollout.serial) (\(rollout.version)) of \(rollout.service) reached wave \(wave + 1) of \(sizes.count): "
                    + "\(sizes[wave]) of \(rollout.agentOrder.count) agents",
                changesDesiredState: true,
                at: instant
            )

        case (.rolling, .evaluated(.complete, _)):
            return move(
                to: .completed,
                wave: max(0, sizes.count - 1),
                reason: "",
                event: .completed,
                "serial \(rollout.serial) (\(rollout.version)) reached all \(rollout.agentOrder.count) agents of \(rollout.service); "
                    + "it is the stable serial now",
                changesDesiredState: true,
                at: instant
            )

        case (.rolling, .evaluated(.halt(let failures), let names)), (.paused, .evaluated(.halt(let failures), let names)):
            // The first few, each reason bounded: the reason is stored and shown on one line of `rollout status`.
            var list = failures.prefix(10).map { "\(names[$0.agentID] ?? $0.agentID) (\($0.kind)): \($0.reason.prefix(300))" }
                .joined(separator: "; ")
            if failures.count > 10 { list += "; and \(failures.count - 10) more" }
            // Within `maxFailures`, a halt means no agent reached is healthy (`RolloutEvaluator.decide`).
            let why =
                failures.count > rollout.maxFailures
                ? "more than the \(rollout.maxFailures) allowed" : "and no agent reached is healthy on it"
            let reason =
                failures.isEmpty && rollout.agentOrder.isEmpty
                ? "every agent of the rollout was removed before one was healthy on serial \(rollout.serial)"
                : "\(failures.count) agent(s) failed serial \(rollout.serial), \(why): \(list)"
            // Halting only stops advancement: reached agents keep the serial they were given, the others the stable
            // one, exactly as before.
            return move(
                to: .halted,
                reason: reason,
                event: .halted,
                "\(name) halted: \(reason). Agents not reached stay on \(Self.serialText(rollout.stableSerial))",
                changesDesiredState: false,
                at: instant
            )

        case (.rolling, .requested(.pause, let actor, _)):
            return move(
                to: .paused,
                reason: "paused by \(actor)",
                event: .paused,
                "\(name) paused by \(actor)",
                changesDesiredState: false,
                at: instant
            )

        case (.paused, .requested(.resume, let actor, _)):
            return move(to: .rolling, reason: "", event: .resumed, "\(name) resumed by \(actor)", changesDesiredState: false, at: instant)

        case (.rolling, .requested(.abort, let actor, let running)), (.paused, .requested(.abort, let actor, let running)),
            (.halted, .requested(.abort, let actor, let running)), (.awaitingApproval, .requested(.abort, let actor, let running)):
            let reason = Self.abortReason(rollout, by: actor, agentsOnSerial: running)
            return move(to: .aborted, reason: reason, event: .aborted, "\(name) \(reason)", changesDesiredState: true, at: instant)

        case (.rolling, .superseded(let serial, let version)), (.paused, .superseded(let serial, let version)),
            (.halted, .superseded(let serial, let version)), (.awaitingApproval, .superseded(let serial, let version)):
            guard serial > rollout.serial else {
                throw .notNewer(service: rollout.service, serial: rollout.serial, by: serial)
            }
            let reason = "superseded by serial \(serial) (\(version))"
            return move(
                to: .superseded,
                reason: reason,
                event: .superseded,
                "the \(rollout.state.rawValue) rollout of serial \(rollout.serial) (\(rollout.version)) was \(reason)",
                changesDesiredState: true,
                at: instant
            )

        case (.completed, .superseded(let serial, _)), (.aborted, .superseded(let serial, _)), (.superseded, .superseded(let serial, _)):
            guard serial > rollout.serial else {
                throw .notNewer(service: rollout.service, serial: rollout.serial, by: serial)
            }
            return .none

        case (let state, .requested(let action, _, _)):
            throw .actionNotAllowed(action: action, service: rollout.service, serial: rollout.serial, state: state)

        case (let state, .evaluated(let decision, _)):
            throw .decisionNotApplicable(
                decision: decision,
                service: rollout.service,
                serial: rollout.serial,
                state: state,
                wave: rollout.currentWave
            )
        }
    }

    /// Moves the rollout to `state` and returns the transition to persist.
    private mutating func move(
        to state: RolloutState,
        wave: Int? = nil,
        agentOrder: [String]? = nil,
        reason: String,
        event kind: RolloutEventKind,
        _ message: String,
        changesDesiredState: Bool,
        at instant: Date
    ) -> Action {
        let before = rollout
        rollout = RolloutRecord(
            id: before.id,
            service: before.service,
            serial: before.serial,
            version: before.version,
            stableSerial: before.stableSerial,
            strategy: before.strategy,
            waveStable: before.waveStable,
            maxFailures: before.maxFailures,
            state: state,
            currentWave: wave ?? before.currentWave,
            agentOrder: agentOrder ?? before.agentOrder,
            createdAt: before.createdAt,
            updatedAt: instant,
            reason: reason
        )
        let event = RolloutEventDraft(at: instant, service: before.service, serial: before.serial, kind: kind, message: message, agentID: nil)
        return .persist(
            Transition(rollout: rollout, expected: RolloutRevision(before), events: [event], changesDesiredState: changesDesiredState)
        )
    }

    /// Says what an abort leaves where: agents already on the serial cannot be moved back without a new signature.
    private static func abortReason(_ rollout: RolloutRecord, by actor: String, agentsOnSerial running: [String]) -> String {
        let stable = serialText(rollout.stableSerial)
        guard !running.isEmpty else { return "aborted by \(actor): every agent stays on \(stable)" }
        return "aborted by \(actor): \(running.count) agent(s) already run serial \(rollout.serial) and keep it "
            + "(\(running.joined(separator: ", "))) — agents never go back to a lower serial; to move them back, publish the "
            + "previous version as a new serial with `ferry-controller rollback --service \(rollout.service)`. The other agents "
            + "stay on \(stable)"
    }

    /// "serial 4", or "no release" when the service had none before.
    static func serialText(_ serial: Int64?) -> String {
        serial.map { "serial \($0)" } ?? "no release"
    }

    /// The states from which an operator may ask for `action`, read from the transitions themselves.
    static func states(allowing action: RolloutAction) -> [RolloutState] {
        RolloutState.allCases.filter { state in
            var probe = RolloutStateMachine(.probe(in: state))
            return (try? probe.requested(action, by: "", at: Date(timeIntervalSince1970: 0))) != nil
        }
    }
}

extension RolloutRecord {
    /// A rollout of one agent in `state`, to ask the machine what `state` allows.
    fileprivate static func probe(in state: RolloutState) -> RolloutRecord {
        let origin = Date(timeIntervalSince1970: 0)
        return RolloutRecord(
            id: 0,
            service: "probe",
            serial: 2,
            version: "",
            stableSerial: 1,
            strategy: .oneAtATime,
            waveStable: .zero,
            maxFailures: 0,
            state: state,
            currentWave: 0,
            agentOrder: ["probe"],
            createdAt: origin,
            updatedAt: origin,
            reason: ""
        )
    }
}
