import Logging
import ServiceLifecycle

/// Evaluates rollouts on a timer, so waves advance once stable even when no status report arrives. Stops on graceful
/// shutdown (it is started after the store and stopped before it closes).
struct RolloutTicker: Service {
    let coordinator: RolloutCoordinator
    let logger: Logger

    func run() async throws {
        let interval = coordinator.configuration.tickInterval
        do {
            try await cancelWhenGracefulShutdown {
                while !Task.isCancelled {
                    try await Task.sleep(for: interval)
                    await coordinator.tick()
                }
            }
        } catch is CancellationError {
            logger.debug("Rollout ticker stopped")
        }
    }
}
