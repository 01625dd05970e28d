import Logging
import ServiceLifecycle

/// Writes the last-used times the `Authenticator` noted, every `interval`, and once more on graceful shutdown: no
/// request waits for this write. Started after the store and stopped before it closes.
struct TokenUsageRecorder: Service {
    let authenticator: Authenticator
    /// How often noted uses are written. Default 15 s.
    var interval: Duration = .seconds(15)
    let logger: Logger

    func run() async throws {
        do {
            try await cancelWhenGracefulShutdown {
                while !Task.isCancelled {
                    try await Task.sleep(for: interval)
                    await flush()
                }
            }
        } catch is CancellationError {
            logger.debug("Token usage recorder stopped")
        }
        await flush()
    }

    private func flush() async {
        do {
            try await authenticator.flushUsage()
        } catch {
            logger.warning("Recording when tokens were last used failed", metadata: ["error.message": "\(error)"])
        }
    }
}
