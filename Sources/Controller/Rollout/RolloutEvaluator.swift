import Foundation
import Shared

/// Where one agent stands in a rollout, read from its latest status for the rollout's service.
struct RolloutAgentStanding: Sendable, Equatable {
    enum Progress: String, Sendable, Equatable {
        /// Not on the new serial (not reached yet, downloading, or never reported).
        case pending
        /// Runs the new serial, not (yet) reported running and healthy.
        case updated
        /// Runs the new serial, running and healthy.
        case healthy
        /// Refused or rolled back the new serial, or failed on it.
        case failed
    }

    var progress: Progress
    /// For `failed`: `rolled-back`, `refused` or the phase (`failed`, `rolled-back`).
    var failureKind: String?
    /// For `failed`: the agent's reason.
    var failureReason: String?

    /// Reads `status` against the rollout of `serial`.
    ///
    /// An agent that runs the serial is never `failed`, even if it once refused it for a reason that went away.
    /// Failed means: its report lists a failure (refused or rolled back) for the serial. Its phase alone says nothing
    /// of the serial: an agent with nothing installed reports `failed` while a download of it fails (it tries again at
    /// every pass), and `failed` with a newer target when a release it was checking was superseded and could not be
    /// put back. Counted, one 503 from the artifact store halted a first rollout for good. Every failure of the
    /// release itself (rolled back, taken out, refused) is in the list, also from agents before this rule.
    init(status: ServiceStatus?, serial: Int64) {
        guard let status else {
            self.init(progress: .pending)
            return
        }
        if status.serial == serial && status.phase == .running {
            self.init(progress: status.health == .healthy ? .healthy : .updated)
            return
        }
        if let failure = status.failures.first(where: { $0.serial == serial && ($0.kind == "rolled-back" || $0.kind == "refused") }) {
            self.init(progress: .failed, failureKind: failure.kind, failureReason: failure.reason)
            return
        }
        self.init(progress: status.serial == serial ? .updated : .pending)
    }

    init(progress: Progress, failureKind: String? = nil, failureReason: String? = nil) {
        self.progress = progress
        self.failureKind = failureKind
        self.failureReason = failureReason
    }
}

/// The pure rule that moves a rollout: from its record, the agents' latest statuses and how long each has been seen
/// healthy, decide whether to advance, complete or halt.
enum RolloutEvaluator {
    /// What to do with a rollout now.
    enum Decision: Sendable, Equatable {
        /// Nothing yet.
        case wait
        /// Reach wave `index` (0-based).
        case advance(toWave: Int)
        /// Every wave is reached and stable: the serial becomes the service's stable serial.
        case complete
        /// More agents failed than the rollout tolerates.
        case halt(failures: [AgentFailure])
    }

    /// A failed agent, for the halt reason and event.
    struct AgentFailure: Sendable, Equatable {
        var agentID: String
        var kind: String
        var reason: String
    }

    /// How much earlier than it was a timer can come back from the store, in seconds: timers are stored in whole
    /// milliseconds, rounded to the nearest (`StoredTime`). A timer read back (a new leader, a restart, a leader
    /// resuming after a pause) is stable this much early rather than one tick late.
    static let storedTimePrecision: TimeInterval = 0.001

    /// Whether `status` is recent enough to count: a status older than `staleAfter` says nothing about now, nor does
    /// one stamped that far after now (the controller's clock stepped back: NTP, a restored VM). Such a status counted
    /// as fresh until the clock caught up, so an agent that died after the step stayed healthy for that long.
    static func isFresh(_ status: ServiceStatusRecord, now: Date, staleAfter: Duration) -> Bool {
        abs(now.timeIntervalSince(status.updatedAt)) <= Double(staleAfter.components.seconds)
    }

    /// Whether `status` shows the rollout's serial running, healthy and fresh.
    static func isHealthy(_ status: ServiceStatusRecord?, serial: Int64, now: Date, staleAfter: Duration) -> Bool {
        guard let status, isFresh(status, now: now, staleAfter: staleAfter) else { return false }
        return RolloutAgentStanding(status: status.status, serial: serial).progress == .healthy
    }

    /// The "healthy since" timers after looking at `statuses`: agents healthy now keep their time (or start at `now`),
    /// the others lose it.
    static func updatedTimers(
        _ timers: [String: Date],
        rollout: RolloutRecord,
        statuses: [String: ServiceStatusRecord],
        now: Date,
        staleAfter: Duration
    ) -> [String: Date] {
        var result: [String: Date] = [:]
        for id in rollout.agentOrder where isHealthy(statuses[id], serial: rollout.serial, now: now, staleAfter: staleAfter) {
            // Never after now: a timer started before the clock stepped back would hold its wave until the clock
            // caught up (an hour for an hour's step).
            result[id] = min(timers[id] ?? now, now)
        }
        return result
    }

    /// The agents of the rollout that failed its serial, in rollout order.
    static func failures(of rollout: RolloutRecord, statuses: [String: ServiceStatusRecord]) -> [AgentFailure] {
        rollout.agentOrder.compactMap { id in
            let standing = RolloutAgentStanding(status: statuses[id]?.status, serial: rollout.serial)
            guard standing.progress == .failed else { return nil }
            return AgentFailure(agentID: id, kind: standing.failureKind ?? "failed", reason: standing.failureReason ?? "")
        }
    }

    /// Decides for a rolling or paused rollout (anything else: `.wait`).
    ///
    /// Failures are counted over all agents of the rollout; more than `maxFailures` halts, also when paused. A rolling
    /// rollout advances when every agent of the reached waves that has not failed has been healthy on the serial, with
    /// fresh reports, for `waveStable`: failures up to `maxFailures` are tolerated, so they do not hold a wave back. But
    /// when every reached agent failed, it halts instead of advancing or completing.
    static func decide(
        _ rollout: RolloutRecord,
        statuses: [String: ServiceStatusRecord],
        healthySince: [String: Date],
        now: Date,
        staleAfter: Duration
    ) -> Decision {
        guard rollout.state.isActive else { return .wait }
        let failures = failures(of: rollout, statuses: statuses)
        if failures.count > rollout.maxFailures { return .halt(failures: failures) }
        guard rollout.state == .rolling else { return .wait }
        let sizes = rollout.waveSizes
        // No member left (each removed while it rolled: an instance refresh replaced the fleet): nothing showed the
        // serial good. Completed, it became the stable serial of every agent enrolled since, with no gate at all.
        guard !sizes.isEmpty else { return .halt(failures: []) }
        let failed = Set(failures.map(\.agentID))
        // The reached agents, and any other member that runs the serial: a removal steps the rollout back to a smaller
        // wave, and the agents of the waves it left keep the serial they installed. Judged with the others: an agent
        // unhealthy on the serial beyond the reached waves did not hold the rollout back, which then went to every agent.
        // One pass, no set: this runs at every round of reports (`reachedCount` from the sizes in hand, as a rolling
        // rollout's `reachedCount` is).
        let reachedCount = RolloutRecord.reachedCount(sizes: sizes, wave: rollout.currentWave)
        for (index, id) in rollout.agentOrder.enumerated()
        where (index < reachedCount || statuses[id]?.status.serial == rollout.serial) && !failed.contains(id) {
            guard isHealthy(statuses[id], serial: rollout.serial, now: now, staleAfter: staleAfter), let since = healthySince[id],
                now.timeIntervalSince(since) + storedTimePrecision >= Double(rollout.waveStable.components.seconds)
            else { return .wait }
        }
        // Failures within `maxFailures` do not hold a wave back, but a rollout on which no agent is healthy has shown
        // nothing good. Advanced, its serial went to the next wave on no evidence (`canary:1&maxFailures=1` whose
        // canary failed: every other agent at once); completed, it would be the service's stable serial, handed to
        // every agent enrolled later and to those the next rollout has not reached.
        let reached = rollout.agentOrder.prefix(reachedCount)
        if !reached.isEmpty, reached.allSatisfy(failed.contains) { return .halt(failures: failures) }
        if rollout.currentWave + 1 < sizes.count { return .advance(toWave: rollout.currentWave + 1) }
        return .complete
    }
}
