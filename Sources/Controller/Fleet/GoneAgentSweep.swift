import Logging
import ServiceLifecycle

/// Every `interval`, forgets what this controller remembers of agents no longer in the store
/// (`ControllerCore.forgetAgentsGoneFromStore`). An agent removed through this controller is forgotten at once; one
/// removed through another controller on the same database, or by hand, would otherwise stay in this one's memory for
/// as long as it runs: in an autoscaling fleet, every instance ever terminated.
struct GoneAgentSweep: Service {
    let core: ControllerCore
    /// Default 10 minutes: one read of the agents' ids.
    var interval: Duration = .seconds(600)

    func run() async throws {
        do {
            try await cancelWhenGracefulShutdown {
                while !Task.isCancelled {
                    try await Task.sleep(for: interval)
                    do {
                        let forgotten = try await core.forgetAgentsGoneFromStore()
                        if forgotten > 0 { core.logger.debug("Forgot \(forgotten) agent(s) removed elsewhere") }
                    } catch {
                        core.logger.debug("Reading the agents' ids failed; trying again at the next sweep", metadata: ["error.message": "\(error)"])
                    }
                }
            }
        } catch is CancellationError {
            core.logger.debug("Sweep of agents removed elsewhere stopped")
        }
    }
}
