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
        await flush(within: finalFlushLimit)
    }

    /// How long the last write on shutdown may take. It runs inside the graceful shutdown, and a database that went
    /// away (a failover) can hold a write for as long as its statement timeout: the shutdown does not wait that out
    /// for a note of when tokens were last used.
    var finalFlushLimit: Duration = .seconds(5)

    private func flush(within limit: Duration? = nil) async {
        let authenticator = self.authenticator
        do {
            if let limit {
                try await Unawaited.result(of: "writing when tokens were last used", within: limit) { try await authenticator.flushUsage() }
            } else {
                try await authenticator.flushUsage()
            }
        } catch {
            logger.warning("Recording when tokens were last used failed", metadata: ["error.message": "\(error)"])
        }
    }
}
