import Foundation
import Shared

/// The fleet at one instant: services, the summary of where every agent stands, one page of agents (failures first)
/// with where each service stands on each of them, rollouts and events. Served as `GET /v1/fleet` and rendered by the
/// dashboard; with 10,000 agents it reads counts grouped in SQL and the statuses of one page, not 10,000 statuses.
struct FleetSnapshot: Sendable {
    struct Agent: Sendable {
        var record: AgentRecord
        var isStale: Bool
        /// Latest status per service the agent reported, by service name.
        var statuses: [String: ServiceStatusRecord]
        /// Two running agents report as this one (`ControllerCore.hasIdentityConflict`).
        var identityConflict = false
    }

    var generatedAt: Date
    var pollInterval: Duration
    var services: [ServiceSummary]
    /// Per service: versions × phases counts over every agent.
    var summary = FleetSummary([])
    /// The page of agents `query` asked for.
    var agents: [Agent]
    /// What was asked for, and how many agents match it in all.
    var query = FleetQuery()
    var matching = 0
    /// Agents enrolled, and how many of them are stale.
    var enrolled = 0
    var staleAgents = 0
    /// The latest rollout of every service that has one, sorted by service.
    var rollouts: [RolloutView] = []
    /// The newest events (publishes, waves, halts, operator actions, agents' failures), newest first.
    var events: [RolloutEvent] = []
    /// The names of the agents `events` name, by id (the page of agents holds only some of them).
    var eventAgentNames: [String: String] = [:]
    /// Releases stored with fewer signatures than the trust root's release threshold, waiting for approvers, by
    /// service.
    var approvals: [ReleaseRecord] = []
    /// The controller's newest trust root, or why it cannot use its chain.
    var trust: Result<TrustedRoot, ControllerTrustError>?

    /// How many events the snapshot carries.
    static let eventCount = 20

    /// Reads the fleet from `core`'s store: the summary, and the page of agents `query` selects.
    ///
    /// The reads that do not depend on each other run at once (on PostgreSQL, on connections of their own): one after
    /// another, a dashboard of 10,000 agents waited for each round trip and each query in turn, the rollouts' statuses
    /// (most of it) after all the counts (docs/benchmarks.md).
    static func load(from core: ControllerCore, query: FleetQuery = FleetQuery()) async throws -> FleetSnapshot {
        let now = core.now()
        let staleBefore = core.staleBefore(now)
        let store = core.store
        async let services = store.serviceSummaries()
        async let counts = store.fleetCounts(staleBefore: staleBefore)
        // Counted, not paged: a page of one still ordered every agent by its statuses to find it (twice).
        async let totals = store.agentTotals(staleBefore: staleBefore)
        async let page = Self.page(query, staleBefore: staleBefore, now: now, core: core)
        let names = try await store.agentNamesByID()
        async let rollouts = RolloutView.load(try await store.currentRollouts(for: nil), names: names, from: store)
        async let roots = store.trustRoots()
        async let events = store.events(service: nil, limit: eventCount)
        let awaiting = try await rollouts.map(\.rollout).filter { $0.state == .awaitingApproval }
        let approvals = try await store.releases(awaiting.map { ReleaseKey(service: $0.service, serial: $0.serial) })
        let trust: Result<TrustedRoot, ControllerTrustError>
        do {
            trust = .success(try core.trust.follow(try await roots))
        } catch let error as ControllerTrustError {
            trust = .failure(error)
        }
        let (agents, matching) = try await page
        return FleetSnapshot(
            generatedAt: now,
            pollInterval: core.configuration.pollInterval,
            services: try await services,
            summary: FleetSummary(try await counts),
            agents: agents,
            query: query,
            matching: matching,
            enrolled: try await totals.enrolled,
            staleAgents: try await totals.stale,
            rollouts: try await rollouts,
            events: try await events,
            eventAgentNames: Dictionary(
                try await events.compactMap { event in event.agentID.flatMap { id in names[id].map { (id, $0) } } },
                uniquingKeysWith: { first, _ in first }
            ),
            approvals: approvals,
            trust: trust
        )
    }

    /// The page of agents `query` selects, each with its statuses, and how many agents match in all.
    private static func page(_ query: FleetQuery, staleBefore: Date, now: Date, core: ControllerCore) async throws -> ([Agent], Int) {
        // A standing identity conflict is stored at each switch-back (`recordIdentityConflict`): the store puts those first.
        let page = try await core.store.agentPage(query, staleBefore: staleBefore, conflictsSince: now.addingTimeInterval(-core.identities.window))
        var statuses: [String: [String: ServiceStatusRecord]] = [:]
        for status in try await core.store.serviceStatuses(agentIDs: page.agents.map(\.id)) {
            statuses[status.agentID, default: [:]][status.status.service] = status
        }
        let agents = page.agents.map { record in
            Agent(
                record: record,
                isStale: core.isStale(record, at: now),
                statuses: statuses[record.id] ?? [:],
                identityConflict: core.hasIdentityConflict(record, at: now)
            )
        }
        return (agents, page.total)
    }

    /// The `GET /v1/fleet` document.
    var json: JSONValue {
        .object([
            "generatedAt": .string(Timestamp.format(generatedAt)),
            "pollSeconds": .integer(pollInterval.components.seconds),
            "services": .array(services.map(Self.json(_:))),
            "summary": summary.json,
            "agents": .array(agents.map(Self.json(_:))),
            "staleAgents": .integer(Int64(staleAgents)),
            "page": .object([
                "offset": .integer(Int64(query.offset)), "limit": .integer(Int64(query.limit)), "returned": .integer(Int64(agents.count)),
                "matching": .integer(Int64(matching)),
            ]),
            "rollouts": .array(rollouts.map(\.json)),
            "events": .array(events.map(\.json)),
            "approvals": .array(approvals.map(Self.json(approval:))),
            "trustRoot": trustJSON,
        ])
    }

    /// A release awaiting approval: who published it and which release keys signed it so far.
    private static func json(approval record: ReleaseRecord) -> JSONValue {
        .object([
            "service": .string(record.service), "serial": .integer(record.serial), "version": .string(record.version),
            "publishedBy": .string(record.publishedBy), "createdAt": .string(Timestamp.format(record.createdAt)),
            "signedBy": .array(record.signedBy.map { .string($0) }),
            "signaturesRequired": .integer(Int64(record.signaturesRequired)),
        ])
    }

    /// The controller's newest trust root, or the problem with its chain.
    private var trustJSON: JSONValue {
        switch trust {
        case nil:
            return .null
        case .success(let root)?:
            return .object([
                "version": .integer(root.version),
                "expiresAt": root.isFromTrustedKeys ? .null : .string(Timestamp.format(root.root.expiresAt)),
                "expired": .bool(root.root.isExpired(at: generatedAt)),
                "fromTrustedKeys": .bool(root.isFromTrustedKeys),
                "releaseThreshold": .integer(Int64(root.root.releaseRole.threshold)),
            ])
        case .failure(let error)?:
            return .object(["problem": .string("\(error)")])
        }
    }

    private static func json(_ summary: ServiceSummary) -> JSONValue {
        .object([
            "name": .string(summary.name),
            "latestSerial": summary.latestSerial.map { .integer($0) } ?? .null,
            "latestVersion": summary.latestVersion.map { .string($0) } ?? .null,
            "releases": .integer(Int64(summary.releaseCount)),
            "agents": .integer(Int64(summary.agentCount)),
        ])
    }

    private static func json(_ agent: Agent) -> JSONValue {
        let record = agent.record
        let services: [JSONValue] = record.services.map { service in
            guard let entry = agent.statuses[service] else {
                return .object(["service": .string(service), "reported": .bool(false)])
            }
            let status = entry.status
            return .object([
                "service": .string(service), "reported": .bool(true),
                "serial": status.serial.map { .integer($0) } ?? .null,
                "version": status.version.map { .string($0) } ?? .null,
                "targetSerial": status.targetSerial.map { .integer($0) } ?? .null,
                "phase": .string(status.phase.rawValue), "health": .string(status.health.rawValue),
                "message": .string(status.message), "updatedAt": .string(Timestamp.format(entry.updatedAt)),
                "processes": .integer(Int64(status.processes.count)),
                // The failure to look at now (a serial above the running one failed), with its diagnosis and the end of
                // its log tails (`ReleaseFailure.FleetExcerpt`; the agent and rollout documents carry them whole).
                "failure": status.currentFailure?.fleetExcerpt.json ?? .null,
            ])
        }
        return .object([
            "id": .string(record.id), "name": .string(record.name), "hostname": .string(record.hostname),
            "enrolledAt": .string(Timestamp.format(record.enrolledAt)),
            // The EC2 instance the agent proved at enrolment (`--instance-identity-cert`), else null: what an operator
            // terminates or replaces in the auto scaling group.
            "instanceId": record.instanceID.map { .string($0) } ?? .null,
            "lastSeen": record.lastSeen.map { .string(Timestamp.format($0)) } ?? .null,
            "stale": .bool(agent.isStale), "identityConflict": .bool(agent.identityConflict),
            "agentVersion": record.agentVersion.map { .string($0) } ?? .null,
            "processManager": record.processManager.map { .string($0) } ?? .null,
            "trustRoot": .object([
                "version": record.trustRootVersion.map { .integer($0) } ?? .null,
                "problem": record.trustRootProblem.map { .string($0) } ?? .null,
            ]),
            "services": .array(services),
        ])
    }
}
