import Foundation
import Shared

/// A rollout as operators see it: its state, its waves with their agents, and counts — the JSON of
/// `GET /v1/rollouts`, of the rollout actions, of a publish and of `GET /v1/fleet`.
struct RolloutView: Sendable {
    /// One agent of the rollout.
    struct Agent: Sendable {
        var id: String
        /// `nil` when the agent no longer exists.
        var name: String?
        /// The wave (0-based) that reaches it.
        var wave: Int
        var reached: Bool
        var standing: RolloutAgentStanding
        /// Its latest status for the service, if it reported.
        var status: ServiceStatus?
    }

    /// How many agents stand where. `updated` counts agents running the serial (healthy ones included), `pending`
    /// those neither updated nor failed.
    struct Counts: Sendable, Equatable {
        var agents = 0
        var updated = 0
        var healthy = 0
        var failed = 0
        var pending = 0
        /// Agents that report a serial above the rollout's (a newer release reached them): an `all` rollout, never
        /// superseded in the store, can no longer end with every agent on its serial.
        var newer = 0
    }

    var rollout: RolloutRecord
    /// In rollout order.
    var agents: [Agent]

    /// - Parameters:
    ///   - names: agent names by id.
    ///   - statuses: the latest status of the rollout's service by agent id.
    init(_ rollout: RolloutRecord, names: [String: String], statuses: [String: ServiceStatus]) {
        self.rollout = rollout
        let sizes = rollout.waveSizes
        let reached = rollout.reachedCount
        // The sizes are cumulative and increasing: the wave of each next agent is found by walking them once (a search
        // per agent was quadratic for `one-at-a-time`, a wave per agent: 10^8 steps per fleet view at 10,000 agents).
        var wave = 0
        agents = rollout.agentOrder.enumerated().map { index, id in
            while wave < sizes.count, index >= sizes[wave] { wave += 1 }
            return Agent(
                id: id,
                name: names[id],
                wave: wave < sizes.count ? wave : max(0, sizes.count - 1),
                reached: index < reached,
                standing: RolloutAgentStanding(status: statuses[id], serial: rollout.serial),
                status: statuses[id]
            )
        }
    }

    /// Builds the views of `rollouts` with one read of the agents' names and one of each service's statuses, without
    /// their processes, and from the status columns except where a status's failures decide where its agent stands
    /// (`rolloutViewStatuses`). Reading and decoding every agent and every status whole made `GET /v1/rollouts`, and the
    /// fleet view and dashboard that show the rollouts, take most of a second at 10,000 agents; extracting nine fields
    /// from every status's JSON was still most of a PostgreSQL dashboard (docs/benchmarks.md).
    /// - Parameter names: the agents' names by id when the caller read them already (`FleetSnapshot` names its events'
    ///   agents with them too).
    static func load(_ rollouts: [RolloutRecord], names: [String: String]? = nil, from store: any ControllerStore) async throws -> [RolloutView] {
        guard !rollouts.isEmpty else { return [] }
        let given = names
        let names: [String: String]
        if let given { names = given } else { names = try await store.agentNamesByID() }
        var statuses: [String: [String: ServiceStatus]] = [:]
        for service in Set(rollouts.map(\.service)) {
            statuses[service] = try await store.rolloutViewStatuses(service: service)
        }
        return rollouts.map { RolloutView($0, names: names, statuses: statuses[$0.service] ?? [:]) }
    }

    /// The view of a rollout a publish just opened, for the publish's answer. `names`: the rollout's agents by id
    /// (the publish read them for its plan). Only the agents the document lists (the first `listedAgentsPerWave` of
    /// each wave) have their statuses read: no agent can stand anywhere but `pending` on a serial that did not exist
    /// before this publish, so the counts need no other status. Reading and decoding every status of the service (and
    /// every agent again) was most of a publish at fleet size: 300 of its 370 ms after steady reports from 10,000 agents
    /// (issue 12).
    static func opened(_ rollout: RolloutRecord, names: [String: String], from store: any ControllerStore) async throws -> RolloutView {
        let unread = RolloutView(rollout, names: names, statuses: [:])
        let listed = unread.agentsByWave.flatMap { $0.prefix(listedAgentsPerWave).map(\.id) }
        var statuses: [String: ServiceStatus] = [:]
        for record in try await store.serviceStatuses(agentIDs: listed) where record.status.service == rollout.service {
            statuses[record.agentID] = record.status
        }
        return RolloutView(rollout, names: names, statuses: statuses)
    }

    var counts: Counts {
        var counts = Counts(agents: agents.count)
        for agent in agents {
            switch agent.standing.progress {
            case .healthy:
                counts.updated += 1
                counts.healthy += 1
            case .updated: counts.updated += 1
            case .failed: counts.failed += 1
            case .pending: counts.pending += 1
            }
            if let serial = agent.status?.serial, serial > rollout.serial { counts.newer += 1 }
        }
        return counts
    }

    /// The agents of each wave (by index), in rollout order: grouped in one pass, not filtered once per wave.
    var agentsByWave: [[Agent]] {
        var groups = Array(repeating: [Agent](), count: rollout.waveSizes.count)
        for agent in agents where groups.indices.contains(agent.wave) { groups[agent.wave].append(agent) }
        return groups
    }

    /// Agents listed per wave in the document (the rest are counted in `unlistedAgents`).
    static let listedAgentsPerWave = 100

    /// The document. `wave` is 1-based (the waves reached so far), `waveCount` the number of waves.
    var json: JSONValue {
        let sizes = rollout.waveSizes
        let counts = counts
        let groups = agentsByWave
        let waves: [JSONValue] = sizes.indices.map { index in
            let members = groups[index]
            // A wave of 10,000 agents is listed by its first ones and counted: the counts above say where all stand.
            return .object([
                "wave": .integer(Int64(index + 1)),
                "cumulativeAgents": .integer(Int64(sizes[index])),
                "reached": .bool(isWaveReached(index)),
                "agents": .array(members.prefix(Self.listedAgentsPerWave).map(Self.json(_:))),
                "unlistedAgents": .integer(Int64(max(0, members.count - Self.listedAgentsPerWave))),
            ])
        }
        let failed = agents.filter { $0.standing.progress == .failed }
        let failures: [JSONValue] = failed.prefix(Self.listedAgentsPerWave).map { agent in
            .object([
                "agentId": .string(agent.id), "agentName": agent.name.map { .string($0) } ?? .null,
                "kind": .string(agent.standing.failureKind ?? "failed"), "reason": .string(agent.standing.failureReason ?? ""),
            ])
        }
        return .object([
            "service": .string(rollout.service),
            "serial": .integer(rollout.serial),
            "version": .string(rollout.version),
            "stableSerial": rollout.stableSerial.map { .integer($0) } ?? .null,
            "strategy": .string(rollout.strategy.description),
            "waveStableSeconds": .integer(rollout.waveStable.components.seconds),
            "maxFailures": .integer(Int64(rollout.maxFailures)),
            "state": .string(rollout.state.rawValue),
            "wave": .integer(Int64(waveNumber)),
            "waveCount": .integer(Int64(sizes.count)),
            "waves": .array(waves),
            "counts": .object([
                "agents": .integer(Int64(counts.agents)), "updated": .integer(Int64(counts.updated)),
                "healthy": .integer(Int64(counts.healthy)), "failed": .integer(Int64(counts.failed)),
                "pending": .integer(Int64(counts.pending)), "newer": .integer(Int64(counts.newer)),
            ]),
            "failures": .array(failures),
            "unlistedFailures": .integer(Int64(max(0, failed.count - Self.listedAgentsPerWave))),
            "reason": .string(rollout.reason),
            "createdAt": .string(Timestamp.format(rollout.createdAt)),
            "updatedAt": .string(Timestamp.format(rollout.updatedAt)),
        ])
    }

    /// The current wave, 1-based: 0 while the release awaits approval (no wave has it) or when there are no waves.
    var waveNumber: Int {
        let sizes = rollout.waveSizes
        return sizes.isEmpty || rollout.state == .awaitingApproval ? 0 : min(rollout.currentWave, sizes.count - 1) + 1
    }

    /// Whether the wave of `index` has been given the serial: none while the release awaits approval (its agents keep
    /// the stable serial), every wave of a completed rollout.
    func isWaveReached(_ index: Int) -> Bool {
        switch rollout.state {
        case .awaitingApproval: false
        case .completed: true
        default: index <= rollout.currentWave
        }
    }

    private static func json(_ agent: Agent) -> JSONValue {
        var fields: [String: JSONValue] = [
            "id": .string(agent.id), "name": agent.name.map { .string($0) } ?? .null, "reached": .bool(agent.reached),
            "progress": .string(agent.standing.progress.rawValue),
            "serial": agent.status?.serial.map { .integer($0) } ?? .null,
        ]
        if let status = agent.status {
            fields["phase"] = .string(status.phase.rawValue)
            fields["health"] = .string(status.health.rawValue)
        }
        return .object(fields)
    }
}
