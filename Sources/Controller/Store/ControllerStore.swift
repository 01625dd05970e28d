import Foundation
import Shared

#if canImport(Glibc)
import Glibc
#endif

/// Everything the controller persists except artifact bytes: tokens, releases, agents and their status.
///
/// Handlers only talk to this protocol, so a PostgreSQL store (for several replicas) can be added without touching
/// them. Implementations must make `insertRelease` atomic with its serial check: two publishers racing for the same
/// serial must see one success and one `StoreError.staleSerial`.
protocol ControllerStore: Sendable {
    // MARK: Tokens

    /// Stores an operator, enroll or viewer token by the SHA-256 hex of its text (the text itself is never stored).
    /// - Throws: `StoreError.invalidToken` for an agent token or an enroll token without a scope.
    func createToken(_ token: TokenRecord, hash: String) async throws

    /// Every operator, enroll and viewer token (revoked ones too), oldest first. Never a secret or a hash.
    func tokens() async throws -> [TokenRecord]

    /// Marks the token `id` revoked at `date` (an already revoked token keeps its first time).
    /// - Returns: the token, or `nil` when no token has that id.
    func revokeToken(id: String, at date: Date) async throws -> TokenRecord?

    /// The principal a token hash belongs to (operator/enroll/viewer tokens and agent tokens) and whether it was
    /// revoked, or `nil`.
    func credential(forTokenHash hash: String) async throws -> StoredCredential?

    /// Records when tokens were last used (by id), in one transaction. Unknown ids are ignored; a time never moves
    /// back.
    func recordTokenUse(_ lastUsed: [String: Date]) async throws

    /// Stores a release together with the rollout `opening` starts (`RolloutStateMachine.publish`) and its events,
    /// atomically.
    ///
    /// In the same transaction, the service's previous rollout goes through `RolloutStateMachine.superseded`, and what
    /// the machine decides is written (an open rollout becomes `superseded`, with its event). The new rollout's stable
    /// serial is the previous rollout's serial when that one completed, otherwise the previous rollout's stable serial;
    /// without any previous rollout, the highest serial stored before this one. It starts in `opening.state` at wave 0.
    /// - Throws: `StoreError.staleSerial` unless its serial is above every stored serial of its service.
    func insertRelease(_ release: ReleaseRecord, rollout opening: RolloutStateMachine.Opening) async throws -> PublishedRollout

    /// `insertRelease(_:rollout:)`, which with `requiringStoredArtifact` first checks, in the same transaction, that the
    /// database holds the release's artifact (`artifacts` row; several controllers on PostgreSQL): a prune through
    /// another controller (`removeArtifactRows`) and this publish then take the write lock one after the other, and
    /// never leave a release naming an artifact the database lost.
    /// - Throws: `StoreError.unknownArtifact` when the row is missing, `StoreError.staleSerial`.
    func insertRelease(
        _ release: ReleaseRecord,
        rollout opening: RolloutStateMachine.Opening,
        requiringStoredArtifact: Bool
    ) async throws -> PublishedRollout

    // MARK: Artifact retention

    /// The artifacts (lowercase hex digests) the retention policy keeps: those of the newest `keepReleases` releases of
    /// every service (awaiting approval or not), of every release an agent reports running, and of the serial and the
    /// stable serial of each service's latest rollout and of every open one (what agents are told to run).
    func retainedArtifacts(keepReleases: Int) async throws -> Set<String>

    /// The artifact rows of the database (several controllers on PostgreSQL; empty otherwise), by digest.
    func artifactRows() async throws -> [String: StoredArtifactRow]

    /// Under the write lock every publish takes: reads again what `retainedArtifacts` keeps, and deletes the rows (and
    /// chunks) of those of `candidates` it does not keep and that were stored before `cutoff`.
    /// - Returns: what is retained now (the caller removes no local copy of those either) and the rows deleted.
    func removeArtifactRows(
        _ candidates: Set<String>,
        storedBefore cutoff: Date,
        keepReleases: Int
    ) async throws -> (retained: Set<String>, removed: Set<String>)

    /// The highest serial published for `service`, or `nil` when it has none.
    func latestSerial(service: String) async throws -> Int64?

    /// The highest-serial release of each of `services` that has one, sorted by service name.
    func latestReleases(for services: [String]) async throws -> [ReleaseRecord]

    /// Releases of `service`, newest (highest serial) first, at most `limit`.
    func releases(service: String, limit: Int) async throws -> [ReleaseRecord]

    /// The release `serial` of `service`, or `nil` when none is stored.
    func release(service: String, serial: Int64) async throws -> ReleaseRecord?

    /// Every service that has a release or an agent running it, sorted by name.
    func serviceSummaries() async throws -> [ServiceSummary]

    /// Enrolls an agent (`.create`), or replaces the agent of the same name (`.replace`: same id, new token, new
    /// services), in one transaction with the use of the enrollment token.
    /// - Parameter proposedID: the id to give a new agent.
    /// - Returns: the agent, whether an existing agent was replaced, and whether this repeated an enrolment already
    ///   stored (the agent of that name holds `tokenHash` already, for the same services and instance: a retry after a
    ///   lost answer; nothing was written, no use consumed).
    /// - Throws: `StoreError.agentExists` (`.create` of a taken name; the token use is not consumed),
    ///   `StoreError.tokenUnusable` (the enrollment token was revoked, expired or used up: two enrolments racing for
    ///   the last use see one success).
    func enrollAgent(
        proposedID: String,
        name: String,
        hostname: String,
        services: [String],
        tokenHash: String,
        mode: EnrollmentMode,
        instanceID: String?,
        at date: Date
    ) async throws -> (agent: AgentRecord, replaced: Bool, repeated: Bool)

    /// Deletes the agent named `name`, its token and its statuses (events keep their history).
    /// - Returns: the removed agent, or `nil` when none has that name.
    func removeAgent(name: String) async throws -> AgentRecord?

    /// The ids of up to `limit` agents whose last status report (or, never having reported, enrolment) is before
    /// `cutoff`, in id order.
    func silentAgents(since cutoff: Date, limit: Int) async throws -> [String]

    /// Deletes, as `removeAgent` does, those of `ids` still silent since `cutoff` (a report committed meanwhile keeps
    /// its agent).
    /// - Returns: the removed agents.
    func removeAgents(_ ids: [String], silentSince cutoff: Date) async throws -> [AgentRecord]

    /// The newest status report any agent sent (`nil`: none ever did).
    func latestStatusReport() async throws -> Date?

    /// Whether a stored release of one of `agentID`'s services names the artifact `sha256` (lowercase hex).
    func isArtifact(_ sha256: String, releasedForServicesOf agentID: String) async throws -> Bool

    /// The agent with `id`, or `nil`.
    func agent(id: String) async throws -> AgentRecord?

    /// The agent named `name`, or `nil`.
    func agent(named name: String) async throws -> AgentRecord?

    /// Every agent, sorted by name.
    func agents() async throws -> [AgentRecord]

    /// The ids of every enrolled agent.
    func agentIDs() async throws -> Set<String>

    /// Stores a standing identity conflict of `agentID` (`AgentIdentityWatch`) at a switch-back, so every controller
    /// shows it, and after a restart: the earliest notice while it stands (a stored conflict lapses `window` after its
    /// last switch-back) and the latest switch-back. Nothing for an agent that is not enrolled.
    func recordIdentityConflict(agentID: String, _ conflict: AgentIdentityWatch.Standing, window: TimeInterval) async throws

    /// The identity conflict last stored for `agentID`, standing or lapsed (the caller judges by its last switch-back);
    /// `nil` when none was stored since the agent enrolled.
    func identityConflict(agentID: String) async throws -> AgentIdentityWatch.Standing?

    /// Records a status report: the latest per service, one history entry (keeping the newest `historyLimit`), and
    /// the agent's last-seen time, version and process manager.
    /// - Throws: `StoreError.unknownAgent`.
    func recordStatus(_ report: StatusReport, agentID: String, receivedAt date: Date, historyLimit: Int) async throws

    /// Records many status reports, in order, as `recordStatus` would one by one, in one transaction: what the
    /// status write queue (`StatusReportQueue`) commits, with each report's `events`. A report of an unknown agent
    /// stores nothing (its events neither) and does not fail the others.
    /// - Returns: for each report, in order, whether its agent existed (and the report was stored), and the hostname the
    ///   agent was known by just before it.
    func recordStatuses(_ writes: [StatusWrite], historyLimit: Int) async throws -> [StatusWriteResult]

    /// The latest status of every (agent, service) pair that reported.
    func serviceStatuses() async throws -> [ServiceStatusRecord]

    /// An agent's stored reports, newest first, at most `limit`.
    func statusHistory(agentID: String, limit: Int) async throws -> [StatusHistoryEntry]

    /// The latest status of every service `agentID` reported.
    func serviceStatuses(agentID: String) async throws -> [ServiceStatusRecord]

    /// The serial every agent last reported running for each of `services` (agents that reported none are left out),
    /// by agent id then service: what desired states need of 10,000 statuses, in one query.
    func runningSerials(for services: [String]) async throws -> [String: [String: Int64]]

    // MARK: Fleet views (10,000 agents summarised without reading 10,000 statuses)

    /// How many agents of each service stand where: one row per (service, version, serial, phase, health, stale),
    /// agents that did not report a service counted with phase `unreported`. An agent is stale when neither its last
    /// report nor (without one) its enrolment is after `staleBefore`.
    func fleetCounts(staleBefore: Date) async throws -> [FleetCountRow]

    /// The agents `query` selects, trouble first — an identity conflict whose last switch-back is after
    /// `conflictsSince` (two machines reporting as one agent), then failures (failed or rolled back, unhealthy, stale,
    /// deploying) — then by name: the page `query.offset`, `query.limit`, and how many match in all.
    func agentPage(_ query: FleetQuery, staleBefore: Date, conflictsSince: Date) async throws -> AgentPage

    /// How many agents run each service, by service.
    func agentCounts() async throws -> [String: Int]

    /// How many agents are enrolled, and how many of them are stale as `fleetCounts` counts them (neither the last
    /// report nor, without one, the enrolment after `staleBefore`): what `/metrics` reports, counted by the database
    /// rather than by reading every agent on each scrape.
    func agentTotals(staleBefore: Date) async throws -> AgentTotals

    /// The id and name of every agent that runs `service` (every agent: `nil`), in no particular order: what a publish
    /// needs for its rollout's order and a rollout view for its agents' names, without reading and decoding every agent.
    func agentNames(service: String?) async throws -> [AgentName]

    /// The latest status of every agent for `service`, by agent id, without its processes (`processes` is empty): what
    /// rollouts need (where each agent stands on the serial, and since when), read from the stored JSON by the
    /// database's own JSON functions instead of parsing and checking every status whole. Equal to the
    /// statuses read whole (`serviceStatuses(agentIDs:)`) with the processes and each failure's `diagnosis` left out
    /// (its log tails: `RolloutDetail` reads them for the agents it shows).
    func rolloutStatuses(service: String) async throws -> [String: ServiceStatusRecord]

    /// What a rollout view shows of every agent's latest status for `service`, by agent id. Serial, version, phase and
    /// health come from their columns. Only a status that lists failures, or is failed or rolled back, is read from the
    /// JSON with its target serial, message and failures: for every other status those cannot change where the agent
    /// stands (`RolloutAgentStanding` of it equals that of the whole status), so its `message` is empty and its
    /// `targetSerial` nil here. For the views only: during an upgrade a controller of schema version 6 may replace a
    /// status without its `failure_count`, which a later report corrects (docs/ha.md); decisions read
    /// `rolloutStatuses`.
    func rolloutViewStatuses(service: String) async throws -> [String: ServiceStatus]

    /// The latest statuses of the agents `agentIDs`.
    func serviceStatuses(agentIDs: [String]) async throws -> [ServiceStatusRecord]

    /// The stored releases among `keys` (missing ones are left out), sorted by service then serial.
    func releases(_ keys: [ReleaseKey]) async throws -> [ReleaseRecord]

    // MARK: Rollouts

    /// The latest (highest-serial) rollout of each of `services` that has one and, when it is an older one, the newest
    /// that started and is still open (rolling, paused, halted: left going by a publish awaiting approval, it governs
    /// what the service's agents receive: `RolloutRecord.governing`); sorted by service, then newest first. Every
    /// service's when `services` is `nil`.
    func currentRollouts(for services: [String]?) async throws -> [RolloutRecord]

    /// Rollouts of `service`, newest first, at most `limit`.
    func rollouts(service: String, limit: Int) async throws -> [RolloutRecord]

    /// The rollout of `serial` of `service`, or `nil`.
    func rollout(service: String, serial: Int64) async throws -> RolloutRecord?

    /// Rollouts that are rolling or paused (the ones still evaluated), sorted by service.
    func activeRollouts() async throws -> [RolloutRecord]

    /// Writes the rollout's state, wave, reason and time that a machine decided, and the transition's events,
    /// atomically — only if the stored rollout is still at `transition.expected` (compare-and-set, so two evaluations
    /// or replicas never both advance a wave).
    /// - Returns: whether the update happened.
    func updateRollout(_ transition: RolloutStateMachine.Transition) async throws -> Bool

    /// The persisted wave timers of a rollout: since when each agent has been healthy on its serial.
    func rolloutHealthTimers(rolloutID: Int64) async throws -> [String: Date]

    /// Replaces the persisted wave timers of a rollout (so a controller taking over continues them), and records
    /// `observedAt` (when not `nil`) as when the controller driving rollouts last looked at them.
    func saveRolloutHealthTimers(rolloutID: Int64, _ timers: [String: Date], observedAt: Date?) async throws

    /// Records that the controller driving rollouts looked at the rollout's wave timers at `observedAt`, unchanged.
    func confirmRolloutHealthTimers(rolloutID: Int64, observedAt: Date) async throws

    /// When the controller driving rollouts last looked at the rollout's wave timers (`nil`: never recorded). Timers not
    /// looked at for longer than a status stays fresh were kept through an outage of every controller, during which
    /// nothing showed the agents healthy.
    func rolloutHealthTimersObservedAt(rolloutID: Int64) async throws -> Date?

    /// Events, newest first, at most `limit`, of `service` or of every service.
    func events(service: String?, limit: Int) async throws -> [RolloutEvent]

    /// Events with an id above `id`, **oldest first**, at most `limit`, of `service` or of every service: what a
    /// follower of the event stream has not seen yet. Ids only grow.
    func events(service: String?, after id: Int64, limit: Int) async throws -> [RolloutEvent]

    /// The id of the newest event, or 0 when there is none: where a follower that wants only new events starts.
    func latestEventID() async throws -> Int64

    // MARK: Trust roots and approvals

    /// Every stored trust root, oldest (lowest version) first.
    func trustRoots() async throws -> [TrustRootRecord]

    /// The highest stored trust root version, or `nil` when none is stored.
    func latestTrustRootVersion() async throws -> Int64?

    /// Stores a trust root, atomically with the check that it is the next version: one above the highest stored, or any
    /// version when none is stored.
    /// - Throws: `StoreError.staleRootVersion` otherwise (two publishers racing see one success).
    func insertTrustRoot(_ root: TrustRootRecord) async throws

    /// Stores what an approval added to a release awaiting approval — its envelope with the new signatures, its signers
    /// and the signatures required — with the rollout transition the approval decided and its events, atomically; only
    /// while the release still has the signers `approval.previousSignedBy` and the rollout is still at
    /// `approval.transition.expected` (compare-and-set: of two approvals racing, one is written). A rollout the approval
    /// starts gets the service's stable serial as it is then, and supersedes the service's rolling, paused or halted
    /// rollout below it.
    /// - Returns: whether the update happened.
    func recordApproval(_ approval: ReleaseApproval) async throws -> Bool

    /// Closes the database, also when called from a cancelled task. No call may follow.
    func close() async throws
}

extension ControllerStore {
    /// Replaces the persisted wave timers of a rollout, leaving when they were last looked at as it is.
    func saveRolloutHealthTimers(rolloutID: Int64, _ timers: [String: Date]) async throws {
        try await saveRolloutHealthTimers(rolloutID: rolloutID, timers, observedAt: nil)
    }

    /// Every agent's name by id (`agentNames(service: nil)`): what rollout views and messages name agents by.
    func agentNamesByID() async throws -> [String: String] {
        Dictionary(try await agentNames(service: nil).map { ($0.id, $0.name) }, uniquingKeysWith: { first, _ in first })
    }

    /// Creates a token with a fresh public id; the stored record.
    @discardableResult
    func createToken(
        hash: String,
        name: String,
        role: TokenRole,
        scope: ServiceScope? = nil,
        expiresAt: Date? = nil,
        maxUses: Int? = nil,
        at date: Date
    ) async throws -> TokenRecord {
        let record = TokenRecord(
            id: Token.generateID(),
            name: name,
            role: role,
            scope: scope,
            createdAt: date,
            expiresAt: expiresAt,
            maxUses: maxUses
        )
        try await createToken(record, hash: hash)
        return record
    }

    /// The principal a token hash belongs to, revoked or not (see `credential(forTokenHash:)`).
    func principal(forTokenHash hash: String) async throws -> Principal? {
        try await credential(forTokenHash: hash)?.principal
    }

    /// `agentPage` without identity conflicts to put first.
    func agentPage(_ query: FleetQuery, staleBefore: Date) async throws -> AgentPage {
        try await agentPage(query, staleBefore: staleBefore, conflictsSince: .distantFuture)
    }

    /// Enrolls a new agent without consuming an enrollment token (tests, tools).
    /// - Throws: `StoreError.agentExists`.
    func enrollAgent(
        proposedID: String,
        name: String,
        hostname: String,
        services: [String],
        tokenHash: String,
        at date: Date
    ) async throws -> AgentRecord {
        try await enrollAgent(
            proposedID: proposedID,
            name: name,
            hostname: hostname,
            services: services,
            tokenHash: tokenHash,
            mode: .create(consumingToken: nil),
            instanceID: nil,
            at: date
        ).agent
    }

    /// Stores a release that reaches every agent at once (an `all` rollout, completed), superseding any open
    /// rollout of its service.
    /// - Throws: `StoreError.staleSerial` unless its serial is above every stored serial of its service.
    func insertRelease(_ release: ReleaseRecord, rollout opening: RolloutStateMachine.Opening) async throws -> PublishedRollout {
        try await insertRelease(release, rollout: opening, requiringStoredArtifact: false)
    }

    func insertRelease(_ release: ReleaseRecord) async throws {
        let plan = RolloutPlan(parameters: RolloutParameters(), agentOrder: [])
        _ = try await insertRelease(release, rollout: RolloutStateMachine.publish(release, plan: plan))
    }
}

/// What storing one status report found (`ControllerStore.recordStatuses`).
struct StatusWriteResult: Sendable, Equatable {
    /// Whether the agent existed: `false`, nothing was stored.
    var stored: Bool
    /// The hostname the agent was known by just before this report: the one its previous report named, whichever
    /// controller stored it (or the enrolment's, before any report). `nil` when not known.
    var hostnameBefore: String?
}

/// One status report to store (`ControllerStore.recordStatuses`).
struct StatusWrite: Sendable {
    let report: StatusReport
    let agentID: String
    let receivedAt: Date
    /// The report as `status_history` stores it, and each service's status as `service_status` does, in the order of
    /// `report.services`. Encoded when the write is made, on the reporting request's task: the writer that commits a
    /// batch runs one at a time, and encoding a thousand reports there lengthened every report's wait (about a fifth of
    /// a batch's time in a burst, docs/benchmarks.md).
    let reportText: String
    let serviceTexts: [String]
    /// The report without what changes in every report of a running app (each process's uptime, memory and CPU):
    /// equal fingerprints are the same news.
    let fingerprint: SHA256Digest
    /// Whether the report goes into `status_history`: `false` when it tells nothing the agent's last one did not
    /// (`StatusReportQueue` decides; the latest status is stored either way).
    var keepsHistory = true
    /// The events the report brings (its new failures), stored in the same transaction: none is lost when the batch
    /// fails, as the agent sends the report again and its failures are still new then.
    var events: [RolloutEventDraft] = []

    /// Encodes each service once: the report's text is its services' texts put into the text of the report without
    /// them, and the fingerprint re-encodes only services that have processes. (Encoding the report, its services and
    /// its steady copy separately was half of what a report cost its request in a burst; docs/benchmarks.md.)
    init(report: StatusReport, agentID: String, receivedAt: Date) {
        self.report = report
        self.agentID = agentID
        self.receivedAt = receivedAt
        let services = report.services.map { $0.json.encodedBytes() }
        serviceTexts = services.map { String(decoding: $0, as: UTF8.self) }
        guard let shell = Self.shell(of: report) else {
            // Not reached (the writer always writes `"services":[]` for the report without services); the plain way.
            reportText = String(decoding: report.json.encodedBytes(), as: UTF8.self)
            fingerprint = SHA256.hash(Self.steady(report).json.encodedBytes())
            return
        }
        reportText = String(decoding: shell.text(with: services), as: UTF8.self)
        let steady = report.services.indices.map { index in
            report.services[index].processes.isEmpty ? services[index] : Self.steady(report.services[index]).json.encodedBytes()
        }
        fingerprint = SHA256.hash(shell.text(with: steady))
    }

    /// The digest of `report` with each process's uptime, memory and CPU left out: what `fingerprint` is.
    static func fingerprint(of report: StatusReport) -> SHA256Digest {
        SHA256.hash(steady(report).json.encodedBytes())
    }

    /// `report` with each process's uptime, memory and CPU left out.
    static func steady(_ report: StatusReport) -> StatusReport {
        var steady = report
        steady.services = report.services.map(Self.steady)
        return steady
    }

    static func steady(_ service: ServiceStatus) -> ServiceStatus {
        var steady = service
        for process in steady.processes.indices {
            steady.processes[process].uptimeSeconds = nil
            steady.processes[process].memoryBytes = 0
            steady.processes[process].cpuPercent = 0
        }
        return steady
    }

    /// The text of a report without its services, cut where they go.
    struct Shell {
        /// Up to and with `"services":[`.
        var head: ArraySlice<UInt8>
        /// From the `]` that ends the services on.
        var tail: ArraySlice<UInt8>

        /// The report's text with `services` (each one's text, in order).
        func text(with services: [[UInt8]]) -> [UInt8] {
            var text: [UInt8] = []
            text.reserveCapacity(head.count + tail.count + services.reduce(services.count) { $0 + $1.count })
            text.append(contentsOf: head)
            for (index, service) in services.enumerated() {
                if index > 0 { text.append(UInt8(ascii: ",")) }
                text.append(contentsOf: service)
            }
            text.append(contentsOf: tail)
            return text
        }
    }

    /// The report's text without services, cut at its `"services":[]`. The first match is that key: keys are written
    /// in order and the ones before it hold strings, in which every `"` is escaped.
    static func shell(of report: StatusReport) -> Shell? {
        var empty = report
        empty.services = []
        let bytes = empty.json.encodedBytes()
        guard let start = firstOffset(of: servicesKey, in: bytes) else { return nil }
        let cut = start + servicesKey.count - 1
        return Shell(head: bytes[..<cut], tail: bytes[cut...])
    }

    /// Where `pattern` (not empty) first starts in `bytes`: `memchr` for its first byte, `memcmp` for the rest. The
    /// generic `firstRange(of:)` that `[UInt8]` gets from FoundationEssentials was 7 % of a report's encoding in the
    /// burst profile.
    static func firstOffset(of pattern: [UInt8], in bytes: [UInt8]) -> Int? {
        bytes.withUnsafeBytes { haystack in
            pattern.withUnsafeBytes { needle -> Int? in
                guard let base = haystack.baseAddress, let target = needle.baseAddress, !needle.isEmpty, needle.count <= haystack.count else {
                    return nil
                }
                let last = haystack.count - needle.count
                var offset = 0
                while offset <= last {
                    guard let found = memchr(base + offset, Int32(needle[0]), last - offset + 1) else { return nil }
                    offset = base.distance(to: UnsafeRawPointer(found))
                    if memcmp(base + offset, target, needle.count) == 0 { return offset }
                    offset += 1
                }
                return nil
            }
        }
    }

    private static let servicesKey = Array(#""services":[]"#.utf8)
}

/// How many events the store keeps.
enum EventRetention {
    /// Older events are deleted when newer ones are stored: the newest 10 000 the controllers made (publishes, waves,
    /// halts, approvals: no agent id), and apart from them the newest 10 000 agents reported. One budget for both let a
    /// release failing on a fleet of 10,000 (each agent's rollback an event) delete every publish, halt and abort of
    /// every service, when the history mattered most.
    static let limit = 10_000
    /// The rolled-back and refused events one agent reported that are kept, newest first. Each report may list 32
    /// failures of any serials, and each new one is an event: an agent holding only its own token pushed every
    /// publish, halt and approval out of the 10 000 in a few hundred reports.
    static let perAgent = 100
    /// The kinds an agent's report makes (`RolloutEventDraft.newFailures`).
    static let reportedByAgents: [RolloutEventKind] = [.rolledBack, .refused]
}
