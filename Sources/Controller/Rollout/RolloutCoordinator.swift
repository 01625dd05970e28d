import Foundation
import Logging
import Shared
import Synchronization

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
/// them instead of starting them again — when the driver looked at them within `staleAfter` (it records when, at least
/// every `timerConfirmInterval`). After an outage of every controller longer than that, nothing showed the agents
/// healthy meanwhile: the timers start again at the agents' next healthy reports. Only the leader evaluates; any controller records status events and takes
/// operator actions (those are compare-and-set too).
///
/// A status report is evaluated against `ActiveRollouts`, an in-memory copy of the open rollouts and their members'
/// statuses, and updates that copy with the report itself: with 10,000 agents reporting, reading the rollout (its
/// agent list) and every member's status from the store on each report made a report cost O(fleet) and pushed the
/// report p99 past 15 s (issue 12). The copy is read again from the store when it is older than `tickInterval`, when
/// the desired-state generation moved (a publish, a rollout change, here or — through the store's notifications — on
/// another controller), and after every transition this coordinator writes; the timer's evaluation always reads the
/// store.
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
    /// The open rollouts as status reports see them, or `nil` when they must be read again.
    private var active: ActiveRollouts?
    /// The read of `active` in flight, shared by the reports that arrive meanwhile.
    private var loadingActive: Task<ActiveRollouts, any Error>?
    /// Evaluation rounds shared by the status reports that arrive together.
    nonisolated let rounds = EvaluationRounds()
    /// Called before a report-driven round evaluates a service's rollout: tests hold a round there to order its commit
    /// against the reports that arrive meanwhile. `nil` in a running controller.
    private(set) var roundWillEvaluate: (@Sendable (String) async -> Void)?

    func setRoundWillEvaluate(_ hook: (@Sendable (String) async -> Void)?) { roundWillEvaluate = hook }
    /// The timers as last written to (or read from) the store, by rollout.
    private var persistedTimers: [Int64: [String: Date]] = [:]
    /// When this controller last recorded in the store that it looked at each rollout's timers.
    private var timersObserved: [Int64: Date] = [:]
    /// How often a driver records that it still looks at a rollout's unchanged timers: a quarter of `staleAfter`, so a
    /// controller taking over within it continues them.
    var timerConfirmInterval: TimeInterval { max(1, Double(configuration.staleAfter.components.seconds) / 4) }
    /// Whether this controller drives rollouts, and the term its timers belong to.
    private let leadership: RolloutLeadership
    private var term: UInt64 = 0
    /// When this controller last began to drive rollouts (`beginDriving`), by `now`.
    private var lastDriven: Date?
    /// Longest pause between two drives (a timer tick comes every `tickInterval`) after which what this controller kept
    /// in memory is read again from the store: a leader frozen longer (a paused VM, SIGSTOP) may have been replaced
    /// meanwhile, and the new leader's timers (an agent that turned unhealthy and back restarts its timer) are in the
    /// store, not here. Its old timers would advance a wave the new leader held back. Five ticks, at least 5 s: a fixed
    /// 5 s read everything again at every tick of a controller configured to tick every 5 s or more.
    var maximumDrivingPause: TimeInterval { max(5, 5 * (configuration.tickInterval / .seconds(1))) }

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

    /// Takes in a status report that was just stored (with its failures' events, `StatusWrite.events`): updates the
    /// health timers from the report itself, and evaluates the open rollouts the agent takes part in.
    /// - Parameter receivedAt: when the report was stored (the time its stored statuses carry).
    ///
    /// Returns once an evaluation that started after this report was taken in has finished, so a rollout's reaction
    /// to a report is visible when the report is answered. Reports that arrive while an evaluation runs share the next
    /// one (`EvaluationRounds`): at 10,000 agents an evaluation per report would cost O(fleet) each.
    func statusReceived(_ report: StatusReport, from agent: AgentRecord, receivedAt: Date) async throws {
        let instant = now()
        // Another controller drives rollouts: it reads this report from the store at its next tick.
        guard beginDriving() else { return }
        // The copy in memory, read again first when it is stale; `activeRollouts` installs a fresh read before any
        // waiter resumes, so every report of a burst updates the same copy.
        // Taken out while updated, so the status table is not copied (no suspension until it is put back). A round
        // that commits empties the copy (`commit`) and may do so between the read and this resumption: the value the
        // read returned is then the snapshot from before the other reports went in, and updating it would drop them
        // from memory. The copy is read again instead.
        var rollouts: ActiveRollouts
        while true {
            _ = try await activeRollouts()
            if let current = active {
                active = nil
                rollouts = current
                break
            }
        }
        var touched = false
        for status in report.services {
            guard let entry = rollouts.byService[status.service], entry.members.contains(agent.id) else { continue }
            touched = true
            // A newer report of the same agent, already in the copy, stays.
            if let held = entry.statuses[agent.id], held.updatedAt > receivedAt { continue }
            let rollout = entry.record
            // The report itself, not the stored row (a newer report may already be stored): a blip of bad health
            // between two evaluations still restarts the timer.
            if RolloutAgentStanding(status: status, serial: rollout.serial).progress == .healthy {
                healthySince[rollout.id, default: [:]][agent.id] = healthySince[rollout.id]?[agent.id] ?? instant
            } else {
                healthySince[rollout.id]?[agent.id] = nil
            }
            // Without processes, as the copy is read from the store (`memberStatuses`).
            var slim = status
            slim.processes = []
            rollouts.byService[status.service]?.statuses[agent.id] = ServiceStatusRecord(agentID: agent.id, status: slim, updatedAt: receivedAt)
        }
        active = rollouts
        guard touched else { return }
        await rounds.awaitRound(driver: self)
    }

    /// One round: evaluates every open rollout of the in-memory copy. Failures are logged (the report that asked is
    /// stored; the timer evaluates again within a second).
    ///
    /// A copy emptied since the last round (a transition committed by it: `commit`) is read again, not skipped: the
    /// reports waiting for this round updated the copy that commit dropped, and are only in the store. Skipped, the
    /// round answered them with nothing evaluated (seen: the last report of a wave stored while another service's
    /// rollout advanced, its own rollout left rolling until the timer's next tick).
    fileprivate func evaluationRound() async {
        let rollouts: ActiveRollouts
        do {
            rollouts = try await activeRollouts()
        } catch {
            logger.warning("Rollout evaluation after status reports failed", metadata: ["error.message": "\(error)"])
            return
        }
        for entry in rollouts.byService.values.sorted(by: { $0.record.service < $1.record.service }) {
            await roundWillEvaluate?(entry.record.service)
            do {
                try await evaluate(entry.record, statuses: entry.statuses)
            } catch {
                logger.warning(
                    "Rollout evaluation after status reports failed",
                    metadata: ["ferry.service": "\(entry.record.service)", "error.message": "\(error)"]
                )
            }
        }
    }

    /// The open rollouts and their members' statuses: the copy in memory while it is current, else read again (one
    /// read shared by every report that asks meanwhile).
    private func activeRollouts() async throws -> ActiveRollouts {
        let generation = desiredStates.cache.generation
        if let active, active.generation == generation, ContinuousClock.now - active.loadedAt < configuration.tickInterval {
            return active
        }
        if let loadingActive { return try await loadingActive.value }
        let store = self.store
        // The read installs itself (`install`) before its value reaches anyone: a waiter that resumed first would
        // otherwise update the stale copy, which the install then replaces, losing that report from memory until the
        // next read (seen: 60 reports at once under load, the rollout they complete left rolling).
        let loading = Task {
            let loaded = try await ActiveRollouts.load(from: store, generation: generation)
            return await self.install(loaded)
        }
        loadingActive = loading
        do {
            return try await loading.value
        } catch {
            if loadingActive == loading { loadingActive = nil }
            throw error
        }
    }

    /// Makes `loaded` the copy in memory, keeping reports taken in while it was read: the read may have started
    /// before they were stored.
    private func install(_ loaded: ActiveRollouts) -> ActiveRollouts {
        var loaded = loaded
        if let previous = active { loaded.keepNewerStatuses(of: previous) }
        active = loaded
        loadingActive = nil
        return loaded
    }

    // MARK: Timer

    /// Evaluates every rolling or paused rollout (called every `tickInterval` by `RolloutTicker`). Failures are logged,
    /// each rollout's on its own: one that cannot be evaluated (a status row that cannot be read) does not hold back
    /// the services after it.
    func tick() async {
        guard beginDriving() else { return }
        let active: [RolloutRecord]
        do {
            active = try await store.activeRollouts()
        } catch {
            logger.warning("Rollout evaluation failed", metadata: ["error.message": "\(error)"])
            return
        }
        let ids = Set(active.map(\.id))
        healthySince = healthySince.filter { ids.contains($0.key) }
        persistedTimers = persistedTimers.filter { ids.contains($0.key) }
        timersObserved = timersObserved.filter { ids.contains($0.key) }
        for rollout in active {
            do {
                try await evaluate(rollout)
            } catch {
                logger.warning("Rollout evaluation failed", metadata: ["ferry.service": "\(rollout.service)", "error.message": "\(error)"])
            }
        }
    }

    // MARK: Evaluation

    /// Whether this controller drives rollouts now; a new term, or one resumed after a pause longer than
    /// `maximumDrivingPause`, starts from the persisted timers.
    private func beginDriving() -> Bool {
        let (leading, current) = leadership.current
        guard leading else { return false }
        let instant = now()
        let paused = lastDriven.map { abs(instant.timeIntervalSince($0)) > maximumDrivingPause } ?? false
        lastDriven = instant
        if current != term || paused {
            term = current
            healthySince = [:]
            persistedTimers = [:]
            timersObserved = [:]
            active = nil
        }
        return true
    }

    /// Whether this controller still drives rollouts in the term it began with: checked again before each write, as
    /// leadership may be lost during the reads before it.
    private var stillDriving: Bool { leadership.current == (true, term) }

    /// Evaluates `rollout` with its members' statuses read from the store.
    private func evaluate(_ rollout: RolloutRecord) async throws {
        try await evaluate(rollout, statuses: ActiveRollouts.memberStatuses(of: rollout, from: store))
    }

    /// Evaluates `rollout` with `statuses` (agent id → status, members only) and writes what the machine decides.
    private func evaluate(_ rollout: RolloutRecord, statuses: [String: ServiceStatusRecord]) async throws {
        let instant = now()
        if persistedTimers[rollout.id] == nil {
            // First look at this rollout in this term: continue the timers a previous leader (or run) persisted, if it
            // looked at them recently. Continued after an outage of every controller, a wave advanced at the first
            // healthy report once it was over, on hours nobody saw.
            let stored = try await store.rolloutHealthTimers(rolloutID: rollout.id)
            let observed = try await store.rolloutHealthTimersObservedAt(rolloutID: rollout.id)
            let fresh = observed.map { abs(instant.timeIntervalSince($0)) <= Double(configuration.staleAfter.components.seconds) } ?? false
            if !fresh, !stored.isEmpty {
                logger.info(
                    "Wave timers start again: not looked at since before an outage",
                    metadata: [
                        "ferry.service": "\(rollout.service)", "ferry.serial": "\(rollout.serial)",
                        "ferry.rollout.timers_observed_at": "\(observed.map(Timestamp.format) ?? "never")",
                    ]
                )
            }
            persistedTimers[rollout.id] = stored
            healthySince[rollout.id] = (fresh ? stored : [:]).merging(healthySince[rollout.id] ?? [:]) { stored, _ in stored }
        }
        let timers = RolloutEvaluator.updatedTimers(
            healthySince[rollout.id] ?? [:],
            rollout: rollout,
            statuses: statuses,
            now: instant,
            staleAfter: configuration.staleAfter
        )
        healthySince[rollout.id] = timers
        guard stillDriving else { return }
        if timers != persistedTimers[rollout.id] {
            try await store.saveRolloutHealthTimers(rolloutID: rollout.id, timers, observedAt: instant)
            persistedTimers[rollout.id] = timers
            timersObserved[rollout.id] = instant
        } else if timersObserved[rollout.id].map({ abs(instant.timeIntervalSince($0)) >= timerConfirmInterval }) ?? true {
            try await store.confirmRolloutHealthTimers(rolloutID: rollout.id, observedAt: instant)
            timersObserved[rollout.id] = instant
        }
        let decision = RolloutEvaluator.decide(
            rollout,
            statuses: statuses,
            healthySince: timers,
            now: instant,
            staleAfter: configuration.staleAfter
        )
        var names: [String: String] = [:]
        if case .halt = decision { names = try await store.agentNamesByID() }
        var machine = RolloutStateMachine(rollout)
        guard case .persist(let transition) = try machine.evaluated(decision, agentNames: names, at: instant), stillDriving else { return }
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

    /// Applies `action` to the rollout of `serial` of `service`, or when `serial` is `nil` to the one that governs what
    /// its agents receive (its latest, or the latest that started while a newer release awaits approval: a pause or an
    /// abort is meant for what rolls; the rollout awaiting approval is named by its serial).
    /// - Parameter actor: who asked (the token's name), recorded in the reason and the event.
    /// - Throws: `RolloutControlError`.
    func perform(_ action: RolloutAction, service: String, serial: Int64? = nil, by actor: String) async throws -> RolloutRecord {
        // The rollout is chosen once: a retry after a lost compare-and-set reads the same one again, never a newer
        // publish's (which the operator did not mean to pause or abort).
        var chosen = serial
        for _ in 0..<5 {
            let read =
                if let chosen { try await store.rollout(service: service, serial: chosen) } else {
                    try await RolloutRecord.governing(store.currentRollouts(for: [service]))[service]
                }
            guard let rollout = read else {
                throw RolloutControlError.noRollout(service: service)
            }
            chosen = rollout.serial
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
        let running = try await store.rolloutStatuses(service: rollout.service).values.filter {
            members.contains($0.agentID) && $0.status.serial == rollout.serial
        }
        guard !running.isEmpty else { return [] }
        let names = try await store.agentNamesByID()
        return running.map { names[$0.agentID] ?? $0.agentID }.sorted()
    }

    /// Performs what a machine decided: writes the transition (compare-and-set), then forgets the health timers of a
    /// rollout no longer evaluated and, when agents' desired releases change, wakes them.
    /// - Returns: whether the transition was written (`false`: the rollout changed since it was read).
    private func commit(_ transition: RolloutStateMachine.Transition, _ message: Logger.Message, _ metadata: Logger.Metadata) async throws -> Bool {
        // Whether it was written or refused as stale, the copy the reports evaluate against is out of date.
        active = nil
        guard try await store.updateRollout(transition) else { return false }
        let rollout = transition.rollout
        if !rollout.state.isActive {
            healthySince[rollout.id] = nil
            persistedTimers[rollout.id] = nil
            timersObserved[rollout.id] = nil
        }
        logger.info(message, metadata: metadata)
        if transition.changesDesiredState { desiredStates.rolloutChanged(service: rollout.service) }
        return true
    }
}

/// The open rollouts as status reports evaluate them: each with its member set and its members' statuses, as read from
/// the store at `loadedAt` and updated by the reports since (`RolloutCoordinator.statusReceived`).
struct ActiveRollouts: Sendable {
    struct Entry: Sendable {
        var record: RolloutRecord
        var members: Set<String>
        /// Agent id → the latest status of the rollout's service, members only.
        var statuses: [String: ServiceStatusRecord]
    }

    /// Service → its open rollout (a service has at most one: a publish supersedes the previous one).
    var byService: [String: Entry]
    /// The desired-state generation when read.
    var generation: UInt64
    var loadedAt: ContinuousClock.Instant

    static func load(from store: any ControllerStore, generation: UInt64) async throws -> ActiveRollouts {
        let loadedAt = ContinuousClock.now
        var byService: [String: Entry] = [:]
        for rollout in try await store.activeRollouts() {
            let statuses = try await memberStatuses(of: rollout, from: store)
            byService[rollout.service] = Entry(record: rollout, members: Set(rollout.agentOrder), statuses: statuses)
        }
        return ActiveRollouts(byService: byService, generation: generation, loadedAt: loadedAt)
    }

    /// Takes every member status of `other` newer than this copy's (reports applied to an older copy while this one
    /// was read from the store).
    mutating func keepNewerStatuses(of other: ActiveRollouts) {
        for (service, entry) in byService {
            guard let older = other.byService[service], older.record.id == entry.record.id else { continue }
            for (agentID, status) in older.statuses where entry.members.contains(agentID) {
                if let mine = entry.statuses[agentID], mine.updatedAt >= status.updatedAt { continue }
                byService[service]?.statuses[agentID] = status
            }
        }
    }

    /// The stored statuses of `rollout`'s service, members only, by agent id, without their processes (no rule of a
    /// rollout reads them). The timer reads these every `tickInterval` and the reports' copy after every transition:
    /// reading and decoding every status whole cost about a quarter of a second of CPU each time at 10,000 agents.
    static func memberStatuses(of rollout: RolloutRecord, from store: any ControllerStore) async throws -> [String: ServiceStatusRecord] {
        let members = Set(rollout.agentOrder)
        return try await store.rolloutStatuses(service: rollout.service).filter { members.contains($0.key) }
    }
}

/// Evaluation rounds shared by concurrent status reports. A report asks for a round that starts after it was taken
/// in; while one runs, every report that arrives waits for the next, which one driver task runs for all of them. Rounds
/// are at least `spacing` apart, so a fleet reporting at once costs a bounded number of evaluations per second
/// instead of one per report.
final class EvaluationRounds: Sendable {
    private struct State {
        var started: UInt64 = 0
        var finished: UInt64 = 0
        var driving = false
        var waiters: [(round: UInt64, continuation: CheckedContinuation<Void, Never>)] = []
    }

    private let state = Mutex(State())
    let spacing: Duration

    init(spacing: Duration = .milliseconds(10)) { self.spacing = spacing }

    /// How many rounds have finished.
    var finished: UInt64 { state.withLock { $0.finished } }
    /// How many reports wait for a round to finish.
    var waiting: Int { state.withLock { $0.waiters.count } }

    /// Waits until a round that starts after this call has finished; starts the driver when none runs.
    func awaitRound(driver coordinator: RolloutCoordinator) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let startDriver = state.withLock { state -> Bool in
                state.waiters.append((state.started + 1, continuation))
                guard !state.driving else { return false }
                state.driving = true
                return true
            }
            guard startDriver else { return }
            Task { await self.drive(coordinator) }
        }
    }

    private func drive(_ coordinator: RolloutCoordinator) async {
        while true {
            let round = state.withLock { state -> UInt64? in
                guard state.waiters.contains(where: { $0.round > state.finished }) else {
                    state.driving = false
                    return nil
                }
                state.started += 1
                return state.started
            }
            guard let round else { return }
            let began = ContinuousClock.now
            await coordinator.evaluationRound()
            let done = state.withLock { state -> [CheckedContinuation<Void, Never>] in
                state.finished = round
                let ready = state.waiters.filter { $0.round <= round }.map(\.continuation)
                state.waiters.removeAll { $0.round <= round }
                return ready
            }
            for continuation in done { continuation.resume() }
            try? await Task.sleep(until: began + spacing, clock: .continuous)
        }
    }
}
