import Foundation
import SQLKit
import Shared
import TestSupport
import Testing

@testable import Controller

/// The store, on SQLite and on PostgreSQL: every test runs against both (`StoreBackendKind.available`).
@Suite struct StoreTests {
    static func open(_ directory: URL) async throws -> SQLControllerStore {
        try await SQLControllerStore.open(.init(path: directory.appendingPathComponent("ferry.sqlite").path), logger: ControllerFixture.logger)
    }

    static func record(serial: Int64, service: String = "api") throws -> ReleaseRecord {
        let digest = SHA256.hash([1])
        let release = ControllerFixture.release(
            service: service,
            serial: serial,
            artifact: ArtifactReference(url: ArtifactReference.controllerPath(for: digest), sha256: digest, size: 1)
        )
        let envelope = try Envelope.sign(payload: release.payload(), payloadType: Release.payloadType, with: [SigningKey.generate()])
        return ReleaseRecord(
            service: service,
            serial: serial,
            version: release.version,
            artifactSHA256: digest.hex,
            artifactSize: 1,
            envelope: envelope,
            publishedBy: "alice",
            createdAt: Date()
        )
    }

    /// Enrolls agent `agt_INDEX` (`agent-INDEX`, services api and web).
    static func enrollAgent(_ index: Int, in store: SQLControllerStore) async throws -> AgentRecord {
        try await store.enrollAgent(
            proposedID: "agt_\(index)",
            name: "agent-\(index)",
            hostname: "h",
            services: ["api", "web"],
            tokenHash: Token.digest("fyt_agent_\(index)"),
            at: Date()
        )
    }

    /// One agent's reports cannot push everyone else's history out: each report may list 32 failures of any serials,
    /// every new one an event, and alternating two such lists made 32 events a report. The agent's own rolled-back and
    /// refused events are kept to its newest `EventRetention.perAgent`; other agents' and operators' events stay.
    @Test(arguments: StoreBackendKind.available)
    func oneAgentsFailuresAreCappedWithoutTouchingOtherEvents(_ kind: StoreBackendKind) async throws {
        try await TestStore.with(kind) { store, _ in
            let flooder = try await Self.enrollAgent(0, in: store)
            let bystander = try await Self.enrollAgent(1, in: store)
            func write(_ agent: AgentRecord, failures: [ReleaseFailure]) async throws {
                let status = ServiceStatus(
                    service: "api",
                    serial: 1,
                    version: "1.0.0",
                    targetSerial: 1,
                    phase: .running,
                    message: "m",
                    health: .healthy,
                    failures: failures,
                    processes: []
                )
                var write = StatusWrite(
                    report: StatusReport(agentVersion: "1", hostname: "h", processManager: "pm2", services: [status]),
                    agentID: agent.id,
                    receivedAt: Date()
                )
                write.events = RolloutEventDraft.newFailures(in: write.report, from: agent, previous: [], at: Date())
                _ = try await store.recordStatuses([write], historyLimit: 5)
            }
            try await write(bystander, failures: [ReleaseFailure(serial: 7, reason: "crashed", kind: "rolled-back")])
            for round in 0..<10 {
                let kind = round.isMultiple(of: 2) ? "rolled-back" : "refused"
                try await write(flooder, failures: (1...32).map { ReleaseFailure(serial: Int64($0), reason: "round \(round)", kind: kind) })
            }
            let events = try await store.events(service: nil, limit: 1000)
            let flooded = events.filter { $0.agentID == flooder.id }
            #expect(flooded.count == EventRetention.perAgent)
            // The newest 100 of 320: rounds 9, 8 and 7 whole (96), and 4 of round 6.
            let rounds = flooded.map { $0.message.split(separator: " ").last.map(String.init) ?? "" }
            #expect(rounds.prefix(96).allSatisfy { ["7", "8", "9"].contains($0) } && rounds.suffix(4).allSatisfy { $0 == "6" }, "\(rounds)")
            #expect(events.filter { $0.agentID == bystander.id }.count == 1, "another agent's event stays")
        }
    }

    /// A release that fails on a whole fleet (an event per agent's rollback) keeps the controllers' own events: they
    /// and the agents' are kept apart, the newest `EventRetention.limit` of each. With one budget the failures of 10,000
    /// agents deleted the release's `published` event and every other service's history.
    @Test(arguments: StoreBackendKind.available)
    func aFleetWideFailureKeepsTheControllersEvents(_ kind: StoreBackendKind) async throws {
        try await TestStore.with(kind) { store, _ in
            let published = RolloutEventDraft(
                at: Date(),
                service: "api",
                serial: 7,
                kind: .published,
                message: "serial 7 published",
                agentID: nil
            )
            try await store.transaction { db in try await SQLControllerStore.insert([published], into: db) }
            // 101 agents' 100 failures each: 10,100 reported events, under every agent's own cap.
            let agents = 101
            for agent in 0..<agents {
                let failures = (0..<EventRetention.perAgent).map { index in
                    RolloutEventDraft(
                        at: Date(),
                        service: "web",
                        serial: 7,
                        kind: .rolledBack,
                        message: "agent \(agent) failure \(index)",
                        agentID: "agt_\(agent)"
                    )
                }
                try await store.transaction { db in try await SQLControllerStore.insert(failures, into: db) }
            }
            let events = try await store.events(service: nil, limit: 3 * EventRetention.limit)
            #expect(events.contains { $0.kind == .published && $0.agentID == nil }, "the controllers' event was deleted")
            let reported = events.filter { $0.agentID != nil }
            #expect(reported.count == EventRetention.limit)
            #expect(!reported.contains { $0.agentID == "agt_0" }, "the oldest reported events go first")
            #expect(try await store.events(service: "api", limit: 10).map(\.kind) == [.published])
        }
    }

    /// A decision counted over a rollout's members is not written once a removal has changed them: decided over two
    /// agents (advance to the second wave), it would have moved the rollout of the one agent left to a wave its strategy
    /// does not have. The coordinator reads the rollout again and decides over the members left.
    @Test(arguments: StoreBackendKind.available)
    func aTransitionDecidedBeforeARemovalIsNotWritten(_ kind: StoreBackendKind) async throws {
        try await TestStore.with(kind) { store, _ in
            for index in 1...2 { _ = try await Self.enrollAgent(index, in: store) }
            let record = try Self.record(serial: 1)
            let plan = RolloutPlan(parameters: RolloutParameters(strategy: .oneAtATime), agentOrder: ["agt_1", "agt_2"])
            let published = try await store.insertRelease(record, rollout: RolloutStateMachine.publish(record, plan: plan))
            #expect(published.rollout.state == .rolling)
            var machine = RolloutStateMachine(published.rollout)
            guard case .persist(let advance) = try machine.evaluated(.advance(toWave: 1), at: Date()) else {
                throw FixtureError("no transition")
            }
            _ = try await store.removeAgent(name: "agent-2")
            #expect(try await !store.updateRollout(advance), "decided over members the removal changed")
            let stored = try #require(try await store.currentRollouts(for: ["api"]).first)
            #expect(stored.agentOrder == ["agt_1"] && stored.currentWave == 0 && stored.state == .rolling)

            // Decided again from the stored rollout, it is written.
            var again = RolloutStateMachine(stored)
            guard case .persist(let complete) = try again.evaluated(.complete, at: Date()) else { throw FixtureError("no transition") }
            #expect(try await store.updateRollout(complete))
            #expect(try await store.currentRollouts(for: ["api"]).first?.state == .completed)
            try await store.close()
        }
    }

    /// Serial 7 completed, 8 rolling, 9 published awaiting approval: once 8 completes, 9 governs the service (8 is no
    /// longer open) and hands its stable serial to every agent it has not reached — all of them. That stable serial
    /// was 7, taken at 9's publish: every agent enrolled since 8's publish got serial 7 back, also after 9 was aborted,
    /// until the next publish.
    @Test(arguments: StoreBackendKind.available)
    func aRolloutCompletedBelowOneAwaitingApprovalBecomesItsStableSerial(_ kind: StoreBackendKind) async throws {
        try await TestStore.with(kind) { store, _ in
            for index in 1...2 { _ = try await Self.enrollAgent(index, in: store) }
            let first = try Self.record(serial: 7)
            _ = try await store.insertRelease(
                first,
                rollout: RolloutStateMachine.publish(
                    first,
                    plan: RolloutPlan(parameters: RolloutParameters(strategy: .all), agentOrder: ["agt_1", "agt_2"])
                )
            )
            let second = try Self.record(serial: 8)
            let rolling = try await store.insertRelease(
                second,
                rollout: RolloutStateMachine.publish(
                    second,
                    plan: RolloutPlan(parameters: RolloutParameters(strategy: .oneAtATime), agentOrder: ["agt_1", "agt_2"])
                )
            )
            #expect(rolling.rollout.state == .rolling)
            var third = try Self.record(serial: 9)
            third.signedBy = ["k1"]
            third.signaturesRequired = 2
            let awaiting = try await store.insertRelease(
                third,
                rollout: RolloutStateMachine.publish(
                    third,
                    plan: RolloutPlan(parameters: RolloutParameters(strategy: .oneAtATime), agentOrder: ["agt_1", "agt_2"])
                )
            )
            #expect(awaiting.rollout.state == .awaitingApproval && awaiting.rollout.stableSerial == 7)

            var machine = RolloutStateMachine(rolling.rollout)
            guard case .persist(let complete) = try machine.evaluated(.complete, at: Date()) else { throw FixtureError("no transition") }
            #expect(try await store.updateRollout(complete))
            let newcomer = "agt_enrolled_since"
            let governing = try #require(RolloutRecord.governing(try await store.currentRollouts(for: ["api"]))["api"])
            #expect(governing.serial == 9)
            #expect(governing.intendedSerial(for: newcomer) == 8, "the release the fleet just completed")

            var awaitingMachine = RolloutStateMachine(governing)
            guard case .persist(let abort) = try awaitingMachine.requested(.abort, by: "alice", at: Date()) else {
                throw FixtureError("no transition")
            }
            #expect(try await store.updateRollout(abort))
            let afterAbort = try #require(RolloutRecord.governing(try await store.currentRollouts(for: ["api"]))["api"])
            #expect(afterAbort.state == .aborted)
            #expect(afterAbort.intendedSerial(for: newcomer) == 8)
            try await store.close()
        }
    }

    /// An agent that leaves a service (removed, or enrolled again with `--replace` for other services) leaves every
    /// rollout that still counts it: the open ones, one awaiting approval (its approval takes the service's agents
    /// again, and filters them by those still enrolled), the service's latest even when it completed at once (`rollout wait` counts its agents), and a publish
    /// whose member list was read before the agent left. Before, each of these waited for the agent for ever.
    @Test(arguments: StoreBackendKind.available)
    func agentsThatLeaveAServiceLeaveTheRolloutsThatCountThem(_ kind: StoreBackendKind) async throws {
        try await TestStore.with(kind) { store, _ in
            for index in 1...5 { _ = try await Self.enrollAgent(index, in: store) }
            func members(_ service: String) async throws -> [String]? {
                try await store.currentRollouts(for: [service]).first?.agentOrder
            }
            // A member list read before agent-5 was removed, and one id never enrolled.
            let everyone = (1...5).map { "agt_\($0)" } + ["agt_never"]
            _ = try await store.removeAgent(name: "agent-5")
            let first = try Self.record(serial: 1, service: "web")
            let published = try await store.insertRelease(
                first,
                rollout: RolloutStateMachine.publish(first, plan: RolloutPlan(parameters: RolloutParameters(strategy: .all), agentOrder: everyone))
            )
            #expect(published.rollout.agentOrder == ["agt_1", "agt_2", "agt_3", "agt_4"])
            #expect(published.rollout.state == .completed)
            #expect(try await members("web") == ["agt_1", "agt_2", "agt_3", "agt_4"])

            // Completed at once: a member removed afterwards leaves it.
            _ = try await store.removeAgent(name: "agent-4")
            #expect(try await members("web") == ["agt_1", "agt_2", "agt_3"])

            // Awaiting approval: the members the approval will start from lose the removed agent too.
            var second = try Self.record(serial: 2, service: "web")
            second.signedBy = ["one-key"]
            second.signaturesRequired = 2
            let awaiting = try await store.insertRelease(
                second,
                rollout: RolloutStateMachine.publish(
                    second,
                    plan: RolloutPlan(parameters: RolloutParameters(strategy: .oneAtATime), agentOrder: ["agt_1", "agt_2", "agt_3"])
                )
            )
            #expect(awaiting.rollout.state == .awaitingApproval)
            _ = try await store.removeAgent(name: "agent-2")
            #expect(try await members("web") == ["agt_1", "agt_3"])

            // Enrolled again for api only: out of web's rollout, still in api's.
            let third = try Self.record(serial: 1, service: "api")
            _ = try await store.insertRelease(
                third,
                rollout: RolloutStateMachine.publish(
                    third,
                    plan: RolloutPlan(parameters: RolloutParameters(strategy: .oneAtATime), agentOrder: ["agt_1", "agt_3"])
                )
            )
            _ = try await store.enrollAgent(
                proposedID: "agt_new",
                name: "agent-3",
                hostname: "h",
                services: ["api", "api"],
                tokenHash: Token.digest("fyt_agent_3_again"),
                mode: .replace,
                instanceID: nil,
                at: Date()
            )
            #expect(try await members("web") == ["agt_1"])
            #expect(try await members("api") == ["agt_1", "agt_3"])
            // A service named twice is stored once.
            #expect(try await store.agent(named: "agent-3")?.services == ["api"])
        }
    }

    /// Wave timers are kept while their rollout is evaluated only: an ended rollout's go with its last transition, a
    /// removed agent's with it. They were kept for ever, a row per agent per staged rollout.
    @Test(arguments: StoreBackendKind.available)
    func waveTimersGoWithTheirRolloutAndTheirAgent(_ kind: StoreBackendKind) async throws {
        try await TestStore.with(kind) { store, _ in
            for index in 1...3 { _ = try await Self.enrollAgent(index, in: store) }
            let release = try Self.record(serial: 1, service: "web")
            let plan = RolloutPlan(parameters: RolloutParameters(strategy: .oneAtATime), agentOrder: ["agt_1", "agt_2", "agt_3"])
            let rollout = try await store.insertRelease(release, rollout: RolloutStateMachine.publish(release, plan: plan)).rollout
            #expect(rollout.state == .rolling)
            let now = Date()
            // More rows than one statement takes, and a row written again (a hand-over between two drivers).
            var timers = Dictionary(uniqueKeysWithValues: (0..<(SQLControllerStore.timerRowsPerStatement + 7)).map { ("agt_x\($0)", now) })
            timers["agt_1"] = now
            timers["agt_2"] = now
            try await store.saveRolloutHealthTimers(rolloutID: rollout.id, timers)
            try await store.saveRolloutHealthTimers(rolloutID: rollout.id, timers)
            #expect(try await store.rolloutHealthTimers(rolloutID: rollout.id).count == timers.count)

            _ = try await store.removeAgent(name: "agent-2")
            #expect(try await store.rolloutHealthTimers(rolloutID: rollout.id)["agt_2"] == nil)
            #expect(try await store.rolloutHealthTimers(rolloutID: rollout.id)["agt_1"] != nil)

            var machine = RolloutStateMachine(try #require(try await store.currentRollouts(for: ["web"]).first))
            guard case .persist(let transition) = try machine.requested(.abort, by: "alice", agentsOnSerial: [], at: now) else {
                Issue.record("the abort was not a transition")
                return
            }
            #expect(try await store.updateRollout(transition))
            #expect(try await store.rolloutHealthTimers(rolloutID: rollout.id).isEmpty)
            // A save that raced the end (a tick that read the rollout rolling) writes nothing.
            try await store.saveRolloutHealthTimers(rolloutID: rollout.id, timers)
            #expect(try await store.rolloutHealthTimers(rolloutID: rollout.id).isEmpty)
        }
    }

    /// The fleet's text search folds ASCII letters only, on both databases alike: PostgreSQL's `lower()` folded every
    /// letter its locale knows, so `q=élise` matched `ÉLISE-01` there and not on SQLite.
    @Test(arguments: StoreBackendKind.available)
    func aFleetSearchMatchesTheSameAgentsOnEitherDatabase(_ kind: StoreBackendKind) async throws {
        try await TestStore.withLocation(kind) { location in
            let store: SQLControllerStore
            var database: String?
            if kind == .postgres, let server = location.server {
                // The test server's databases use the C locale; a production database's (en_US.UTF-8, say) folds every
                // letter. This one is made so.
                let name = "ferry_icu_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(16)
                try await server.psql("CREATE DATABASE \(name) TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'und' LOCALE 'C.utf8'")
                database = name
                store = try await DatabaseSelection.postgres(try PostgresStoreConfiguration.parse(server.url(database: name)))
                    .openStore(sqlitePath: location.sqlitePath, logger: ControllerFixture.logger)
            } else {
                store = try await location.open()
            }
            do {
                for (index, name) in ["ÉLISE-01", "élise-02", "Web-03", "web-04"].enumerated() {
                    _ = try await store.enrollAgent(
                        proposedID: "agt_\(index)",
                        name: name,
                        hostname: "h\(index)",
                        services: ["api"],
                        tokenHash: Token.digest("fyt_search_\(index)"),
                        at: Date()
                    )
                }
                func names(_ text: String) async throws -> [String] {
                    var query = FleetQuery()
                    query.text = text
                    return try await store.agentPage(query, staleBefore: Date(), conflictsSince: Date()).agents.map(\.name).sorted()
                }
                #expect(try await names("élise") == ["élise-02"])
                #expect(try await names("WEB") == ["Web-03", "web-04"])
            } catch {
                try? await store.close()
                if let database, let server = location.server { await server.dropDatabase(database) }
                throw error
            }
            try await store.close()
            if let database, let server = location.server { await server.dropDatabase(database) }
        }
    }

    /// A store closed from a cancelled task (a service group cancelled after another service failed) closes all the
    /// same: the backend's lock used to throw `CancellationError` first, and the store, marked closed, never closed its
    /// connections (a connection released open trips SQLiteNIO's assertion and ends the process).
    @Test(arguments: StoreBackendKind.available)
    func aStoreClosesFromACancelledTask(_ kind: StoreBackendKind) async throws {
        try await TestStore.withLocation(kind) { location in
            let store = try await location.open()
            let closing = Task {
                while !Task.isCancelled { await Task.yield() }
                try await store.close()
            }
            closing.cancel()
            try await closing.value
            // Closed: later calls do nothing.
            try await store.close()
        }
    }

    @Test(arguments: StoreBackendKind.available)
    func migrationsAreRecordedAndReopeningKeepsData(_ kind: StoreBackendKind) async throws {
        try await TestStore.withLocation(kind) { location in
            let store = try await location.open()
            try await store.createToken(hash: Token.digest("fyt_a"), name: "alice", role: .operator, at: Date())
            try await store.insertRelease(try Self.record(serial: 1))
            try await store.close()
            let reopened = try await location.open()
            let principal = try await reopened.principal(forTokenHash: Token.digest("fyt_a"))
            #expect(principal?.role == .operator && principal?.name == "alice" && principal?.agentID == nil)
            #expect(try await reopened.latestSerial(service: "api") == 1)
            let versions = try await reopened.readDB.raw("SELECT version FROM ferry_schema ORDER BY version").all()
                .map { try $0.decode(column: "version", as: Int.self) }
            #expect(versions == Array(1...SchemaMigrations.latestVersion))
            try await reopened.close()
        }
    }

    @Test(arguments: StoreBackendKind.available)
    func aDatabaseFromANewerFerryIsRefused(_ kind: StoreBackendKind) async throws {
        try await TestStore.withLocation(kind) { location in
            let store = try await location.open()
            try await store.close()
            // Pretend a newer binary migrated the database.
            try await location.execute(["INSERT INTO ferry_schema VALUES (99, 'future', 0)"])
            await #expect(
                throws: StoreError.schemaTooNew(path: location.location, found: 99, known: SchemaMigrations.latestVersion)
            ) {
                _ = try await location.open()
            }
        }
    }

    /// A version below the highest applied one that was never applied (a database a development build numbered out of
    /// order) is refused, naming it: only versions above the highest were applied, and the missing one's tables stayed
    /// out for good (every query of them failed later with "no such table").
    @Test(arguments: StoreBackendKind.available)
    func aVersionMissingBelowTheHighestIsRefused(_ kind: StoreBackendKind) async throws {
        try await TestStore.withLocation(kind) { location in
            let store = try await location.open()
            try await store.close()
            try await location.execute(["DELETE FROM ferry_schema WHERE version = 4"])
            do {
                _ = try await location.open()
                Issue.record("a database without version 4 opened")
            } catch let error as StoreError {
                guard case .cannotOpen(let path, let reason) = error else { throw error }
                #expect(path == location.location)
                #expect(reason.hasPrefix("schema version 4 was never applied although version \(SchemaMigrations.latestVersion) was"), "\(reason)")
            }
        }
    }

    @Test(arguments: StoreBackendKind.available)
    func racingPublishersGetOneSuccessPerSerial(_ kind: StoreBackendKind) async throws {
        try await TestStore.with(kind) { store, _ in
            let records = try (0..<20).map { _ in try Self.record(serial: 1) }
            let outcomes = await withTaskGroup(of: Bool.self) { group in
                for record in records {
                    group.addTask {
                        do {
                            try await store.insertRelease(record)
                            return true
                        } catch {
                            return false
                        }
                    }
                }
                var results: [Bool] = []
                for await result in group { results.append(result) }
                return results
            }
            #expect(outcomes.filter { $0 }.count == 1)
            await #expect(throws: StoreError.staleSerial(service: "api", serial: 1, latest: 1)) { try await store.insertRelease(records[0]) }
            try await store.insertRelease(try Self.record(serial: 2))
            try await store.insertRelease(try Self.record(serial: 1, service: "web"))
            #expect(try await store.latestReleases(for: ["api", "web", "none"]).map { "\($0.service)/\($0.serial)" } == ["api/2", "web/1"])
        }
    }

    @Test(arguments: StoreBackendKind.available)
    func statusOfAnUnknownAgentIsRefused(_ kind: StoreBackendKind) async throws {
        try await TestStore.with(kind) { store, _ in
            let report = StatusReport(agentVersion: "1", hostname: "h", processManager: "pm2", services: [])
            await #expect(throws: StoreError.unknownAgent("agt_nope")) {
                try await store.recordStatus(report, agentID: "agt_nope", receivedAt: Date(), historyLimit: 5)
            }
        }
    }

    /// `/metrics` counts enrolled and stale agents in the database (`agentTotals`) instead of reading every agent: the
    /// counts must be the ones the rule in Swift gives (`ControllerCore.isStale`: neither the last report nor, without
    /// one, the enrolment after the limit), for every limit.
    @Test(arguments: StoreBackendKind.available)
    func agentTotalsCountTheStaleAgentsAsTheFleetViewDoes(_ kind: StoreBackendKind) async throws {
        try await TestStore.with(kind) { store, _ in
            #expect(try await store.agentTotals(staleBefore: Date()) == .init(enrolled: 0, stale: 0))
            let base = Date(timeIntervalSince1970: 1_800_000_000)
            // Seconds after `base`: enrolled at, and the last report (nil: none).
            let agents: [(enrolled: Double, reported: Double?)] = [(0, nil), (10, nil), (0, 20), (5, 5), (30, nil), (0, 40), (50, 1)]
            for (index, agent) in agents.enumerated() {
                let record = try await store.enrollAgent(
                    proposedID: "agt_\(index)",
                    name: "agent-\(index)",
                    hostname: "h",
                    services: ["api"],
                    tokenHash: Token.digest("fyt_agent_\(index)"),
                    at: base.addingTimeInterval(agent.enrolled)
                )
                if let reported = agent.reported {
                    let report = StatusReport(agentVersion: "1", hostname: "h", processManager: "pm2", services: [])
                    try await store.recordStatus(report, agentID: record.id, receivedAt: base.addingTimeInterval(reported), historyLimit: 5)
                }
            }
            // Limit (seconds after `base`) and how many agents were last seen before it.
            let cases: [(limit: Double, stale: Int)] = [
                (-1, 0), (0, 0), (0.5, 1), (1, 1), (1.5, 2), (5, 2), (6, 3), (10, 3), (11, 4), (20.5, 5), (40, 6), (41, 7), (1e6, 7),
            ]
            let all = try await store.agents()
            for testCase in cases {
                let staleBefore = base.addingTimeInterval(testCase.limit)
                let totals = try await store.agentTotals(staleBefore: staleBefore)
                let bySwift = all.filter { ($0.lastSeen ?? $0.enrolledAt) < staleBefore }.count
                #expect(totals == .init(enrolled: agents.count, stale: testCase.stale), "limit \(testCase.limit)")
                #expect(bySwift == testCase.stale, "limit \(testCase.limit)")
            }
        }
    }

    /// A publish orders its rollout by the ids and names of the service's agents (`agentNames(service:)`): exactly the
    /// agents whose services hold the name, matched whole (no prefix, no case folding), each once.
    @Test(arguments: StoreBackendKind.available)
    func agentNamesOfAServiceAreExactlyItsAgents(_ kind: StoreBackendKind) async throws {
        try await TestStore.with(kind) { store, _ in
            let services: [[String]] = [["api"], ["web"], ["api", "web"], ["apiv2"], ["web", "api"], ["api", "api"], []]
            for (index, names) in services.enumerated() {
                _ = try await store.enrollAgent(
                    proposedID: "agt_\(index)",
                    name: "agent-\(index)",
                    hostname: "h",
                    services: names,
                    tokenHash: Token.digest("fyt_agent_\(index)"),
                    at: Date()
                )
            }
            let cases: [(service: String, agents: Set<Int>)] = [
                ("api", [0, 2, 4, 5]), ("web", [1, 2, 4]), ("apiv2", [3]), ("ap", []), ("API", []), ("api%", []), ("", []),
            ]
            let all = try await store.agents()
            for testCase in cases {
                let found = try await store.agentNames(service: testCase.service)
                #expect(found.count == testCase.agents.count, "\(testCase.service): \(found)")
                #expect(Set(found.map(\.id)) == Set(testCase.agents.map { "agt_\($0)" }), "\(testCase.service)")
                #expect(Set(found.map(\.name)) == Set(testCase.agents.map { "agent-\($0)" }), "\(testCase.service)")
                let bySwift = all.filter { $0.services.contains(testCase.service) }.map { AgentName(id: $0.id, name: $0.name) }
                #expect(Set(bySwift.map(\.id)) == Set(found.map(\.id)), "\(testCase.service)")
            }
        }
    }

    /// Rollout views and the rollout coordinator read statuses without their processes and their failures' diagnoses
    /// (log tails), through the database's JSON functions (`rolloutStatuses`): each must equal the status read whole
    /// with those left out, and carry the same time — with failures, the most a status may list each with a diagnosis,
    /// without serial or version, with quotes, backslashes and non-ASCII text, per service.
    @Test(arguments: StoreBackendKind.available)
    func rolloutStatusesAreTheStoredStatusesWithoutProcessesOrDiagnoses(_ kind: StoreBackendKind) async throws {
        try await TestStore.with(kind) { store, _ in
            let process = ProcessReport(
                name: "api",
                pmId: 0,
                pid: 4321,
                status: "online",
                restarts: 0,
                uptimeSeconds: 90,
                memoryBytes: 50 << 20,
                cpuPercent: 1
            )
            func status(
                _ service: String,
                serial: Int64?,
                target: Int64?,
                _ phase: DeployPhase,
                _ message: String,
                failures: [ReleaseFailure] = [],
                processes: [ProcessReport] = []
            ) -> ServiceStatus {
                ServiceStatus(
                    service: service,
                    serial: serial,
                    version: serial.map { "1.0.\($0)" },
                    targetSerial: target,
                    phase: phase,
                    message: message,
                    health: phase == .running ? .healthy : .unknown,
                    failures: failures,
                    processes: processes
                )
            }
            let refused = ReleaseFailure(serial: 3, reason: #"signature check failed: key "k1" is not trusted — é \ ∑"#, kind: "refused")
            let reports: [[ServiceStatus]] = [
                [status("api", serial: 2, target: 2, .running, "running serial 2", processes: [process, process])],
                [InsightRoutesTests.rolledBack()],
                [status("api", serial: nil, target: 3, .deploying, #"downloading «1.0.3» "quoted" \ back"#)],
                [
                    status("api", serial: 2, target: 3, .running, "running serial 2", failures: [refused], processes: [process]),
                    status("web", serial: 7, target: 7, .running, "running serial 7"),
                ],
                [status("web", serial: 7, target: 8, .failed, "serial 8 failed: exit 1")],
                [
                    status(
                        "web",
                        serial: 7,
                        target: 40,
                        .rolledBack,
                        "serial 40 failed",
                        failures: (0..<Int64(ServiceStatus.maximumFailures)).map { index in
                            ReleaseFailure(
                                serial: 40 - index,
                                reason: "crashed \(index)",
                                kind: "rolled-back",
                                diagnosis: InsightRoutesTests.diagnosis
                            )
                        }
                    )
                ],
            ]
            var agentIDs: [String] = []
            for (index, services) in reports.enumerated() {
                let agent = try await Self.enrollAgent(index, in: store)
                let report = StatusReport(agentVersion: "1", hostname: "h", processManager: "pm2", services: services)
                try await store.recordStatus(report, agentID: agent.id, receivedAt: Date(), historyLimit: 5)
                agentIDs.append(agent.id)
            }
            var diagnosed = 0
            for (service, count) in [("api", 4), ("web", 3), ("none", 0)] {
                let slim = try await store.rolloutStatuses(service: service)
                var whole: [String: ServiceStatusRecord] = [:]
                for var record in try await store.serviceStatuses(agentIDs: agentIDs) where record.status.service == service {
                    record.status.processes = []
                    diagnosed += record.status.failures.filter { $0.diagnosis != nil }.count
                    for index in record.status.failures.indices { record.status.failures[index].diagnosis = nil }
                    whole[record.agentID] = record
                }
                #expect(slim.count == count, "\(service)")
                #expect(slim == whole, "\(service)")
            }
            #expect(diagnosed == 1 + ServiceStatus.maximumFailures, "the whole statuses keep every diagnosis")
        }
    }

    /// The history keeps each agent's newest `historyLimit` reports, and trims only the agents of the batch: a table of
    /// agents with no report, fewer than the limit, exactly the limit, one more, several times the limit, and two
    /// reports in one batch, written over batches of varied sizes.
    @Test(arguments: StoreBackendKind.available)
    func theHistoryKeepsEachAgentsNewestReports(_ kind: StoreBackendKind) async throws {
        try await TestStore.with(kind) { store, _ in
            let limit = 4
            // Reports per agent, in the order sent; agent index → how many.
            let reportsPerAgent = [0, 1, 3, 4, 5, 13, 2]
            for index in reportsPerAgent.indices { _ = try await Self.enrollAgent(index, in: store) }
            var sent: [(agent: Int, serial: Int64)] = []
            for (agent, count) in reportsPerAgent.enumerated() where count > 0 {
                for serial in 1...count { sent.append((agent, Int64(serial))) }
            }
            // Interleaved across agents, then cut into batches of 1, 2, 3, 5, 8, ... reports.
            sent.sort { ($0.serial, $0.agent) < ($1.serial, $1.agent) }
            var start = 0
            var size = 1
            var previous = 1
            while start < sent.count {
                let slice = sent[start..<min(sent.count, start + size)]
                let writes = slice.map { item in
                    StatusWrite(
                        report: StatusReport(
                            agentVersion: "1",
                            hostname: "h",
                            processManager: "pm2",
                            services: [
                                ServiceStatus(
                                    service: "api",
                                    serial: item.serial,
                                    version: "\(item.serial)",
                                    targetSerial: item.serial,
                                    phase: .running,
                                    message: "",
                                    health: .healthy,
                                    processes: []
                                )
                            ]
                        ),
                        agentID: "agt_\(item.agent)",
                        receivedAt: Date()
                    )
                }
                #expect(try await store.recordStatuses(writes, historyLimit: limit).allSatisfy(\.stored))
                start += size
                (size, previous) = (size + previous, size)
            }
            for (agent, count) in reportsPerAgent.enumerated() {
                let history = try await store.statusHistory(agentID: "agt_\(agent)", limit: 100)
                let expected = count == 0 ? [] : Array((max(1, count - limit + 1)...count).reversed()).map { Int64($0) }
                #expect(history.map { $0.report.services.first?.serial } == expected, "agent \(agent), \(count) reports")
            }
        }
    }

    /// Each stored report comes back with the hostname the agent was known by just before it (schema version 8): the
    /// enrolment's before any report, then the last report's, whichever path stored it; a later report of the same agent
    /// in one batch follows the earlier one; an unknown agent stores nothing and gets none.
    @Test(arguments: StoreBackendKind.available)
    func eachReportReturnsTheHostnameBeforeIt(_ kind: StoreBackendKind) async throws {
        try await TestStore.with(kind) { store, _ in
            _ = try await Self.enrollAgent(0, in: store)
            _ = try await Self.enrollAgent(1, in: store)
            func write(_ agent: String, _ hostname: String) -> StatusWrite {
                StatusWrite(
                    report: StatusReport(agentVersion: "1", hostname: hostname, processManager: "pm2", services: []),
                    agentID: agent,
                    receivedAt: Date()
                )
            }
            let batches: [(writes: [StatusWrite], expected: [StatusWriteResult])] = [
                (
                    [write("agt_0", "a"), write("agt_1", "x"), write("agt_0", "b"), write("agt_9", "z"), write("agt_0", "b")],
                    [
                        .init(stored: true, hostnameBefore: "h"), .init(stored: true, hostnameBefore: "h"), .init(stored: true, hostnameBefore: "a"),
                        .init(stored: false, hostnameBefore: nil), .init(stored: true, hostnameBefore: "b"),
                    ]
                ),
                ([write("agt_0", "c"), write("agt_1", "x")], [.init(stored: true, hostnameBefore: "b"), .init(stored: true, hostnameBefore: "x")]),
            ]
            for (index, batch) in batches.enumerated() {
                #expect(try await store.recordStatuses(batch.writes, historyLimit: 5) == batch.expected, "batch \(index)")
            }
            // One report stored alone (the unbatched path) moves the row on too.
            try await store.recordStatus(write("agt_0", "d").report, agentID: "agt_0", receivedAt: Date(), historyLimit: 5)
            #expect(try await store.recordStatuses([write("agt_0", "e")], historyLimit: 5) == [.init(stored: true, hostnameBefore: "d")])
            #expect(try await store.agent(id: "agt_0")?.hostname == "e")
        }
    }

    /// On a shared database (PostgreSQL), an older report committed after a newer one (queued on one controller while
    /// the agent's next report went to another) changes neither the agent's statuses nor its last sighting; the newer
    /// stands. One controller (SQLite) stores reports in the order they came. On either, a stored time further ahead
    /// than a report can be overtaken by (a clock that jumped) does not freeze the agent's status. The agent's row keeps
    /// the newer report's hostname, agent version, process manager and trust root as well.
    @Test(arguments: StoreBackendKind.available)
    func anOlderReportCommittedLaterDoesNotReplaceANewerOne(_ kind: StoreBackendKind) async throws {
        try await TestStore.with(kind) { store, _ in
            let agent = try await Self.enrollAgent(0, in: store)
            func report(serial: Int64, _ phase: DeployPhase) -> StatusReport {
                let status = ServiceStatus(
                    service: "api",
                    serial: serial,
                    version: "1.0.\(serial)",
                    targetSerial: serial,
                    phase: phase,
                    message: "serial \(serial)",
                    health: .healthy,
                    processes: []
                )
                // Everything the agents row takes from a report differs from one serial to the next.
                return StatusReport(
                    agentVersion: "1.\(serial)",
                    hostname: "h\(serial)",
                    processManager: serial == 1 ? "builtin" : "pm2",
                    services: [status],
                    trustRoot: TrustRootStatus(version: serial, expiresAt: nil, problem: serial == 1 ? "expired" : nil)
                )
            }
            func stored() async throws -> (serial: Int64?, lastSeen: Date?) {
                let row = try await store.agent(id: agent.id)
                if let serial = try await store.serviceStatuses().first?.status.serial {
                    let expected = report(serial: serial, .running)
                    #expect(row?.hostname == expected.hostname, "the agent's hostname is its status's report's")
                    #expect(row?.agentVersion == expected.agentVersion)
                    #expect(row?.processManager == expected.processManager)
                    #expect(row?.trustRootVersion == serial)
                    #expect(row?.trustRootProblem == expected.trustRoot?.problem)
                }
                return (try await store.serviceStatuses().first?.status.serial, row?.lastSeen)
            }
            let shared = kind == .postgres
            let newer = Date(timeIntervalSince1970: 1_800_000_100)
            let older = newer.addingTimeInterval(-40)
            let batched = StatusWrite(report: report(serial: 2, .running), agentID: agent.id, receivedAt: newer)
            #expect(try await store.recordStatuses([batched], historyLimit: 5).map(\.stored) == [true])
            // The older report, batched and alone.
            let late = StatusWrite(report: report(serial: 1, .deploying), agentID: agent.id, receivedAt: older)
            #expect(try await store.recordStatuses([late], historyLimit: 5).map(\.stored) == [true])
            let afterBatch = try await stored()
            try await store.recordStatus(report(serial: 1, .deploying), agentID: agent.id, receivedAt: older, historyLimit: 5)
            let afterSingle = try await stored()
            for (path, state) in [("batched", afterBatch), ("alone", afterSingle)] {
                #expect(state.serial == (shared ? 2 : 1), "\(path)")
                #expect(state.lastSeen == (shared ? newer : older), "\(path)")
            }
            // A newer report replaces it.
            let next = newer.addingTimeInterval(30)
            #expect(
                try await store.recordStatuses(
                    [StatusWrite(report: report(serial: 3, .running), agentID: agent.id, receivedAt: next)],
                    historyLimit: 5
                ).map(\.stored) == [true]
            )
            #expect(try await stored() == (3, next))
            // A clock that ran 10 minutes ahead stamped one report; the next, on time, still replaces it.
            let ahead = next.addingTimeInterval(600)
            #expect(
                try await store.recordStatuses(
                    [StatusWrite(report: report(serial: 4, .running), agentID: agent.id, receivedAt: ahead)],
                    historyLimit: 5
                ).map(\.stored) == [true]
            )
            let onTime = next.addingTimeInterval(30)
            try await store.recordStatus(report(serial: 5, .running), agentID: agent.id, receivedAt: onTime, historyLimit: 5)
            #expect(try await stored() == (5, onTime))
        }
    }

    /// A report's events are stored with it, once per agent, service, serial and kind within a batch (an agent's two
    /// reports in one batch each bring the failure its stored statuses lack), and not at all for an unknown agent.
    @Test(arguments: StoreBackendKind.available)
    func aBatchStoresEachNewFailureOnce(_ kind: StoreBackendKind) async throws {
        try await TestStore.with(kind) { store, _ in
            _ = try await Self.enrollAgent(0, in: store)
            _ = try await Self.enrollAgent(1, in: store)
            func write(_ agent: String, events: [(serial: Int64, kind: RolloutEventKind)]) -> StatusWrite {
                var write = StatusWrite(
                    report: StatusReport(agentVersion: "1", hostname: "h", processManager: "pm2", services: []),
                    agentID: agent,
                    receivedAt: Date()
                )
                write.events = events.map {
                    RolloutEventDraft(at: Date(), service: "api", serial: $0.serial, kind: $0.kind, message: "\(agent) \($0.serial)", agentID: agent)
                }
                return write
            }
            let batch = [
                write("agt_0", events: [(2, .rolledBack)]), write("agt_1", events: [(2, .rolledBack)]),
                write("agt_0", events: [(2, .rolledBack), (3, .refused)]), write("agt_9", events: [(2, .rolledBack)]),
            ]
            #expect(try await store.recordStatuses(batch, historyLimit: 5).map(\.stored) == [true, true, true, false])
            let events = try await store.events(service: "api", limit: 10).map(\.message)
            #expect(events == ["agt_0 3", "agt_1 2", "agt_0 2"])
        }
    }

    /// The agents silent since a cutoff are found (up to the limit, in id order: judged by the last report, or by the
    /// enrolment for one that never reported) and go with their statuses and history, unless a report came meanwhile.
    @Test(arguments: StoreBackendKind.available)
    func silentAgentsAreRemoved(_ kind: StoreBackendKind) async throws {
        try await TestStore.with(kind) { store, _ in
            let base = Date(timeIntervalSince1970: 1_800_000_000)
            // agt_0 and agt_1 reported long ago, agt_2 lately; agt_3 never reported, enrolled long ago; agt_4 enrolled lately.
            for (index, enrolled) in [(0, -100.0), (1, -100), (2, -100), (3, -100), (4, -1)] {
                _ = try await store.enrollAgent(
                    proposedID: "agt_\(index)",
                    name: "agent-\(index)",
                    hostname: "h",
                    services: ["api"],
                    tokenHash: Token.digest("fyt_agent_\(index)"),
                    at: base.addingTimeInterval(enrolled * 3_600)
                )
            }
            let report = StatusReport(agentVersion: "1", hostname: "h", processManager: "pm2", services: [])
            for (index, seen) in [(0, -50.0), (1, -40), (2, -1)] {
                try await store.recordStatus(report, agentID: "agt_\(index)", receivedAt: base.addingTimeInterval(seen * 3_600), historyLimit: 5)
            }
            #expect(try await store.latestStatusReport() == base.addingTimeInterval(-3_600))
            let cutoff = base.addingTimeInterval(-24 * 3_600)
            #expect(try await store.silentAgents(since: cutoff, limit: 2) == ["agt_0", "agt_1"])
            let all = try await store.silentAgents(since: cutoff, limit: 10)
            #expect(all == ["agt_0", "agt_1", "agt_3"])
            // agt_1 reports between the read and the removal: it stays.
            try await store.recordStatus(report, agentID: "agt_1", receivedAt: base, historyLimit: 5)
            #expect(try await store.removeAgents(all + ["agt_2", "agt_9"], silentSince: cutoff).map(\.id) == ["agt_0", "agt_3"])
            #expect(try await store.silentAgents(since: cutoff, limit: 10).isEmpty)
            #expect(try await store.agents().map(\.id) == ["agt_1", "agt_2", "agt_4"])
            #expect(try await store.statusHistory(agentID: "agt_0", limit: 5).isEmpty)
            #expect(try await store.latestStatusReport() == base)
        }
    }

    /// A standing identity conflict as every controller that follows it writes it (schema version 9): the earliest
    /// notice while it stands and the latest switch-back, whichever write came first; after a lapse, a new notice; an
    /// unknown agent stores nothing; enrolling the agent afresh clears it.
    @Test(arguments: StoreBackendKind.available)
    func identityConflictsKeepTheEarliestNoticeAndTheLatestSwitch(_ kind: StoreBackendKind) async throws {
        try await TestStore.with(kind) { store, _ in
            _ = try await Self.enrollAgent(0, in: store)
            let start = Date(timeIntervalSince1970: 1_800_000_000)
            func at(_ seconds: Double) -> Date { start.addingTimeInterval(seconds) }
            func standing(_ hostnames: [String], _ noticed: Double, _ last: Double) -> AgentIdentityWatch.Standing {
                AgentIdentityWatch.Standing(hostnames: hostnames, noticedAt: at(noticed), lastSwitchAt: at(last))
            }
            let window: TimeInterval = 600
            #expect(try await store.identityConflict(agentID: "agt_0") == nil)
            // (written, stored after it)
            let steps: [(AgentIdentityWatch.Standing, AgentIdentityWatch.Standing)] = [
                (standing(["a", "b"], 30, 31), standing(["a", "b"], 30, 31)),
                // Another controller noticed it later, and its write arrives with an older switch-back.
                (standing(["a", "b"], 45, 40), standing(["a", "b"], 30, 40)),
                (standing(["a", "b"], 45, 35), standing(["a", "b"], 30, 40)),
                // It goes on.
                (standing(["a", "b"], 31, 300), standing(["a", "b"], 30, 300)),
                // A whole window without a switch-back: it had lapsed, so this is a new conflict, noticed now.
                (standing(["a", "c"], 901, 901), standing(["a", "c"], 901, 901)),
                (standing(["a", "c"], 905, 906), standing(["a", "c"], 901, 906)),
            ]
            for (index, (written, stored)) in steps.enumerated() {
                try await store.recordIdentityConflict(agentID: "agt_0", written, window: window)
                #expect(try await store.identityConflict(agentID: "agt_0") == stored, "step \(index)")
            }
            try await store.recordIdentityConflict(agentID: "agt_9", standing(["x", "y"], 1, 2), window: window)
            #expect(try await store.identityConflict(agentID: "agt_9") == nil)
            _ = try await store.enrollAgent(
                proposedID: "agt_new",
                name: "agent-0",
                hostname: "h",
                services: ["api"],
                tokenHash: Token.digest("fyt_agent_0_again"),
                mode: .replace,
                instanceID: nil,
                at: Date()
            )
            #expect(try await store.identityConflict(agentID: "agt_0") == nil)
        }
    }

    /// One agent per attested instance (schema version 10), on both backends: a second agent of a bound instance is
    /// refused whatever its name, and so is a replace that would move the instance to another agent; a replace
    /// without an instance keeps the binding; an agent's removal frees it; agents that proved none never collide.
    @Test(arguments: StoreBackendKind.available)
    func anInstanceIsBoundToOneAgent(_ kind: StoreBackendKind) async throws {
        try await TestStore.with(kind) { store, _ in
            func enroll(_ name: String, _ instance: String?, _ mode: EnrollmentMode = .create(consumingToken: nil)) async throws -> AgentRecord {
                try await store.enrollAgent(
                    proposedID: "agt_\(name)_\(UUID().uuidString.prefix(8))",
                    name: name,
                    hostname: "h",
                    services: ["api"],
                    tokenHash: Token.digest("fyt_\(UUID().uuidString)"),
                    mode: mode,
                    instanceID: instance,
                    at: Date()
                ).agent
            }
            let a = "i-0aaaaaaaaaaaaaaaa"
            #expect(try await enroll("one", a).instanceID == a)
            #expect(try await enroll("plain-1", nil).instanceID == nil)
            #expect(try await enroll("plain-2", nil).instanceID == nil)
            await #expect(throws: StoreError.instanceEnrolled(instanceID: a, name: "one")) { _ = try await enroll("two", a) }
            await #expect(throws: StoreError.instanceEnrolled(instanceID: a, name: "one")) { _ = try await enroll("plain-1", a, .replace) }
            #expect(try await store.agent(named: "plain-1")?.instanceID == nil)
            #expect(try await enroll("one", nil, .replace).instanceID == a)
            #expect(try await enroll("one", a, .replace).instanceID == a)
            _ = try await store.removeAgent(name: "one")
            // Removed, the instance enrolls no more with an enrollment token (the transaction spends no use); an
            // operator's enrolment may bind it again.
            let token = Token.generate()
            try await store.createToken(hash: Token.digest(token), name: "boot", role: .enroll, scope: .anyService, at: Date())
            let tokenID = try #require(try await store.credential(forTokenHash: Token.digest(token))?.principal.tokenID)
            await #expect(throws: StoreError.instanceEnrolledBefore(instanceID: a, name: "one")) {
                _ = try await enroll("two", a, .create(consumingToken: tokenID))
            }
            #expect(try await enroll("three", "i-0bbbbbbbbbbbbbbbb", .create(consumingToken: tokenID)).instanceID == "i-0bbbbbbbbbbbbbbbb")
            #expect(try await enroll("two", a).instanceID == a)
            #expect(try await store.agents().filter { $0.instanceID == a }.map(\.name) == ["two"])
        }
    }

    /// The fleet view's columns (version, serial, phase, health; schema version 6) and the rollout views' (the number of
    /// failures; version 7) hold what the status's JSON holds, whichever path wrote it (one report, a batch, a status
    /// replaced by a later one), and a database migrated from version 5 gets them from the JSON already stored.
    @Test(arguments: StoreBackendKind.available)
    func theFleetColumnsAreTheStatusFields(_ kind: StoreBackendKind) async throws {
        try await TestStore.with(kind) { store, location in
            func status(
                _ service: String,
                serial: Int64?,
                version: String?,
                _ phase: DeployPhase,
                _ health: HealthState,
                failures: Int = 0
            ) -> ServiceStatus {
                ServiceStatus(
                    service: service,
                    serial: serial,
                    version: version,
                    targetSerial: serial,
                    phase: phase,
                    message: "m",
                    health: health,
                    failures: (0..<failures).map { ReleaseFailure(serial: Int64($0), reason: "r\($0)", kind: "refused") },
                    processes: []
                )
            }
            // (written alone or in a batch, the statuses)
            let reports: [(single: Bool, services: [ServiceStatus])] = [
                (true, [status("api", serial: 2, version: "1.0.2", .running, .healthy, failures: 2)]),
                (
                    true,
                    [
                        status("api", serial: nil, version: nil, .deploying, .unknown),
                        status("web", serial: 9_007_199_254_740_993, version: "9", .failed, .unhealthy),
                    ]
                ),
                (false, [status("api", serial: 3, version: #"3 "quoted" é"#, .rolledBack, .healthy)]),
                (
                    false,
                    [
                        status("web", serial: Int64.max, version: "", .running, .unhealthy, failures: 1),
                        status("api", serial: 0, version: "0", .deploying, .unknown),
                    ]
                ),
                (false, [status("api", serial: 1, version: "1", .failed, .unknown)]),
            ]
            var writes: [StatusWrite] = []
            for (index, report) in reports.enumerated() {
                let agent = try await Self.enrollAgent(index, in: store)
                let statusReport = StatusReport(agentVersion: "1", hostname: "h", processManager: "pm2", services: report.services)
                if report.single {
                    // Written twice: the second replaces the first's columns too.
                    let first = StatusReport(
                        agentVersion: "1",
                        hostname: "h",
                        processManager: "pm2",
                        services: [status("api", serial: 7, version: "7", .failed, .unhealthy, failures: 3)]
                    )
                    try await store.recordStatus(first, agentID: agent.id, receivedAt: Date(), historyLimit: 5)
                    try await store.recordStatus(statusReport, agentID: agent.id, receivedAt: Date(), historyLimit: 5)
                } else {
                    writes.append(StatusWrite(report: statusReport, agentID: agent.id, receivedAt: Date()))
                }
            }
            // A batch with an earlier report of agent 2 first: its later one is what stays.
            let earlier = StatusReport(
                agentVersion: "1",
                hostname: "h",
                processManager: "pm2",
                services: [status("api", serial: 5, version: "5", .running, .healthy)]
            )
            writes.insert(StatusWrite(report: earlier, agentID: "agt_2", receivedAt: Date()), at: 0)
            #expect(try await store.recordStatuses(writes, historyLimit: 5).allSatisfy(\.stored))

            let dialect = location.dialect
            let failureCount =
                dialect == .sqlite ? "json_array_length(status, '$.failures')" : "jsonb_array_length(status::jsonb -> 'failures')"
            func rows(_ store: SQLControllerStore) async throws -> [String] {
                try await store.readDB.raw(
                    """
                    SELECT agent_id, service, version, serial, phase, health, failure_count,
                           \(unsafeRaw: dialect.jsonText("status", "version")) AS j_version, \(unsafeRaw: dialect.jsonInteger("status", "serial")) AS j_serial,
                           \(unsafeRaw: dialect.jsonText("status", "phase")) AS j_phase, \(unsafeRaw: dialect.jsonText("status", "health")) AS j_health,
                           \(unsafeRaw: failureCount) AS j_failures
                    FROM service_status ORDER BY agent_id, service
                    """
                ).all().map { row in
                    let columns = [
                        try row.decode(column: "version", as: String?.self) ?? "nil",
                        try row.decode(column: "serial", as: Int64?.self).map { "\($0)" } ?? "nil",
                        try row.decode(column: "phase", as: String?.self) ?? "nil", try row.decode(column: "health", as: String?.self) ?? "nil",
                        try row.decode(column: "failure_count", as: Int?.self).map { "\($0)" } ?? "nil",
                    ]
                    let json = [
                        try row.decode(column: "j_version", as: String?.self) ?? "nil",
                        try row.decode(column: "j_serial", as: Int64?.self).map { "\($0)" } ?? "nil",
                        try row.decode(column: "j_phase", as: String?.self) ?? "nil", try row.decode(column: "j_health", as: String?.self) ?? "nil",
                        try row.decode(column: "j_failures", as: Int?.self).map { "\($0)" } ?? "nil",
                    ]
                    let key = "\(try row.decode(column: "agent_id", as: String.self))/\(try row.decode(column: "service", as: String.self))"
                    #expect(columns == json, "\(key)")
                    return ([key] + columns).joined(separator: " ")
                }
            }
            let expected = [
                "agt_0/api 1.0.2 2 running healthy 2",
                "agt_1/api nil nil deploying unknown 0",
                "agt_1/web 9 9007199254740993 failed unhealthy 0",
                #"agt_2/api 3 "quoted" é 3 rolled-back healthy 0"#,
                "agt_3/api 0 0 deploying unknown 0",
                "agt_3/web  9223372036854775807 running unhealthy 1",
                "agt_4/api 1 1 failed unknown 0",
            ]
            #expect(try await rows(store) == expected)

            // The database as version 5 left it: the same statuses, no columns. Opening it again migrates it.
            try await store.close()
            try await location.execute(
                ["version", "serial", "phase", "health", "failure_count"].map { "ALTER TABLE service_status DROP COLUMN \($0)" } + [
                    "ALTER TABLE agents DROP COLUMN hostname_before", "ALTER TABLE agents DROP COLUMN conflict_hostnames",
                    "ALTER TABLE agents DROP COLUMN conflict_noticed_at", "ALTER TABLE agents DROP COLUMN conflict_last_switch_at",
                    "DROP INDEX agents_instance_id", "ALTER TABLE agents DROP COLUMN instance_id",
                    "ALTER TABLE rollouts DROP COLUMN timers_observed_at", "DELETE FROM ferry_schema WHERE version >= 6",
                ] + (kind == .postgres ? [ClusterChangeTriggers.dropStatement] : [])
            )
            let migrated = try await location.open()
            #expect(try await rows(migrated) == expected)
            try await migrated.close()
        }
    }

    /// Enrolls an agent and stores its running status of `serial` with `-NUL-` in its message (for a test to turn into an
    /// escaped NUL, as an older controller stored one), then closes the store.
    static func storeNULMarkedStatus(serial: Int64, in store: SQLControllerStore) async throws -> AgentRecord {
        let agent = try await enrollAgent(0, in: store)
        let status = ServiceStatus.running("api", serial: serial, message: "before-NUL-after")
        let report = StatusReport(agentVersion: "1", hostname: "h", processManager: "pm2", services: [status])
        try await store.recordStatus(report, agentID: agent.id, receivedAt: Date(), historyLimit: 5)
        try await store.close()
        return agent
    }

    /// A status an older controller stored with a NUL in its text (escaped in the JSON; status reports are refused with
    /// one now) reads back after the migration to version 12, the NUL a U+FFFD: without it the status and the history no
    /// longer parse, and PostgreSQL cannot read the status as `jsonb` (every fleet view and rollout view of the service).
    @Test(arguments: StoreBackendKind.available)
    func aStoredNULIsReplacedByTheMigration(_ kind: StoreBackendKind) async throws {
        try await TestStore.with(kind) { store, location in
            let agent = try await Self.storeNULMarkedStatus(serial: 1, in: store)
            try await location.execute([
                #"UPDATE service_status SET status = REPLACE(status, '-NUL-', '\u0000')"#,
                #"UPDATE status_history SET report = REPLACE(report, '-NUL-', '\u0000')"#,
                "ALTER TABLE rollouts DROP COLUMN timers_observed_at", "DELETE FROM ferry_schema WHERE version >= 12",
            ])
            let migrated = try await location.open()
            #expect(try await migrated.serviceStatuses().map(\.status.message) == ["before\u{FFFD}after"])
            #expect(try await migrated.statusHistory(agentID: agent.id, limit: 5).map { $0.report.services[0].message } == ["before\u{FFFD}after"])
            #expect(try await migrated.runningSerials(for: ["api"]) == [agent.id: ["api": 1]])
            try await migrated.close()
        }
    }

    /// A database left at schema version 5 (before the status columns) by a controller that stored a NUL, escaped as
    /// `\u0000`, in a status: PostgreSQL reads no such `jsonb`, so versions 6 and 7, which parse every status, failed
    /// and rolled back at every start, and version 12, which takes the NULs out, never ran: the controller never
    /// started again.
    @Test(arguments: StoreBackendKind.available)
    func aStoredNULDoesNotStopTheStatusColumnMigrations(_ kind: StoreBackendKind) async throws {
        try await TestStore.with(kind) { store, location in
            let agent = try await Self.storeNULMarkedStatus(serial: 3, in: store)
            // Back to version 5: what versions 6 to 15 added goes (PostgreSQL's announcing triggers with their functions).
            var downgrade =
                kind == .postgres
                ? [
                    "DROP FUNCTION ferry_row_changed() CASCADE", "DROP FUNCTION ferry_agent_changed() CASCADE",
                    "DROP FUNCTION ferry_announce(TEXT, TEXT) CASCADE",
                ] : []
            downgrade += ["DROP INDEX agents_instance_id", "DROP TABLE enrolled_instances", "ALTER TABLE rollouts DROP COLUMN timers_observed_at"]
            for column in ["version", "serial", "phase", "health", "failure_count"] {
                downgrade.append("ALTER TABLE service_status DROP COLUMN \(column)")
            }
            for column in ["hostname_before", "conflict_hostnames", "conflict_noticed_at", "conflict_last_switch_at", "instance_id"] {
                downgrade.append("ALTER TABLE agents DROP COLUMN \(column)")
            }
            downgrade += [
                #"UPDATE service_status SET status = REPLACE(status, '-NUL-', '\u0000')"#,
                "DELETE FROM ferry_schema WHERE version >= 6",
            ]
            try await location.execute(downgrade)
            let migrated = try await location.open()
            #expect(try await migrated.serviceStatuses().map(\.status.message) == ["before\u{FFFD}after"])
            // The columns versions 6 and 7 filled, which the rollout views read.
            #expect(try await migrated.runningSerials(for: ["api"]) == [agent.id: ["api": 3]])
            let views = try await migrated.rolloutViewStatuses(service: "api")
            #expect(views[agent.id]?.serial == 3 && views[agent.id]?.version == "3.0.0" && views[agent.id]?.phase == .running, "\(views)")
            try await migrated.close()
        }
    }

    /// What a rollout view reads from the columns (`rolloutViewStatuses`) places every agent where the whole statuses
    /// (`rolloutStatuses`) place it, with the same serial, version, phase and health: a table of statuses against the
    /// rollout of serial 5, a status an older controller replaced without `failure_count` among them.
    @Test(arguments: StoreBackendKind.available)
    func aRolloutViewReadsWhatTheWholeStatusesSay(_ kind: StoreBackendKind) async throws {
        try await TestStore.with(kind) { store, location in
            func status(
                serial: Int64?,
                _ phase: DeployPhase,
                _ health: HealthState = .healthy,
                target: Int64? = nil,
                failures: [(serial: Int64, kind: String)] = [],
                service: String = "api"
            ) -> ServiceStatus {
                ServiceStatus(
                    service: service,
                    serial: serial,
                    version: serial.map { "1.0.\($0)" },
                    targetSerial: target ?? serial,
                    phase: phase,
                    message: "message of \(phase.rawValue)",
                    health: health,
                    failures: failures.map { ReleaseFailure(serial: $0.serial, reason: "\($0.kind) \($0.serial)", kind: $0.kind) },
                    processes: []
                )
            }
            // (the status of `api`, where the agent stands on serial 5)
            let table: [(ServiceStatus?, RolloutAgentStanding.Progress)] = [
                (status(serial: 5, .running), .healthy),
                (status(serial: 5, .running, .unhealthy), .updated),
                (status(serial: 5, .deploying, .unknown), .updated),
                (status(serial: 4, .running), .pending),
                (status(serial: nil, .deploying, .unknown), .pending),
                // A phase without a failure listed for the serial: a download that failed and is tried again.
                (status(serial: 4, .failed, .unhealthy, target: 5), .pending),
                (status(serial: nil, .failed, .unhealthy, target: 5), .pending),
                (status(serial: 4, .failed, .unhealthy, target: 5, failures: [(5, "rolled-back")]), .failed),
                (status(serial: 4, .rolledBack, target: 3), .pending),
                (status(serial: 4, .running, failures: [(5, "refused")]), .failed),
                (status(serial: 4, .running, failures: [(5, "rolled-back")]), .failed),
                (status(serial: 4, .running, failures: [(3, "rolled-back"), (5, "crashed")]), .pending),
                (status(serial: 5, .running, failures: [(5, "refused")]), .healthy),
                (nil, .pending),
                // Replaced below by an older controller: no failure_count.
                (status(serial: 4, .running, failures: [(5, "refused")]), .failed),
            ]
            for (index, (apiStatus, _)) in table.enumerated() {
                let agent = try await Self.enrollAgent(index, in: store)
                let services = (apiStatus.map { [$0] } ?? []) + [status(serial: 9, .failed, target: 5, service: "web")]
                let report = StatusReport(agentVersion: "1", hostname: "h", processManager: "pm2", services: services)
                if index.isMultiple(of: 2) {
                    try await store.recordStatus(report, agentID: agent.id, receivedAt: Date(), historyLimit: 5)
                } else {
                    #expect(
                        try await store.recordStatuses([StatusWrite(report: report, agentID: agent.id, receivedAt: Date())], historyLimit: 5).map(
                            \.stored
                        )
                            == [true]
                    )
                }
            }
            try await location.execute(["UPDATE service_status SET failure_count = NULL WHERE agent_id = 'agt_\(table.count - 1)'"])

            let view = try await store.rolloutViewStatuses(service: "api")
            let whole = try await store.rolloutStatuses(service: "api")
            #expect(Set(view.keys) == Set(whole.keys))
            #expect(view.count == table.count - 1)
            for (index, (_, expected)) in table.enumerated() {
                let id = "agt_\(index)"
                let fromView = RolloutAgentStanding(status: view[id], serial: 5)
                let fromWhole = RolloutAgentStanding(status: whole[id]?.status, serial: 5)
                #expect(fromView == fromWhole, "\(id)")
                #expect(fromView.progress == expected, "\(id)")
                let fields = { (status: ServiceStatus?) in
                    status.map { [$0.service, "\($0.serial ?? -1)", $0.version ?? "nil", $0.phase.rawValue, $0.health.rawValue] }
                }
                #expect(fields(view[id]) == fields(whole[id]?.status), "\(id)")
            }
        }
    }
}
