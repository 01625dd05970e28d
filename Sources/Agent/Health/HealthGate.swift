import Shared

/// Watches a freshly applied release until it is healthy for long enough, or fails, or runs out of time.
///
/// Healthy means: every instance of every app `online` (see `ProcessTableCheck`), no instance restarted during the
/// stable window, and — when the release names `health.http` — that URL answering 2xx; all of it continuously for
/// `stableSeconds`, reached within `deadlineSeconds`. A failed table (an app `errored`) ends the watch at once.
struct HealthGate: Sendable {
    /// Answers the HTTP status of a GET of a health URL, or throws when it could not be reached. The gate names the
    /// target's template in its verdicts, never the filled-in URL (it may carry instance secrets).
    typealias Probe = @Sendable (_ target: HealthProbeTarget) async throws -> Int

    struct Configuration: Sendable {
        /// Time between two looks at the table and the health URL. Default 250 ms.
        var interval: Duration = .milliseconds(250)
        /// How long an instance may be `online` without running (no pid, no process in /proc, 0 bytes of memory)
        /// before the release fails. Default 5 s: a moment for the process manager to fill in a fresh spawn.
        var notRunningGrace: Duration = .seconds(5)
    }

    /// Why an `online` instance is not running (`ProcessTableCheck.notRunning`: no pid in `/proc`, no memory);
    /// tests of tables made up by hand replace it.
    var notRunning: @Sendable (ManagedProcess) -> String? = { ProcessTableCheck.notRunning($0) }

    var configuration = Configuration()
    var probe: Probe

    /// The outcome of a watch.
    enum Outcome: Sendable, Equatable {
        case healthy
        case unhealthy(reason: String)
        /// The watch was cancelled (the agent is shutting down): no verdict, the install stays pending.
        case interrupted
    }

    func watch<C: Clock<Duration>>(
        apps: [AppSpec],
        health: ResolvedHealthCheck,
        processManager: any ProcessManager,
        clock: C = ContinuousClock()
    ) async -> Outcome {
        let deadline = clock.now.advanced(by: .seconds(health.deadlineSeconds))
        let stable = Duration.seconds(health.stableSeconds)
        var stableSince: C.Instant?
        // Restart counts at the previous all-online look: a climb between two looks is a crash loop the table hides.
        var previousRestarts: [Int: Int]?
        var lastProblem = "no look at the process table yet"
        var notRunningSince: C.Instant?
        while true {
            if Task.isCancelled { return .interrupted }
            let now = clock.now
            var problem: String?
            do {
                let table = try await processManager.processes()
                switch ProcessTableCheck(evaluating: table, against: apps, notRunning: notRunning) {
                case .failed(let reason):
                    return .unhealthy(reason: reason)
                case .pending(let reason):
                    problem = reason
                    previousRestarts = nil
                    if reason.contains(ProcessTableCheck.notRunningMarker) {
                        let since = notRunningSince ?? now
                        notRunningSince = since
                        if since.duration(to: now) >= configuration.notRunningGrace {
                            return .unhealthy(reason: "\(reason) for \(configuration.notRunningGrace)")
                        }
                    } else {
                        notRunningSince = nil
                    }
                case .allOnline:
                    notRunningSince = nil
                    let names = Set(apps.map(\.name))
                    let restarts = Dictionary(table.filter { names.contains($0.name) }.map { ($0.pmId, $0.restarts) }, uniquingKeysWith: max)
                    if let previousRestarts, restarts != previousRestarts {
                        problem = "an instance restarted during the stable window"
                    }
                    previousRestarts = restarts
                }
            } catch {
                problem = "cannot read the process table: \(error)"
            }
            if problem == nil, let target = health.target {
                do {
                    let status = try await probe(target)
                    if !(200..<300).contains(status) { problem = "\(target.template) answered HTTP \(status)" }
                } catch {
                    problem = "\(target.template) did not answer: \(target.scrub("\(error)"))"
                }
            }
            if let problem {
                stableSince = nil
                lastProblem = problem
            } else if let since = stableSince {
                if since.duration(to: now) >= stable { return .healthy }
            } else {
                stableSince = now
                if stable == .zero { return .healthy }
            }
            if now >= deadline {
                if problem == nil, let since = stableSince {
                    lastProblem = "healthy for only \(since.duration(to: now).components.seconds)s of the \(health.stableSeconds)s stable window"
                }
                return .unhealthy(reason: "not healthy within \(health.deadlineSeconds)s: \(lastProblem)")
            }
            do {
                try await clock.sleep(for: configuration.interval)
            } catch {
                return .interrupted
            }
        }
    }
}
