import Foundation
import Synchronization

/// Notices one agent identity (id and token) in use by two running agents: a machine image baked after the agent
/// enrolled (every instance launched from it is "already enrolled" as the same agent), a copied state directory, or a
/// stolen token.
///
/// The sign is the hostname of the reports going back and forth. A renamed host reports `a`, then `b` from then on; a
/// restarted agent keeps its hostname. Two agents sharing an identity report `a`, `b`, `a`, `b`... Their long-polls
/// also end each other's (one parked poll per agent), and each one's reports overwrite the other's statuses, so a
/// failed health gate on one can read as healthy: a rollout decided on those reports is decided on a mix of two hosts.
///
/// A conflict is `switchBacks` returns to the hostname before the last one within `window`. It is said once per
/// `window` per agent, while it lasts. Kept in memory, per controller; with several controllers each also counts the
/// switches the others stored in between (`observe`'s `before`, from the agents row), so every controller that
/// receives either host's reports notices the conflict. Each switch-back of a standing conflict is also stored on the
/// agents row (`ControllerStore.recordIdentityConflict`), which is what a controller that receives neither host's
/// reports, or one just restarted, shows.
final class AgentIdentityWatch: Sendable {
    /// What was noticed: the agent and the two hostnames reporting as it.
    struct Conflict: Sendable, Equatable {
        var agentID: String
        var hostnames: [String]
    }

    /// A conflict as the agent's page shows it while it lasts: the two hostnames, when it was first said and when a
    /// report last switched back.
    struct Standing: Sendable, Equatable {
        var hostnames: [String]
        var noticedAt: Date
        var lastSwitchAt: Date

        /// One conflict from two views of it (this controller's and the database's): the earlier notice, the later
        /// switch-back and its hostnames.
        static func combined(_ first: Standing?, _ second: Standing?) -> Standing? {
            guard let first, let second else { return first ?? second }
            let later = first.lastSwitchAt >= second.lastSwitchAt ? first : second
            return Standing(hostnames: later.hostnames, noticedAt: min(first.noticedAt, second.noticedAt), lastSwitchAt: later.lastSwitchAt)
        }
    }

    private struct Entry {
        var current: String
        var previous: String?
        var switchBacks: [Date] = []
        var saidAt: Date?
        /// When the conflict now standing was noticed (kept while switch-backs go on within the window).
        var noticedAt: Date?
        /// The two hostnames of the last switch-back that made the conflict.
        var conflictHostnames: [String] = []
        /// The last report observed.
        var seenAt: Date
    }

    private struct Followed {
        var entries: [String: Entry] = [:]
        /// When the last sweep of silent agents ran (`sweep`).
        var sweptAt: Date?
    }

    let window: TimeInterval
    let switchBacks: Int
    /// Agents followed at most (a bound on memory, far above a fleet's size). At it, the agents silent for a whole
    /// window without a standing conflict are let go (at most one sweep per window); an agent not yet followed is
    /// followed only once there is room. Instances an autoscaling fleet replaced without removing them used to fill
    /// it for good, and new agents were then never followed.
    let capacity: Int
    private let followed = Mutex(Followed())

    init(window: TimeInterval = 600, switchBacks: Int = 2, capacity: Int = 200_000) {
        self.window = window
        self.switchBacks = max(1, switchBacks)
        self.capacity = capacity
    }

    /// Records that a report of `agentID` named `hostname` at `instant`; the conflict, when this report makes one to say.
    /// An empty hostname says nothing.
    ///
    /// `before` is the hostname the agent was known by just before this report: the one its last stored report named,
    /// whichever controller stored it (`StatusWriteResult.hostnameBefore`). Behind a load balancer that keeps each
    /// connection on one controller, each of two hosts sharing an identity reports to its own controller, and a
    /// controller that judged only the reports it received would never see a switch; `before` carries the other host's
    /// turns into its count. On a single controller it is the hostname this watch saw last, and changes nothing.
    func observe(agentID: String, hostname: String, before: String? = nil, at instant: Date) -> Conflict? {
        followed.withLock { followed -> Conflict? in
            let earlier = before.flatMap { step(&followed, agentID: agentID, hostname: $0, at: instant) }
            return step(&followed, agentID: agentID, hostname: hostname, at: instant) ?? earlier
        }
    }

    private func step(_ followed: inout Followed, agentID: String, hostname: String, at instant: Date) -> Conflict? {
        guard !hostname.isEmpty else { return nil }
        guard var entry = followed.entries[agentID] else {
            if followed.entries.count >= capacity { sweep(&followed, at: instant) }
            if followed.entries.count < capacity { followed.entries[agentID] = Entry(current: hostname, seenAt: instant) }
            return nil
        }
        entry.seenAt = max(entry.seenAt, instant)
        defer { followed.entries[agentID] = entry }
        guard hostname != entry.current else { return nil }
        let other = entry.current
        let returned = hostname == entry.previous
        entry.previous = other
        entry.current = hostname
        guard returned else { return nil }
        // A conflict that stood lapsed once a whole window went by without a switch-back: a new one starts afresh.
        if let last = entry.switchBacks.last, instant.timeIntervalSince(last) >= window { entry.noticedAt = nil }
        // Only the last `switchBacks` count (the test below and `.last` above): one agent token flipping its hostname
        // on every report must not grow this list, filtered under the lock every report takes, by a report each.
        entry.switchBacks = Array((entry.switchBacks.filter { instant.timeIntervalSince($0) < window } + [instant]).suffix(switchBacks))
        guard entry.switchBacks.count >= switchBacks else { return nil }
        if entry.noticedAt == nil { entry.noticedAt = instant }
        entry.conflictHostnames = [other, hostname].sorted()
        if let said = entry.saidAt, instant.timeIntervalSince(said) < window { return nil }
        entry.saidAt = instant
        return Conflict(agentID: agentID, hostnames: entry.conflictHostnames)
    }

    /// Lets go of the agents that sent nothing for a whole window and have no conflict standing: what they would need
    /// to be followed again is their next report. At most once per window, so a fleet really past the capacity does not
    /// pay a sweep per report.
    private func sweep(_ followed: inout Followed, at instant: Date) {
        if let swept = followed.sweptAt, instant.timeIntervalSince(swept) < window { return }
        followed.sweptAt = instant
        followed.entries = followed.entries.filter { _, entry in
            let standing = entry.switchBacks.last.map { instant.timeIntervalSince($0) < window } ?? false
            return standing || instant.timeIntervalSince(entry.seenAt) < window
        }
    }

    /// How many agents are followed.
    var followedCount: Int { followed.withLock { $0.entries.count } }

    /// The agents followed.
    var followedAgentIDs: Set<String> { followed.withLock { Set($0.entries.keys) } }

    /// The switch-back instants kept for `agentID` (at most `switchBacks`).
    func keptSwitchBacks(agentID: String) -> Int { followed.withLock { $0.entries[agentID]?.switchBacks.count ?? 0 } }

    /// The conflict of `agentID` standing at `instant`: one was noticed, and a report switched back within `window`
    /// before `instant`. Once the two hosts stop taking turns (one of them stopped), it lapses after `window`.
    func standing(agentID: String, at instant: Date) -> Standing? {
        followed.withLock { followed -> Standing? in
            guard let entry = followed.entries[agentID], let noticed = entry.noticedAt, let last = entry.switchBacks.last,
                instant.timeIntervalSince(last) < window
            else { return nil }
            return Standing(hostnames: entry.conflictHostnames, noticedAt: noticed, lastSwitchAt: last)
        }
    }

    /// Whether a conflict whose last switch-back was at `lastSwitchAt` still stands at `instant` (one stored by any
    /// controller, say): a switch-back within `window`.
    func stands(lastSwitchAt: Date, at instant: Date) -> Bool {
        instant.timeIntervalSince(lastSwitchAt) < window
    }

    /// Forgets `agentID` (removed, or enrolled afresh under a new identity).
    func forget(agentID: String) {
        _ = followed.withLock { $0.entries.removeValue(forKey: agentID) }
    }
}
