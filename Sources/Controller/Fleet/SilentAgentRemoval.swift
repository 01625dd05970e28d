import Foundation
import Logging
import ServiceLifecycle
import Shared

/// Removes the agents that sent no status report for `removeSilentAgentsAfter` (`serve --remove-silent-agents-after`),
/// as `agents remove` would: an autoscaling group terminates instances all day, and their agents otherwise stay in the
/// fleet view (stale), in the database and in every controller's memory for good.
///
/// Silence is judged by the store's last-seen times, which every controller on the database writes. A controller
/// removes nothing until it has run for `settle` (at least three poll intervals): after the controller, or the
/// database, was down, or a backup was restored, every agent's last report is old, and the fleet must have had the time
/// to report again before any of it counts as silence. Several controllers may sweep at once: a removal is one
/// `DELETE`, and the others hear of it from the commit.
struct SilentAgentRemoval: Service {
    let core: ControllerCore
    let after: Duration
    /// Started when the controller started.
    let started: ContinuousClock.Instant

    /// Agents removed per sweep at most (the next sweep takes the rest).
    static let batch = 1_000

    /// The shortest `after` accepted: far past the three poll intervals that make an agent stale.
    static let minimum: Duration = .seconds(3_600)

    /// How long after its start the controller begins to remove agents.
    var settle: Duration { max(core.configuration.pollInterval * 3, .seconds(300)) }

    /// How often it looks: a tenth of `after`, from a minute to an hour.
    var interval: Duration { min(max(after / 10, .seconds(60)), .seconds(3_600)) }

    func run() async throws {
        do {
            try await cancelWhenGracefulShutdown {
                while !Task.isCancelled {
                    try await Task.sleep(for: interval)
                    do {
                        _ = try await sweep(at: core.now(), uptime: .now - started)
                    } catch {
                        core.logger.warning("Removing silent agents failed; trying again at the next sweep", metadata: ["error.message": "\(error)"])
                    }
                }
            }
        } catch is CancellationError {
            core.logger.debug("Silent agent removal stopped")
        }
    }

    /// Removes the agents silent for `after` at `instant`, when the controller has been up `settle` (`uptime`).
    /// - Returns: the removed agents.
    func sweep(at instant: Date, uptime: Duration) async throws -> [AgentRecord] {
        guard uptime >= settle else { return [] }
        let cutoff = instant.addingTimeInterval(-Double(after.components.seconds))
        var removed: [AgentRecord] = []
        while true {
            let batch = try await core.store.removeAgents(silentSince: cutoff, limit: Self.batch)
            core.agentsRemoved(batch)
            for agent in batch {
                core.metrics.silentAgentsRemoved.increment()
                core.logger.notice(
                    "Agent removed: no status report since \(Timestamp.format(agent.lastSeen ?? agent.enrolledAt)) (--remove-silent-agents-after)",
                    metadata: ["ferry.agent.id": "\(agent.id)", "ferry.agent.name": "\(agent.name)", "ferry.agent.hostname": "\(agent.hostname)"]
                )
            }
            removed += batch
            if batch.count < Self.batch { return removed }
        }
    }
}
