import Logging
import ServiceLifecycle
import Shared

/// Lets go of the controller's code pages (`LoadedCode.release()`): `first` after start, then every `interval`.
///
/// What start-up ran (argument parsing, configuration, migrations, TLS set-up) and what the rarer requests run
/// (enrolments, a publish, the dashboard, operator commands) stays in the process's RSS until it exits otherwise. The
/// controller has no quiet moment to wait for (at fleet size reports never stop), so the release is periodic: the code
/// its steady traffic runs is mapped again by minor faults, a few milliseconds each time. `serve` runs it
/// (`FERRY_CODE_PAGES=keep` keeps everything mapped); in-process tests do not (their process is the test runner's).
struct CodePageService: Service {
    struct Schedule: Sendable, Equatable {
        /// The first release, after start-up. Default 30 s.
        var first: Duration = .seconds(30)
        /// Between releases after the first. Default 5 minutes (`LoadedCode.defaultMinimumInterval`).
        var interval: Duration = LoadedCode.defaultMinimumInterval
        /// `FERRY_CODE_PAGES=keep`: nothing is let go; the moment of the first release is logged instead.
        var keeps = false
    }

    let schedule: Schedule
    let logger: Logger

    func run() async throws {
        do {
            try await cancelWhenGracefulShutdown {
                var wait = schedule.first
                if schedule.keeps {
                    try await Task.sleep(for: wait)
                    logger.debug("code pages kept (FERRY_CODE_PAGES=keep)")
                    try await gracefulShutdown()
                    return
                }
                while !Task.isCancelled {
                    try await Task.sleep(for: wait)
                    wait = schedule.interval
                    // Not inside the log call: its metadata is an autoclosure, which runs only when debug lines are logged.
                    let outcome = LoadedCode.release()
                    logger.debug("released code pages", metadata: outcome.logFields.mapValues { .string($0) })
                }
            }
        } catch is CancellationError {
            // Graceful shutdown.
        }
    }
}
