import Logging
import ServiceLifecycle
import Shared
import Synchronization

/// The agent's main loop as a service: poll the desired state (long-poll with ETag), run a pass, repeat; back off
/// while the controller is unreachable and keep repairing what is applied meanwhile.
///
/// Polls and reports share the agent's one kept-open connection to the controller, one request at a time: a long-poll
/// never waits past the moment the next periodic report is due (`ReportTrigger.nextReport`), so the report goes out
/// as soon as the poll returns rather than queueing behind a poll parked for the whole wait.
struct PollService: Service, CustomStringConvertible {
    var description: String { "PollService" }
    let runtime: AgentRuntime
    let reports: ReportTrigger

    func run() async throws {
        try await runtime.reconciler.prepare()
        reports.fire()
        do {
            try await cancelWhenGracefulShutdown {
                try await loop()
            }
        } catch is CancellationError {
            // Graceful shutdown.
        }
    }

    private func loop() async throws {
        let config = runtime.config
        var etag: String?
        var desired: DesiredState?
        var backoff = Backoff(configuration: .init(initial: .seconds(1), maximum: .seconds(60)))
        let clock = ContinuousClock()
        var lastPass: ContinuousClock.Instant?
        var lastPassUnsettled = true
        // Start-up ran code an idle agent does not run again: let go of it once a pass settles (paced).
        var codePages = LoadedCode.Pacing(minimumInterval: LoadedCode.defaultMinimumInterval)
        var wasReachable = true
        // A desired state that a side poll brought during the last pass.
        var carried: News?
        // The poll interval before the next poll, waited out by the poll connection's own thread (`after:`): an idle
        // agent's poll then wakes that thread alone, not the runtime's timer thread and a pool thread first.
        var pause = Duration.zero
        // A rollback is reported as soon as it is done, before the restored release's health gate ends the pass.
        await runtime.reconciler.setReportHook { [reports] in reports.fire() }
        while !Task.isCancelled {
            let started = clock.now
            var reachable = true
            var desiredChanged = false
            if let news = carried {
                // Polled on the side during the last pass: no need to ask again before acting on it.
                carried = nil
                desired = news.state
                etag = news.etag
                desiredChanged = true
                reports.controllerPollSeconds = news.state.pollSeconds
            } else {
                do {
                    // The first poll does not wait: the agent converges at once after a start. Later ones wait at most
                    // until the next report is due (whole seconds, at least one).
                    let before = pause
                    pause = .zero
                    let wait =
                        desired == nil
                        ? 0 : Self.longPollWait(configured: config.longPollSeconds, untilReport: reports.timeUntilNextReport() - before)
                    switch try await runtime.client.desiredState(agentID: config.agentID, etag: etag, wait: wait, after: before) {
                    case .changed(let state, let newTag):
                        desired = state
                        etag = newTag
                        desiredChanged = true
                        reports.controllerPollSeconds = state.pollSeconds
                    case .notModified:
                        break
                    }
                    backoff.reset()
                    await runtime.reconciler.noteControllerContact(failure: nil)
                } catch {
                    if Task.isCancelled { return }
                    reachable = false
                    runtime.logger.info("desired state unavailable", metadata: ["ferry.reason": "\(error)"])
                    await runtime.reconciler.noteControllerContact(failure: "\(error)")
                }
            }
            var summary = Reconciler.PassSummary()
            let passDue = Self.passIsDue(
                sinceLastPass: lastPass.map { $0.duration(to: clock.now) },
                driftCheck: .seconds(config.driftCheckSeconds),
                desiredChanged: desiredChanged,
                reachabilityChanged: reachable != wasReachable,
                lastPassUnsettled: lastPassUnsettled
            )
            wasReachable = reachable
            if passDue {
                await runtime.refreshTrust(for: reachable ? desired : nil)
                // Side polls only for a pass that may install (a new state, or one not settled yet): an idle drift
                // check ends in milliseconds, and the task that would wait to poll cost an idle agent a third more CPU.
                let mayInstall = desiredChanged || lastPassUnsettled
                (summary, carried) = await passWatchingForNews(desired: reachable ? desired : nil, etag: etag, watch: mayInstall)
                lastPass = clock.now
                // Not converged (an install pending, an app not healthy yet): keep the poll's pace until it is.
                lastPassUnsettled = summary.changed || !summary.problems.isEmpty || !summary.converged
                // Settled after start-up or a deploy: what those ran is not run again at rest. An app that turns
                // healthy and unhealthy pass by pass lets go once per interval, not at every pass.
                if lastPassUnsettled {
                    codePages.ranOnceOffCode()
                } else if codePages.releaseIsDue(at: clock.now) {
                    runtime.releaseCodePages()
                }
                for problem in summary.problems {
                    runtime.logger.info("pass problem", metadata: ["ferry.problem": "\(problem)"])
                }
            }
            if carried != nil {
                // News that came during a pass is acted on at once.
                continue
            } else if !reachable {
                try await Task.sleep(for: backoff.next())
            } else if config.longPollSeconds == 0 || !summary.problems.isEmpty {
                // The controller's interval when it sent one (it marks agents stale after three without a report).
                pause = .seconds(Self.pollInterval(configured: config.pollSeconds, controller: desired?.pollSeconds))
            } else if started.duration(to: clock.now) < .seconds(1) {
                // A controller that ignores `wait` (or a state that keeps changing) must not make the agent spin.
                try await Task.sleep(until: started.advanced(by: .seconds(1)), clock: clock)
            }
        }
    }
}

extension PollService {
    /// A desired state a side poll brought, with its ETag.
    struct News: Sendable {
        var state: DesiredState
        var etag: String?
    }

    /// How long a pass runs before the loop polls on the side: most passes end sooner (a pass with nothing to install
    /// takes milliseconds), and a side poll cancelled by the pass's end costs the kept-open connection.
    static let sidePollDelay = Duration.seconds(2)

    /// Runs a pass while polling for a newer desired state on the side. A pass can last minutes (a download, a health
    /// gate with a long deadline), and a newer release — an operator's fix for the one in its gate — must not wait for
    /// it: every new state a side poll brings goes to the reconciler (`supersede(with:)`, which ends a gate watching an
    /// older serial of the same service), and the newest one is returned for the next pass, which runs at once. The
    /// side polls begin after `sidePollDelay`, carry the loop's ETag and end (cancelled) with the pass. No side polls
    /// while the controller is unreachable (`desired` is `nil`) or when `watch` is false (a drift check of a settled
    /// instance, which installs nothing). A pass that changed something is reported as soon as it ends.
    private func passWatchingForNews(desired: DesiredState?, etag: String?, watch: Bool) async -> (Reconciler.PassSummary, News?) {
        guard let desired, watch else {
            let summary = await runtime.reconciler.pass(desired: desired)
            if summary.changed { reports.fire() }
            return (summary, nil)
        }
        enum Finished: Sendable {
            case pass(Reconciler.PassSummary)
            case sidePolls(News?)
        }
        return await withTaskGroup(of: Finished.self) { group in
            group.addTask { .pass(await runtime.reconciler.pass(desired: desired)) }
            group.addTask { .sidePolls(await sidePolls(etag: etag)) }
            var summary = Reconciler.PassSummary()
            var news: News?
            while let finished = await group.next() {
                switch finished {
                case .pass(let passSummary):
                    summary = passSummary
                    // Reported now: a side poll may take up to a second to notice its cancellation.
                    if summary.changed { reports.fire() }
                    group.cancelAll()
                case .sidePolls(let brought):
                    news = brought
                }
            }
            return (summary, news)
        }
    }

    /// Polls (long-polls when configured, else every poll interval) until cancelled, starting after `sidePollDelay`;
    /// returns the newest desired state that came. A failed poll is retried after a few seconds: the pass goes on
    /// either way, and the loop reports the controller's reachability after it.
    private func sidePolls(etag: String?) async -> News? {
        guard (try? await Task.sleep(for: Self.sidePollDelay)) != nil else { return nil }
        let config = runtime.config
        var etag = etag
        var news: News?
        while !Task.isCancelled {
            let wait = Self.longPollWait(configured: config.longPollSeconds, untilReport: reports.timeUntilNextReport())
            let started = ContinuousClock.now
            do {
                if case .changed(let state, let newTag) = try await runtime.client.desiredState(agentID: config.agentID, etag: etag, wait: wait) {
                    news = News(state: state, etag: newTag)
                    etag = newTag
                    await runtime.reconciler.supersede(with: state)
                }
                if wait == 0 {
                    try await Task.sleep(for: .seconds(Self.pollInterval(configured: config.pollSeconds, controller: reports.controllerPollSeconds)))
                } else if started.duration(to: .now) < .seconds(1) {
                    // As the main loop: a controller (or a proxy) that answers a long-poll at once (no ETag kept, a
                    // state that keeps changing) must not make the agent poll back to back for the whole of a pass,
                    // which lasts minutes during a download or a health gate: the whole fleet does it during a rollout.
                    try await Task.sleep(until: started.advanced(by: .seconds(1)), clock: .continuous)
                }
            } catch {
                if Task.isCancelled { break }
                runtime.logger.debug("side poll during a pass failed", metadata: ["ferry.reason": "\(error)"])
                try? await Task.sleep(for: .seconds(5))
            }
        }
        return news
    }

    /// Whether this turn of the loop runs a pass. A poll that brought nothing new (304) does not need one, except to
    /// notice drift (an app gone, a daemon restarted) — and that check runs on its own clock, `driftCheckSeconds`, not
    /// with every poll: at a one-second poll interval the pass was nine tenths of the agent's CPU. Everything that may
    /// need work runs it at once: the first turn, a new desired state, the controller becoming reachable or unreachable,
    /// and a last pass that changed something, had a problem or did not converge (repairs, retries and health checks
    /// keep the poll's pace).
    static func passIsDue(
        sinceLastPass: Duration?,
        driftCheck: Duration,
        desiredChanged: Bool,
        reachabilityChanged: Bool,
        lastPassUnsettled: Bool
    ) -> Bool {
        guard let sinceLastPass else { return true }
        return desiredChanged || reachabilityChanged || lastPassUnsettled || sinceLastPass >= driftCheck
    }

    /// The `?wait=` of the next long-poll: the configured one, cut short so the poll returns when the next report is
    /// due; whole seconds, at least 1 (0 would be a plain poll, and the loop would spin). 0 when long-polls are off
    /// (`longPollSeconds` 0): a plain poll, after which the loop sleeps the poll interval. (It used to ask for a 1 s
    /// wait then, which the controller honoured: every plain poll was parked a second before the interval's sleep.)
    static func longPollWait(configured: Int, untilReport: Duration) -> Int {
        guard configured > 0 else { return 0 }
        let (seconds, attoseconds) = untilReport.components
        let rounded = attoseconds > 0 && seconds < Int64.max ? seconds + 1 : seconds
        return Int(max(1, min(Int64(configured), rounded)))
    }

    /// Seconds between passes when not long-polling: the interval the controller sends (1...3600) when it sent one,
    /// else the configured one.
    static func pollInterval(configured: Int, controller: Int64?) -> Int {
        guard let controller, (1...3600).contains(controller) else { return configured }
        return Int(controller)
    }
}

/// Sends a status report after every change (when fired) and at least every `reportSeconds` — or every two of the
/// controller's poll intervals when that is shorter, since it marks an agent stale after three without a report.
struct ReportService: Service, CustomStringConvertible {
    var description: String { "ReportService" }
    let runtime: AgentRuntime
    let reports: ReportTrigger

    func run() async throws {
        let hostname = AgentRuntime.hostname()
        await reportLoop(hostname: hostname)
    }

    private func reportLoop(hostname: String) async {
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await reports.runSchedule { interval } }
                for await _ in reports.stream {
                    let report = await runtime.reconciler.statusReport(hostname: hostname)
                    reports.reported(interval: interval)
                    do {
                        try await runtime.client.report(report, agentID: runtime.config.agentID)
                    } catch {
                        runtime.logger.info("status report not delivered", metadata: ["ferry.reason": "\(error)"])
                    }
                }
                group.cancelAll()
            }
        }
    }

    /// The longest time between two reports.
    private var interval: Duration {
        ReportTrigger.interval(configured: runtime.config.reportSeconds, controllerPollSeconds: reports.controllerPollSeconds)
    }
}

/// Coalescing "send a report now" signal shared by the poller and the reporter, and when the next periodic report is
/// due (the poller's long-polls end by then).
struct ReportTrigger: Sendable {
    /// When the next periodic report is due, and the poll interval the controller last sent.
    private final class Schedule: Sendable {
        let due = Mutex(ContinuousClock.now)
        let controllerPollSeconds = Mutex<Int64?>(nil)
    }

    let stream: AsyncStream<Void>
    private let continuation: AsyncStream<Void>.Continuation
    private let schedule = Schedule()

    init() {
        (stream, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    func fire() { continuation.yield() }

    /// Fires each time the periodic report falls due, until cancelled (at shutdown). The due time moves a whole
    /// `interval()` ahead before it fires: had it stayed in the past until the report was built and `reported` called,
    /// the schedule would wake again at once and fire a second report for the same period (every periodic report
    /// went out twice, a few milliseconds apart).
    func runSchedule(interval: @Sendable () -> Duration) async {
        while !Task.isCancelled {
            guard (try? await Task.sleep(until: nextReport, clock: .continuous)) != nil else { return }
            // A report sent meanwhile (fired by a change) moved the next one.
            guard timeUntilNextReport() <= .zero else { continue }
            reported(interval: interval())
            fire()
        }
    }

    /// When the next periodic report is due.
    var nextReport: ContinuousClock.Instant { schedule.due.withLock { $0 } }

    /// How long until then (negative when overdue).
    func timeUntilNextReport() -> Duration { nextReport - .now }

    /// A report is being sent: the next periodic one is due `interval` from now (returned).
    @discardableResult
    func reported(interval: Duration) -> ContinuousClock.Instant {
        schedule.due.withLock { due in
            due = .now + interval
            return due
        }
    }

    /// The poll interval the controller sent with the last desired state.
    var controllerPollSeconds: Int64? {
        get { schedule.controllerPollSeconds.withLock { $0 } }
        nonmutating set { schedule.controllerPollSeconds.withLock { $0 = newValue } }
    }

    /// The longest time between two reports: `reportSeconds`, or two of the controller's poll intervals when that is
    /// shorter (it marks an agent stale after three without a report).
    static func interval(configured: Int, controllerPollSeconds: Int64?) -> Duration {
        let configured = Duration.seconds(configured)
        guard let poll = controllerPollSeconds, (1...3600).contains(poll) else { return configured }
        return min(configured, .seconds(poll * 2))
    }
}
