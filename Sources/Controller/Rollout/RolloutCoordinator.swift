import Foundation
import Logging
import Shared

/// Moves rollouts along: evaluates them on every status report and on a timer, applies operator actions, and records
/// what happened as events.
///
/// Every state change goes through the store's compare-and-set (`updateRollout(_:expecting:events:)`), so concurrent
/// evaluations (or replicas) never both advance a wave. A change that alters any agent's desired release (a wave
/// reached, completion, abort) drops the cached desired states and wakes the long-polls of the service's agents.
///
/// "Healthy since" times live in memory only: after a controller restart every agent's timer starts again at its
/// first healthy status seen, so a wave waits up to one more `waveStable` — never less.
actor RolloutCoordinator {
    /// How rollouts are evaluated.
    struct Configuration: Sendable {
        /// How often rolling rollouts are evaluated without status reports (waves advance on time). Default 1 s.
        var tickInterval: Duration = .seconds(1)
        /// A status older than this does not count as healthy (the agent may be gone). Default 45 s, three of the
        /// default poll intervals — `ControllerConfiguration.staleAfter`.
        var staleAfter: Duration = .seconds(45)

        init(tickInterval: Duration = .seconds(1), staleAfter: Duration = .seconds(45)) {
            self.tickInterval = tickInterval
            self.staleAfter = staleAfter
        }
    }

    let configuration: Configuration
    private let store: any ControllerStore
    private let desiredStates: DesiredStateProvider
    private let logger: Logger
    private let now: @Sendable () -> Date
    /// Rollout id → agent id → since when the agent has been seen healthy on the rollout's serial.
    private var healthySince: [Int64: [String: Date]] = [:]

    init(
        configuration: Configuration,
        store: any ControllerStore,
        desiredStates: DesiredStateProvider,
        logger: Logger,
        now: @escaping @Sendable () -> Date
    ) {
        self.configuration = configuration
        self.store = store
        self.desiredStates = desiredStates
        self.logger = logger
        self.now = now
    }

    // MARK: Status reports

    /// Takes in a status report that was just stored: records the agent's new failures as events, updates the health
    /// timers from the report itself, and evaluates the open rollouts the agent takes part in.
    /// - Parameter previous: the agent's statuses before this report (to tell new failures from known ones).
    func statusReceived(_ report: StatusReport, from agent: AgentRecord, previous: [ServiceStatusRecord]) async throws {
        let instant = now()
        try await recordNewFailures(report, from: agent, previous: previous, at: instant)
        let services = report.services.map(\.service)
        let rollouts = try await store.latestRollouts(for: services).filter { $0.state.isActive && $0.agentOrder.contains(agent.id) }
        for rollout in rollouts {
            if let status = report.services.first(where: { $0.service == rollout.service }) {
                // The report itself, not the stored row (a newer report may already be stored): a blip of bad health
                // between two evaluations still restarts the timer.
                if RolloutAgentStanding(status: status, serial: rollout.serial).progress == .healthy {
                    healthySince[rollout.id, default: [:]][agent.id] = healthySince[rollout.id]?[agent.id] ?? instant
                } else {
                    healthySince[rollout.id]?[agent.id] = nil
                }
            }
            try await evaluate(rollout)
        }
    }

    private func recordNewFailures(_ report: StatusReport, from agent: AgentRecord, previous: [ServiceStatusRecord], at instant: Date) async throws {
        var known: [String: Set<String>] = [:]
        for record in previous {
            known[record.status.service] = Set(record.status.failures.map { "\($0.serial) \($0.kind)" })
        }
        var events: [RolloutEventDraft] = []
        for status in report.services {
            for failure in status.failures where !(known[status.service]?.contains("\(failure.serial) \(failure.kind)") ?? false) {
                let kind: RolloutEventKind = failure.kind == "rolled-back" ? .rolledBack : .refused
                let verb = kind == .rolledBack ? "rolled back" : "refused"
                events.append(
                    RolloutEventDraft(
                        at: instant,
                        service: status.service,
                        serial: failure.serial,
                        kind: kind,
                        message: "agent \(agent.name) \(verb) serial \(failure.serial) of \(status.service): \(failure.reason)",
                        agentID: agent.id
                    )
                )
            }
        }
        try await store.recordEvents(events)
    }

    // MARK: Timer

    /// Evaluates every rolling or paused rollout (called every `tickInterval` by `RolloutTicker`). Failures are logged.
    func tick() async {
        do {
            let active = try await store.activeRollouts()
            let ids = Set(active.map(\.id))
            healthySince = healthySince.filter { ids.contains($0.key) }
            for rollout in active { try await evaluate(rollout) }
        } catch {
            logger.warning("Rollout evaluation failed", metadata: ["error.message": "\(error)"])
        }
    }

    // MARK: Evaluation

    private func evaluate(_ rollout: RolloutRecord) async throws {
        let instant = now()
        var statuses: [String: ServiceStatusRecord] = [:]
        let members = Set(rollout.agentOrder)
        for record in try await store.serviceStatuses(service: rollout.service) where members.contains(record.agentID) {
            statuses[record.agentID] = record
        }
        let timers = RolloutEvaluator.updatedTimers(
            healthySince[rollout.id] ?? [:],
            rollout: rollout,
            statuses: statuses,
            now: instant,
            staleAfter: configuration.staleAfter
        )
        healthySince[rollout.id] = timers
        let decision = RolloutEvaluator.decide(
            rollout,
            statuses: statuses,
            healthySince: timers,
            now: instant,
            staleAfter: configuration.staleAfter
        )
        var next = rollout
        next.updatedAt = instant
        let event: RolloutEventDraft
        let changesDesiredState: Bool
        switch decision {
        case .wait:
            return
        case .advance(let wave):
            next.currentWave = wave
            next.reason = ""
            let sizes = rollout.waveSizes
            event = draft(
                next,
                .waveAdvanced,
                "serial \(rollout.serial) (\(rollout.version)) of \(rollout.service) reached wave \(wave + 1) of \(sizes.count): "
                    + "\(sizes[wave]) of \(rollout.agentOrder.count) agents",
                at: instant
            )
            changesDesiredState = true
        case .complete:
            next.state = .completed
            next.currentWave = max(0, rollout.waveSizes.count - 1)
            next.reason = ""
            event = draft(
                next,
                .completed,
                "serial \(rollout.serial) (\(rollout.version)) reached all \(rollout.agentOrder.count) agents of \(rollout.service); "
                    + "it is the stable serial now",
                at: instant
            )
            changesDesiredState = true
        case .halt(let failures):
            let names = try await agentNames()
            // The first few, each reason bounded: the reason is stored and shown on one line of `rollout status`.
            var list = failures.prefix(10).map { "\(names[$0.agentID] ?? $0.agentID) (\($0.kind)): \($0.reason.prefix(300))" }
                .joined(separator: "; ")
            if failures.count > 10 { list += "; and \(failures.count - 10) more" }
            next.state = .halted
            next.reason =
                "\(failures.count) agent(s) failed serial \(rollout.serial), more than the \(rollout.maxFailures) allowed: \(list)"
            event = draft(
                next,
                .halted,
                "rollout of serial \(rollout.serial) (\(rollout.version)) of \(rollout.service) halted: \(next.reason). "
                    + "Agents not reached stay on \(Self.serialText(rollout.stableSerial))",
                at: instant
            )
            // Halting only stops advancement: reached agents keep the serial they were given, the others the stable
            // one, exactly as before.
            changesDesiredState = false
        }
        // `rollout` may be stale by now (another evaluation ran during the awaits): the compare-and-set then refuses.
        guard try await store.updateRollout(next, expecting: RolloutRevision(rollout), events: [event]) else { return }
        if !next.state.isActive { healthySince[rollout.id] = nil }
        logger.info(
            "Rollout changed",
            metadata: [
                "ferry.service": "\(rollout.service)", "ferry.serial": "\(rollout.serial)", "ferry.rollout.state": "\(next.state.rawValue)",
                "ferry.rollout.wave": "\(next.currentWave + 1)",
            ]
        )
        if changesDesiredState { desiredStates.rolloutChanged(service: rollout.service) }
    }

    // MARK: Operator actions

    /// Applies `action` to the latest rollout of `service`.
    /// - Parameter actor: who asked (the token's name), recorded in the reason and the event.
    /// - Throws: `RolloutControlError`.
    func perform(_ action: RolloutAction, service: String, by actor: String) async throws -> RolloutRecord {
        for _ in 0..<5 {
            guard let rollout = try await store.latestRollouts(for: [service]).first else {
                throw RolloutControlError.noRollout(service: service)
            }
            guard action.allowedFrom.contains(rollout.state) else {
                throw RolloutControlError.notAllowed(action: action, service: service, serial: rollout.serial, state: rollout.state)
            }
            let instant = now()
            var next = rollout
            next.updatedAt = instant
            let event: RolloutEventDraft
            switch action {
            case .pause:
                next.state = .paused
                next.reason = "paused by \(actor)"
                event = draft(next, .paused, "rollout of serial \(rollout.serial) (\(rollout.version)) of \(service) paused by \(actor)", at: instant)
            case .resume:
                next.state = .rolling
                next.reason = ""
                event = draft(
                    next,
                    .resumed,
                    "rollout of serial \(rollout.serial) (\(rollout.version)) of \(service) resumed by \(actor)",
                    at: instant
                )
            case .abort:
                next.state = .aborted
                next.reason = try await abortReason(rollout, by: actor)
                event = draft(next, .aborted, "rollout of serial \(rollout.serial) (\(rollout.version)) of \(service) \(next.reason)", at: instant)
            }
            guard try await store.updateRollout(next, expecting: RolloutRevision(rollout), events: [event]) else { continue }
            if !next.state.isActive { healthySince[rollout.id] = nil }
            logger.info(
                "Rollout changed by an operator",
                metadata: [
                    "ferry.service": "\(service)", "ferry.serial": "\(rollout.serial)", "ferry.rollout.action": "\(action.rawValue)",
                    "ferry.token": "\(actor)",
                ]
            )
            if action == .abort { desiredStates.rolloutChanged(service: service) }
            return next
        }
        throw RolloutControlError.contended(service: service)
    }

    /// Says what an abort leaves where: agents already on the serial cannot be moved back without a new signature.
    private func abortReason(_ rollout: RolloutRecord, by actor: String) async throws -> String {
        let members = Set(rollout.agentOrder)
        let running = try await store.serviceStatuses(service: rollout.service).filter {
            members.contains($0.agentID) && $0.status.serial == rollout.serial
        }
        let stable = Self.serialText(rollout.stableSerial)
        guard !running.isEmpty else { return "aborted by \(actor): every agent stays on \(stable)" }
        let names = try await agentNames()
        let list = running.map { names[$0.agentID] ?? $0.agentID }.sorted().joined(separator: ", ")
        return "aborted by \(actor): \(running.count) agent(s) already run serial \(rollout.serial) and keep it (\(list)) — agents "
            + "never go back to a lower serial; to move them back, publish the previous version as a new serial with "
            + "`ferry-controller rollback --service \(rollout.service)`. The other agents stay on \(stable)"
    }

    // MARK: Helpers

    private func agentNames() async throws -> [String: String] {
        Dictionary(try await store.agents().map { ($0.id, $0.name) }, uniquingKeysWith: { first, _ in first })
    }

    private func draft(_ rollout: RolloutRecord, _ kind: RolloutEventKind, _ message: String, at instant: Date) -> RolloutEventDraft {
        RolloutEventDraft(at: instant, service: rollout.service, serial: rollout.serial, kind: kind, message: message, agentID: nil)
    }

    /// "serial 4", or "no release" when the service had none before.
    static func serialText(_ serial: Int64?) -> String {
        serial.map { "serial \($0)" } ?? "no release"
    }
}
