import Foundation
import Shared

/// A stored rollout: how one release of a service reaches that service's agents.
///
/// Its `state`, `currentWave`, `reason` and `updatedAt` are constants: a new value comes only from
/// `RolloutStateMachine`, and the store writes only what a machine decided.
struct RolloutRecord: Sendable, Equatable {
    var id: Int64
    var service: String
    var serial: Int64
    /// The release's version (joined from `releases`).
    var version: String
    /// What agents the rollout has not reached receive: the service's last completed serial (or latest `all` one).
    /// `nil` when the service had no release before.
    var stableSerial: Int64?
    var strategy: RolloutStrategy
    var waveStable: Duration
    var maxFailures: Int
    let state: RolloutState
    /// Index (0-based) of the last wave reached.
    let currentWave: Int
    /// Agent ids in rollout order: the service's agents at publish time (at its approval, for a release that waited for
    /// one), sorted by name then id; a removed agent leaves it.
    var agentOrder: [String]
    var createdAt: Date
    /// When the state last changed.
    let updatedAt: Date
    /// Why the rollout is in its state (halt reasons, who paused or aborted), or empty.
    let reason: String

    /// Cumulative wave sizes over `agentOrder`.
    var waveSizes: [Int] { strategy.waveSizes(agentCount: agentOrder.count) }

    /// How many agents (a prefix of `agentOrder`) the rollout has reached.
    var reachedCount: Int {
        if state == .completed { return agentOrder.count }
        if state == .awaitingApproval { return 0 }
        return Self.reachedCount(sizes: waveSizes, wave: currentWave)
    }

    /// How many agents the waves up to `wave` (0-based, held to the waves there are) reach, of waves of `sizes`.
    static func reachedCount(sizes: [Int], wave: Int) -> Int {
        sizes.isEmpty ? 0 : sizes[min(max(wave, 0), sizes.count - 1)]
    }

    /// The agents reached so far.
    var reachedAgents: ArraySlice<String> { agentOrder.prefix(reachedCount) }

    /// The rollout that decides what each service's agents receive, among `current` (`ControllerStore
    /// .currentRollouts`): one that started and is still open (rolling, paused, halted) below a release awaiting
    /// approval — which reaches no agent, nor does a later one that was aborted or superseded without starting — or
    /// else the latest. (Only a publish awaiting approval leaves an open started rollout below it; one that starts, at
    /// its publish or its approval, supersedes it.)
    static func governing(_ current: [RolloutRecord]) -> [String: RolloutRecord] {
        var chosen: [String: RolloutRecord] = [:]
        for rollout in current where chosen[rollout.service] == nil || rollout.state.isStartedAndOpen {
            chosen[rollout.service] = rollout
        }
        return chosen
    }

    /// The serial this rollout means `agentID` to receive (before the "never lower than what it runs" rule of the
    /// selector): the new one once reached, the stable one otherwise; everyone gets the new one once completed, and
    /// the stable one after an abort.
    /// - Parameter reached: `reachedAgents` as a set, when the caller keeps one: the selector asks for every agent of a
    ///   fleet, and `reachedAgents` is a scan of an array whose wave sizes are recomputed each time (for one-at-a-time
    ///   over 10,000 agents, an array of 10,000 sizes per question).
    func intendedSerial(for agentID: String, reached: Set<String>? = nil) -> Int64? {
        switch state {
        case .completed: serial
        case .aborted, .superseded, .awaitingApproval: stableSerial
        case .rolling, .paused, .halted: (reached?.contains(agentID) ?? reachedAgents.contains(agentID)) ? serial : stableSerial
        }
    }
}

/// How a publish wants its release to reach the service's agents (`RolloutStateMachine.publish(_:plan:)` decides the
/// rollout's first state from it).
struct RolloutPlan: Sendable, Equatable {
    var parameters: RolloutParameters
    /// The service's agents at publish time (or at the approval), in rollout order.
    var agentOrder: [String]
}

/// The result of storing a release with its rollout.
struct PublishedRollout: Sendable, Equatable {
    /// The new rollout.
    var rollout: RolloutRecord
    /// The service's previous rollout when this publish superseded it (as it was before).
    var superseded: RolloutRecord?
}

/// What happened to a rollout or a release on an agent, kept for operators (dashboard, `GET /v1/events`).
enum RolloutEventKind: String, Sendable, Equatable, CaseIterable {
    case published
    case waveAdvanced = "wave-advanced"
    case completed
    case halted
    case paused
    case resumed
    case aborted
    case superseded
    /// An agent rolled back a serial that failed its health gate.
    case rolledBack = "rolled-back"
    /// An agent refused a serial (signature, expiry, older serial...).
    case refused
    /// A release-role key approved a release awaiting approval (two-person rule).
    case approved
}

/// An event to store.
struct RolloutEventDraft: Sendable, Equatable {
    var at: Date
    var service: String
    var serial: Int64?
    var kind: RolloutEventKind
    var message: String
    var agentID: String?
}

extension RolloutEventDraft {
    /// The events `report` brings: one per failure (rolled back or refused) that `previous`, the agent's statuses
    /// before it, did not hold. Stored in the transaction that stores the report (`StatusWrite.events`): were they
    /// written after it, a failed write would lose them for good, since the next report's failures are known by then.
    static func newFailures(in report: StatusReport, from agent: AgentRecord, previous: [ServiceStatusRecord], at instant: Date) -> [Self] {
        var known: [String: Set<String>] = [:]
        for record in previous {
            known[record.status.service] = Set(record.status.failures.map { "\($0.serial) \($0.kind)" })
        }
        var events: [Self] = []
        for status in report.services {
            for failure in status.failures where !(known[status.service]?.contains("\(failure.serial) \(failure.kind)") ?? false) {
                let kind: RolloutEventKind = failure.kind == "rolled-back" ? .rolledBack : .refused
                let verb = kind == .rolledBack ? "rolled back" : "refused"
                events.append(
                    Self(
                        at: instant,
                        service: status.service,
                        serial: failure.serial,
                        kind: kind,
                        message: "agent \(agent.name) \(verb) serial \(failure.serial) of \(status.service): \(failure.reason)",
                        agentID: agent.id
                    )
                )
            }
        }
        return events
    }
}

/// A stored event.
struct RolloutEvent: Sendable, Equatable {
    var id: Int64
    var at: Date
    var service: String
    var serial: Int64?
    var kind: RolloutEventKind
    var message: String
    var agentID: String?
}

/// A rollout's state as last read, for compare-and-set updates.
struct RolloutRevision: Sendable, Equatable {
    var state: RolloutState
    var currentWave: Int
    /// The members: a removal takes agents out (`SQLControllerStore.dropFromOpenRollouts`), and a decision counted over
    /// the members before it is not written over the members after it.
    var agentOrder: [String]

    init(_ rollout: RolloutRecord) {
        state = rollout.state
        currentWave = rollout.currentWave
        agentOrder = rollout.agentOrder
    }
}

/// One release of one service.
struct ReleaseKey: Sendable, Hashable {
    var service: String
    var serial: Int64
}
