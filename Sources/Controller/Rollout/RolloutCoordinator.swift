import Foundation
import Logging
import Shared

/// Moves rollouts along: evaluates them on every status report and on a timer, takes operator actions, and performs
/// what `RolloutStateMachine` decides for each.
///
/// Every state change is a machine's transition written through the store's compare-and-set (`updateRollout(_:)`,
/// in `commit`), so concurrent evaluations (or replicas) never both advance a wave. A change that alters any agent's
/// desired release (a wave reached, completion, abort) drops the cached desired states and wakes the long-polls of the
/// service's agents.
///
/// "Healthy since" times (the wave timers) are kept in memory and persisted whenever they change, so the controller
/// that drives rollouts next (after a restart, or another one elected with PostgreSQL: `RolloutLeadership`) continues
/// them instead of starting them again. Only the leader evaluates; any controller records status events and takes
/// operator actions (those are compare-and-set too).
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
    /// The timers as last written to (or read from) the store, by rollout.
    private var persistedTimers: [Int64: [String: Date]] = [:]
    /// Whether this controller drives rollouts, and the term its timers belong to.
    private let leadership: RolloutLeadership
    private var term: UInt64 = 0

    init(
        configuration: Configuration,
        store: any ControllerStore,
        desiredStates: DesiredStateProvider,
        logger: Logger,
        now: @escaping @Sendable () -> Date,
        leadership: RolloutLeadership = .always()
    ) {
        self.leadership = leadership
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
        // Another controller drives rollouts: it reads this report from the store at its next tick.
        guard beginDriving() else { return }
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
        guard beginDriving() else { return }
        do {
            let active = try await store.activeRollouts()
            let ids = Set(active.map(\.id))
            healthySince = healthySince.filter { ids.contains($0.key) }
            persistedTimers = persistedTimers.filter { ids.contains($0.key) }
            for rollout in active { try await evaluate(rollout) }
        } catch {
            logger.warning("Rollout evaluation failed", metadata: ["error.message": "\(error)"])
        }
    }

    // MARK: Evaluation

    /// Whether this controller drives rollouts now; a new term starts from the persisted timers.
    private func beginDriving() -> Bool {
        let (leading, current) = leadership.current
        guard leading else { return false }
        if current != term {
            term = current
            healthySince = [:]
            persistedTimers = [:]
        }
        return true
    }

    private func evaluate(_ rollout: RolloutRecord) async throws {
        if persistedTimers[rollout.id] == nil {
            // First look at this rollout in this term: continue the timers a previous leader (or run) persisted.
            let stored = try await store.rolloutHealthTimers(rolloutID: rollout.id)
            persistedTimers[rollout.id] = stored
            healthySince[rollout.id] = stored.merging(healthySince[rollout.id] ?? [:]) { stored, _ in stored }
        }
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
        if timers != persistedTimers[rollout.id] {
            try await store.saveRolloutHealthTimers(rolloutID: rollout.id, timers)
            persistedTimers[rollout.id] = timers
        }
        let decision = RolloutEvaluator.decide(
            rollout,
            statuses: statuses,
            healthySince: timers,
            now: instant,
            staleAfter: configuration.staleAfter
        )
        var names: [String: String] = [:]
        if case .halt = decision { names = try await agentNames() }
        var machine = RolloutStateMachine(rollout)
        guard case .persist(let transition) = try machine.evaluated(decision, agentNames: names, at: instant) else { return }
        let next = transition.rollout
        // `rollout` may be stale by now (another evaluation ran during the awaits): the compare-and-set then refuses.
        _ = try await commit(
            transition,
            "Rollout changed",
            [
                "ferry.service": "\(rollout.service)", "ferry.serial": "\(rollout.serial)", "ferry.rollout.state": "\(next.state.rawValue)",
                "ferry.rollout.wave": "\(next.currentWave + 1)",
            ]
        )
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
            let onSerial = action == .abort ? try await agentsOnSerial(rollout) : []
            var machine = RolloutStateMachine(rollout)
            let decided: RolloutStateMachine.Action
            do {
                decided = try machine.requested(action, by: actor, agentsOnSerial: onSerial, at: now())
            } catch {
                throw RolloutControlError.refused(error)
            }
            guard case .persist(let transition) = decided else { return rollout }
            let changed = try await commit(
                transition,
                "Rollout changed by an operator",
                [
                    "ferry.service": "\(service)", "ferry.serial": "\(rollout.serial)", "ferry.rollout.action": "\(action.rawValue)",
                    "ferry.token": "\(actor)",
                ]
            )
            if changed { return transition.rollout }
        }
        throw RolloutControlError.contended(service: service)
    }

    /// The names of the rollout's agents that already run its serial, sorted (an abort leaves them on it: agents never
    /// go back to a lower serial).
    private func agentsOnSerial(_ rollout: RolloutRecord) async throws -> [String] {
        let members = Set(rollout.agentOrder)
        let running = try await store.serviceStatuses(service: rollout.service).filter {
            members.contains($0.agentID) && $0.status.serial == rollout.serial
        }
        guard !running.isEmpty else { return [] }
        let names = try await agentNames()
        return running.map { names[$0.agentID] ?? $0.agentID }.sorted()
    }

    /// Performs what a machine decided: writes the transition (compare-and-set), then forgets the health timers of a
    /// rollout no longer evaluated and, when agents' desired releases change, wakes them.
    /// - Returns: whether the transition was written (`false`: the rollout changed since it was read).
    private func commit(_ transition: RolloutStateMachine.Transition, _ message: Logger.Message, _ metadata: Logger.Metadata) async throws -> Bool {
        guard try await store.updateRollout(transition) else { return false }
        let rollout = transition.rollout
        if !rollout.state.isActive {
            healthySince[rollout.id] = nil
            persistedTimers[rollout.id] = nil
        }
        logger.info(message, metadata: metadata)
        if transition.changesDesiredState { desiredStates.rolloutChanged(service: rollout.service) }
        return true
    }

    // MARK: Helpers

    private func agentNames() async throws -> [String: String] {
        Dictionary(try await store.agents().map { ($0.id, $0.name) }, uniquingKeysWith: { first, _ in first })
    }
}
