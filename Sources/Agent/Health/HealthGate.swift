import Shared

/// Watches a freshly applied release until it is healthy for long enough, or fails, or runs out of time.
///
/// Healthy means: every instance of every app `online` (see `ProcessTableCheck`), no instance restarted during the
/// stable window (an app PM2 restarts more than once an hour on its `cron_restart` schedule aside), and — when the release names `health.http` — that URL answering 2xx; all of it continuously for
/// `stableSeconds`, reached within `deadlineSeconds`. A failed table (an app `errored`) ends the watch at once.
struct HealthGate: Sendable {
    /// Answers the HTTP status (and the start of the body) of a GET of a health URL, or throws when it could not be
    /// reached. The gate names the target's template in its verdicts, never the filled-in URL (it may carry instance
    /// secrets).
    typealias Probe = @Sendable (_ target: HealthProbeTarget) async throws -> ProbeAnswer

    /// What a health URL answered.
    struct ProbeAnswer: Sendable, Equatable {
        var status: Int
        /// The start of the body (the probe keeps at most `FailureDiagnosis.maximumBodyBytes`).
        var body: [UInt8] = []
    }

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
        case unhealthy(Failure)
        /// The watch was cancelled (the agent is shutting down): no verdict, the install stays pending.
        case interrupted
        /// A newer serial of the service arrived while the release was watched (`superseded` named it): no verdict,
        /// the newer one is installed instead.
        case superseded(by: Int64)

        /// The verdict's sentence when unhealthy, else `nil`.
        var reason: String? {
            if case .unhealthy(let failure) = self { return failure.reason }
            return nil
        }
    }

    /// Why the gate failed a release: the sentence reported as the failure's reason, and the evidence behind it.
    struct Failure: Sendable, Equatable, CustomStringConvertible {
        /// The verdict in words (names the health URL's template, never the filled-in URL).
        var reason: String
        var cause: FailureDiagnosis.Cause
        /// The release's deadline, when it passed.
        var deadlineSeconds: Int64?
        /// The health URL's last answer (or why it did not answer), when it was asked. Not masked yet.
        var health: FailureDiagnosis.HealthProbe?

        var description: String { reason }
    }

    /// Watches `apps` until a verdict. `superseded` is asked after every look that found a problem: a serial it names
    /// ends the watch (`.superseded`) — an operator's fix must not wait out a broken release's deadline. `observed` is
    /// given every table read (exits explained), so the other services can be judged meanwhile.
    func watch<C: Clock<Duration>>(
        apps: [AppSpec],
        health: ResolvedHealthCheck,
        processManager: any ProcessManager,
        clock: C = ContinuousClock(),
        mask: SecretMask = SecretMask(),
        superseded: @Sendable () -> Int64? = { nil },
        observed: @Sendable ([ManagedProcess]) async -> Void = { _ in }
    ) async -> Outcome {
        let deadline = clock.now.advanced(by: .seconds(health.deadlineSeconds))
        let stable = Duration.seconds(health.stableSeconds)
        var stableSince: C.Instant?
        // Restart counts at the previous all-online look: a climb between two looks is a crash loop the table hides.
        var previousRestarts: [Int: Int]?
        var lastProblem = "no look at the process table yet"
        var notRunningSince: C.Instant?
        // The health URL's last answer, for the failure's evidence.
        var lastProbe: FailureDiagnosis.HealthProbe?
        while true {
            if Task.isCancelled { return .interrupted }
            let now = clock.now
            var problem: String?
            do {
                // A job a signal ended shows exit code 0 in PM2's table, as one that ran to completion (`explainingExits`).
                let table = await processManager.explainingExits(try await processManager.processes())
                await observed(table)
                switch ProcessTableCheck(evaluating: table, against: apps, notRunning: notRunning) {
                case .failed(let reason):
                    return .unhealthy(Failure(reason: reason, cause: .crashed, health: lastProbe))
                case .pending(let reason):
                    problem = reason
                    previousRestarts = nil
                    if reason.contains(ProcessTableCheck.notRunningMarker) {
                        let since = notRunningSince ?? now
                        notRunningSince = since
                        if since.duration(to: now) >= configuration.notRunningGrace {
                            return .unhealthy(
                                Failure(reason: "\(reason) for \(configuration.notRunningGrace)", cause: .notRunning, health: lastProbe)
                            )
                        }
                    } else {
                        notRunningSince = nil
                    }
                case .allOnline:
                    notRunningSince = nil
                    // Restarts of an app PM2 restarts every few minutes or seconds (`cron_restart`) are its schedule.
                    let schedules = processManager.restartsOnSchedules
                    let names = Set(apps.filter { !(schedules && $0.restartsOftenOnSchedule) }.map(\.name))
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
                    let answer = try await probe(target)
                    lastProbe = FailureDiagnosis.HealthProbe(
                        url: target.reported,
                        status: Int64(answer.status),
                        body: Self.excerpt(answer.body, mask: mask)
                    )
                    if !(200..<300).contains(answer.status) { problem = "\(target.reported) answered HTTP \(answer.status)" }
                } catch {
                    let reason = target.scrub("\(error)")
                    lastProbe = FailureDiagnosis.HealthProbe(
                        url: target.reported,
                        // Masked whole before it is cut: a value cut at the limit would no longer match, and its first part left.
                        error: ReportText.clipped(mask.apply(reason), toBytes: FailureDiagnosis.maximumErrorBytes)
                    )
                    problem = "\(target.reported) did not answer: \(reason)"
                }
            }
            if let problem {
                // Ended by a newer serial only while failing: a release passing its stable window is let finish (it
                // ends within `stableSeconds`) and becomes the newer one's rollback target.
                if let newer = superseded() { return .superseded(by: newer) }
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
                return .unhealthy(
                    Failure(
                        reason: "not healthy within \(health.deadlineSeconds)s: \(lastProblem)",
                        cause: .timedOut,
                        deadlineSeconds: health.deadlineSeconds,
                        health: lastProbe
                    )
                )
            }
            do {
                try await clock.sleep(for: configuration.interval)
            } catch {
                return .interrupted
            }
        }
    }

    /// The start of a health answer's body as one printable line: at most `FailureDiagnosis.maximumBodyBytes` bytes,
    /// line breaks and other control characters as spaces; `nil` for an empty body. The instance's secrets are masked
    /// in the whole body first: a value the cut or the control characters split would no longer be found afterwards.
    static func excerpt(_ body: [UInt8], mask: SecretMask) -> String? {
        let text = mask.apply(String(decoding: body, as: UTF8.self))
        let printable = String(
            String.UnicodeScalarView(text.unicodeScalars.map { $0.value < 0x20 || $0.value == 0x7f ? " " : $0 })
        )
        let trimmed = String(printable.drop { $0 == " " }.reversed().drop { $0 == " " }.reversed())
        return trimmed.isEmpty ? nil : ReportText.clipped(trimmed, toBytes: FailureDiagnosis.maximumBodyBytes)
    }

}
