import Foundation
import Logging
import ServiceLifecycle
import Shared

/// Removes the agents that sent no status report for `removeSilentAgentsAfter` (`serve --remove-silent-agents-after`),
/// as `agents remove` would: an autoscaling group terminates instances all day, and their agents otherwise stay in the
/// fleet view (stale), in the database and in every controller's memory for good.
///
/// Silence is judged by the store's last-seen times, which every controller on the database writes, and only when it
/// can be the agents' own:
/// - not before this controller has run `settle` (at least three poll intervals, 5 minutes at least) since it started,
///   its last failed status batch or its last failed sweep: while reports cannot be stored, every agent looks silent;
/// - not while no agent at all reported within `settle`: after a backup was restored, or with this controller's clock
///   ahead, every last report looks old;
/// - never an agent parked in a long-poll here: it is alive, whatever becomes of its reports.
///
/// Several controllers may sweep at once: a removal is one `DELETE` that checks the silence again, and the others hear
/// of it from the commit.
struct SilentAgentRemoval: Service {
    let core: ControllerCore
    let after: Duration
    /// Started when the controller started.
    let started: ContinuousClock.Instant

    /// Agents removed per sweep at most (the next sweep takes the rest).
    static let batch = 1_000

    /// The shortest `after` accepted: far past the three poll intervals that make an agent stale.
    static let minimum: Duration = .seconds(3_600)

    /// How long the controller must have run without a failed status batch or sweep before it removes agents, and
    /// within how long of now some agent must have reported.
    var settle: Duration { max(core.configuration.pollInterval * 3, .seconds(300)) }

    /// How often it looks: a tenth of `after`, from a minute to an hour.
    var interval: Duration { min(max(after / 10, .seconds(60)), .seconds(3_600)) }

    func run() async throws {
        do {
            try await cancelWhenGracefulShutdown {
                var quietSince = started
                var last = (wall: core.now(), monotonic: ContinuousClock.now)
                while !Task.isCancelled {
                    try await Task.sleep(for: interval)
                    let now = (wall: core.now(), monotonic: ContinuousClock.now)
                    defer { last = now }
                    if Self.mustSettleAgain(
                        wallElapsed: now.wall.timeIntervalSince(last.wall),
                        monotonicElapsed: now.monotonic - last.monotonic,
                        interval: interval
                    ) {
                        quietSince = now.monotonic
                        core.logger.warning(
                            "The clock moved unlike the time that passed (stepped, or this controller was paused): removing no agent for its silence for \(settle.components.seconds) s"
                        )
                        continue
                    }
                    if let failed = core.statusReports.lastFailure, failed > quietSince { quietSince = failed }
                    do {
                        _ = try await sweep(at: core.now(), quiet: .now - quietSince)
                    } catch {
                        quietSince = .now
                        core.logger.warning("Removing silent agents failed; trying again at the next sweep", metadata: ["error.message": "\(error)"])
                    }
                }
            }
        } catch is CancellationError {
            core.logger.debug("Silent agent removal stopped")
        }
    }

    /// Whether the time between two sweeps says this one must not judge silence, and the controller settles again: the
    /// wall clock moved more than 5 s unlike the monotonic one (a clock stepped forward, a VM resumed from a snapshot:
    /// the cutoff, and the last-seen times this controller stamped meanwhile, were hours ahead, and every live agent
    /// looked silent), or the sleep overran `interval` by more than 30 s (a paused or starved controller, which took in
    /// no report meanwhile).
    static func mustSettleAgain(wallElapsed: TimeInterval, monotonicElapsed: Duration, interval: Duration) -> Bool {
        let monotonic = monotonicElapsed / .seconds(1)
        return abs(wallElapsed - monotonic) > 5 || monotonic > interval / .seconds(1) + 30
    }

    /// Removes up to `batch` agents silent for `after` at `instant`, when the controller has been `quiet` (without a
    /// failed status batch or sweep) for `settle` and some agent reported within `settle`.
    /// - Returns: the removed agents.
    func sweep(at instant: Date, quiet: Duration) async throws -> [AgentRecord] {
        guard quiet >= settle else { return [] }
        let settleSeconds = Double(settle.components.seconds)
        guard let latest = try await core.store.latestStatusReport(), instant.timeIntervalSince(latest) <= settleSeconds else {
            core.logger.warning(
                "No agent reported in the last \(settle.components.seconds) s: removing no agent for its silence until they do (a restored database, reports that cannot be stored, or this controller's clock ahead would make every agent look silent)"
            )
            return []
        }
        let cutoff = instant.addingTimeInterval(-Double(after.components.seconds))
        let candidates = try await core.store.silentAgents(since: cutoff, limit: Self.batch)
        let hub = core.desiredStates.hub
        let removed = try await core.store.removeAgents(candidates.filter { !hub.isParked(agentID: $0) }, silentSince: cutoff)
        await core.agentsRemoved(removed)
        for agent in removed {
            core.metrics.silentAgentsRemoved.increment()
            core.logger.notice(
                "Agent removed: no status report since \(Timestamp.format(agent.lastSeen ?? agent.enrolledAt)) (--remove-silent-agents-after)",
                metadata: ["ferry.agent.id": "\(agent.id)", "ferry.agent.name": "\(agent.name)", "ferry.agent.hostname": "\(agent.hostname)"]
            )
        }
        return removed
    }
}
