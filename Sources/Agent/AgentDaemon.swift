import Logging
import ServiceLifecycle
import Shared

/// The agent's main loop as a service: poll the desired state (long-poll with ETag), run a pass, repeat; back off
/// while the controller is unreachable and keep repairing what is applied meanwhile.
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
        while !Task.isCancelled {
            let started = clock.now
            var reachable = true
            do {
                // The first poll does not wait: the agent converges at once after a start.
                let wait = desired == nil ? 0 : config.longPollSeconds
                switch try await runtime.client.desiredState(agentID: config.agentID, etag: etag, wait: wait) {
                case .changed(let state, let newTag):
                    desired = state
                    etag = newTag
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
            await runtime.refreshTrust(for: reachable ? desired : nil)
            let summary = await runtime.reconciler.pass(desired: reachable ? desired : nil)
            if summary.changed { reports.fire() }
            for problem in summary.problems {
                runtime.logger.info("pass problem", metadata: ["ferry.problem": "\(problem)"])
            }
            if !reachable {
                try await Task.sleep(for: backoff.next())
            } else if config.longPollSeconds == 0 || !summary.problems.isEmpty {
                try await Task.sleep(for: .seconds(config.pollSeconds))
            } else if started.duration(to: clock.now) < .seconds(1) {
                // A controller that ignores `wait` (or a state that keeps changing) must not make the agent spin.
                try await Task.sleep(until: started.advanced(by: .seconds(1)), clock: clock)
            }
        }
    }
}

/// Sends a status report after every change (when fired) and at least every `reportSeconds`.
struct ReportService: Service, CustomStringConvertible {
    var description: String { "ReportService" }
    let runtime: AgentRuntime
    let reports: ReportTrigger

    func run() async throws {
        let interval = Duration.seconds(runtime.config.reportSeconds)
        let hostname = AgentRuntime.hostname()
        await reportLoop(interval: interval, hostname: hostname)
    }

    private func reportLoop(interval: Duration, hostname: String) async {
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    while !Task.isCancelled {
                        // Cancelled at shutdown: the loop ends instead of firing again.
                        guard (try? await Task.sleep(for: interval)) != nil else { return }
                        reports.fire()
                    }
                }
                for await _ in reports.stream {
                    let report = await runtime.reconciler.statusReport(hostname: hostname)
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
}

/// Coalescing "send a report now" signal shared by the poller and the reporter.
struct ReportTrigger: Sendable {
    let stream: AsyncStream<Void>
    private let continuation: AsyncStream<Void>.Continuation

    init() {
        (stream, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    func fire() { continuation.yield() }
}
