import Foundation
import Logging
import Shared
import Synchronization
import TestSupport
import Testing

@testable import Controller

/// The write-behind queue of status reports over a real store (SQLite, and PostgreSQL where it is installed).
@Suite struct StatusReportQueueTests {
    static func report(_ agent: Int, serial: Int64, failures: [ReleaseFailure] = []) -> StatusReport {
        StatusReport(
            agentVersion: "1.0",
            hostname: "host-\(agent)",
            processManager: "builtin",
            services: [
                ServiceStatus(
                    service: "api",
                    serial: serial,
                    version: "v\(serial)",
                    targetSerial: serial,
                    phase: .running,
                    message: "report \(serial)",
                    health: .healthy,
                    failures: failures,
                    processes: [ProcessReport(name: "api", pmId: 0, status: "online", restarts: 0, uptimeSeconds: 5, memoryBytes: 1, cpuPercent: 0)]
                )
            ]
        )
    }

    /// Enrolls `agt_0`, `agt_1`, ... (`count` agents) running `api`.
    static func enroll(_ count: Int, into store: SQLiteControllerStore) async throws {
        for index in 0..<count {
            _ = try await store.enrollAgent(
                proposedID: "agt_\(index)",
                name: "agent-\(index)",
                hostname: "h",
                services: ["api"],
                tokenHash: "hash-\(index)",
                at: Date()
            )
        }
    }

    /// Runs `body` with a queue over a fresh store of `kind` holding `agents` agents (`agt_0`, `agt_1`, ...).
    static func withQueue(
        _ kind: StoreBackendKind = .sqlite,
        agents: Int,
        configuration: StatusReportQueue.Configuration = .init(),
        _ body: @Sendable (StatusReportQueue, SQLiteControllerStore, TestStoreLocation) async throws -> Void
    ) async throws {
        try await TestStore.with(kind) { store, location in
            try await enroll(agents, into: store)
            let queue = StatusReportQueue(configuration: configuration, store: store, logger: ControllerFixture.logger)
            try await body(queue, store, location)
            #expect(queue.pendingCount == 0, "every accepted report was committed or failed")
        }
    }

    /// Every acknowledged report is in the database, in the order each agent sent them; reports of agents that do
    /// not exist are refused without failing the others in their batch.
    @Test(arguments: StoreBackendKind.available)
    func acknowledgedReportsAreCommittedAndUnknownAgentsRefused(_ kind: StoreBackendKind) async throws {
        try await Self.withQueue(kind, agents: 200, configuration: .init(maximumBatch: 64, historyLimit: 3)) { queue, store, _ in
            let outcomes = try await withThrowingTaskGroup(of: (Int, Int64, Bool).self) { group in
                for agent in 0..<210 {
                    group.addTask {
                        var last = (agent, Int64(0), false)
                        for serial in Int64(1)...5 {
                            let stored = try await queue.record(Self.report(agent, serial: serial), agentID: "agt_\(agent)", receivedAt: Date())
                            last = (agent, serial, stored.stored)
                        }
                        return last
                    }
                }
                var outcomes: [(Int, Int64, Bool)] = []
                for try await outcome in group { outcomes.append(outcome) }
                return outcomes
            }
            #expect(outcomes.count == 210)
            for (agent, _, stored) in outcomes { #expect(stored == (agent < 200), "agent \(agent)") }
            let running = try await store.runningSerials(for: ["api"])
            #expect(running.count == 200)
            #expect(running.values.allSatisfy { $0 == ["api": 5] }, "the last report of each agent is its status")
            let history = try await store.statusHistory(agentID: "agt_7", limit: 10)
            #expect(history.map { $0.report.services.first?.serial } == [5, 4, 3], "the history keeps the newest 3")
            let agent = try #require(try await store.agent(id: "agt_7"))
            #expect(agent.hostname == "host-7" && agent.agentVersion == "1.0" && agent.lastSeen != nil)
        }
    }

    /// The history keeps news: each step sends one report (a variation of the last) and says whether it adds a
    /// history row. The latest status and `last_seen` follow every report, news or not.
    static let historySteps: [(String, @Sendable (StatusReport) -> StatusReport, Bool)] = [
        ("the first report", { $0 }, true),
        ("the same report again", { $0 }, false),
        (
            "only uptime, memory and CPU moved",
            {
                Self.varied($0) {
                    $0.uptimeSeconds = 999
                    $0.memoryBytes = 77_000_000
                    $0.cpuPercent = 12.5
                }
            }, false
        ),
        (
            "an instance restarted (counter and pid)",
            {
                Self.varied($0) {
                    $0.restarts = 1
                    $0.pid = 4242
                }
            }, true
        ),
        (
            "the same again, with other metrics",
            {
                Self.varied($0) {
                    $0.uptimeSeconds = 3
                    $0.cpuPercent = 80
                }
            }, false
        ),
        (
            "the health changed",
            { report in
                var next = report
                next.services[0].health = .unhealthy
                return next
            }, true
        ),
        (
            "the message changed",
            { report in
                var next = report
                next.services[0].message = "repaired api"
                return next
            }, true
        ),
        (
            "a new serial",
            { report in
                var next = report
                next.services[0].serial = 2
                next.services[0].version = "v2"
                return next
            }, true
        ),
        ("a process status changed", { Self.varied($0) { $0.status = "stopped" } }, true),
        (
            "the agent was upgraded",
            { report in
                var next = report
                next.agentVersion = "1.1"
                return next
            }, true
        ),
    ]

    static func varied(_ report: StatusReport, _ change: (inout ProcessReport) -> Void) -> StatusReport {
        var next = report
        for index in next.services[0].processes.indices { change(&next.services[0].processes[index]) }
        return next
    }

    @Test(arguments: StoreBackendKind.available)
    func theHistoryKeepsChangesNotEveryReport(_ kind: StoreBackendKind) async throws {
        try await Self.withQueue(kind, agents: 1) { queue, store, _ in
            var report = Self.report(0, serial: 1)
            var rows = 0
            for (step, change, news) in Self.historySteps {
                report = change(report)
                let at = Date()
                #expect(try await queue.record(report, agentID: "agt_0", receivedAt: at).stored)
                if news { rows += 1 }
                let history = try await store.statusHistory(agentID: "agt_0", limit: 100)
                #expect(history.count == rows, "after \(step)")
                #expect(history.first?.report == report || !news, "after \(step): the newest row is this report")
                let statuses = try await store.serviceStatuses(agentID: "agt_0")
                #expect(statuses.first?.status == report.services[0], "after \(step): the latest status is stored either way")
            }
            // Another queue (a restarted controller) knows no fingerprint: the same report is kept once more.
            let restarted = StatusReportQueue(store: store, logger: ControllerFixture.logger)
            #expect(try await restarted.record(report, agentID: "agt_0", receivedAt: Date()).stored)
            #expect(try await store.statusHistory(agentID: "agt_0", limit: 100).count == rows + 1)
        }
    }

    /// A removed agent's fingerprint is forgotten (its next report is news), and past `maximumFingerprints` all are: the
    /// instances an autoscaling fleet replaces without removing them no longer pile up for as long as the controller runs.
    @Test func theFingerprintsOfGoneAgentsDoNotPileUp() async throws {
        try await Self.withQueue(agents: 5, configuration: .init(maximumFingerprints: 3)) { queue, store, _ async throws in
            for index in 0..<3 { #expect(try await queue.record(Self.report(index, serial: 1), agentID: "agt_\(index)", receivedAt: Date()).stored) }
            #expect(queue.rememberedFingerprints == 3)
            queue.forget(agentID: "agt_0")
            #expect(queue.rememberedFingerprints == 2)
            // The same report again: news for the forgotten agent, not for the others.
            for index in 0..<3 { #expect(try await queue.record(Self.report(index, serial: 1), agentID: "agt_\(index)", receivedAt: Date()).stored) }
            #expect(try await store.statusHistory(agentID: "agt_0", limit: 10).count == 2)
            #expect(try await store.statusHistory(agentID: "agt_1", limit: 10).count == 1)
            #expect(queue.rememberedFingerprints == 3)
            for index in 3..<5 {
                #expect(try await queue.record(Self.report(index, serial: 1), agentID: "agt_\(index)", receivedAt: Date()).stored)
                #expect(queue.rememberedFingerprints <= 3)
            }
        }
    }

    /// When the writer has emptied the queue it says how many reports it committed since it started: a burst's end,
    /// which has the heap trimmed (`HeapTrim`, from a burst of 5,000 on; never for a small one).
    @Test func theDrainedWriterCountsTheBurst() async throws {
        final class Drains: Sendable {
            let counts = Mutex<[Int]>([])
        }
        let drains = Drains()
        try await TestStore.with(.sqlite) { store, _ in
            try await Self.enroll(300, into: store)
            let queue = StatusReportQueue(
                configuration: .init(maximumBatch: 64),
                store: store,
                logger: ControllerFixture.logger,
                onDrained: { _, committed in drains.counts.withLock { $0.append(committed) } }
            )
            try await withThrowingTaskGroup(of: Void.self) { group in
                for agent in 0..<300 {
                    group.addTask { _ = try await queue.record(Self.report(agent, serial: 1), agentID: "agt_\(agent)", receivedAt: Date()) }
                }
                try await group.waitForAll()
            }
            let deadline = ContinuousClock.now + .seconds(10)
            while drains.counts.withLock({ $0.reduce(0, +) }) < 300, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(10))
            }
            let counts = drains.counts.withLock { $0 }
            #expect(counts.reduce(0, +) == 300, "\(counts)")
            #expect(counts.allSatisfy { $0 > 0 })
        }
        // A burst: trimmed once the writer has been idle for the quiet spell, not before.
        let trim = HeapTrim(burstReports: 5_000, quiet: .milliseconds(300), logger: ControllerFixture.logger)
        trim.writerDrained(after: 4_999, isIdle: { true })
        try await Task.sleep(for: .milliseconds(600))
        #expect(trim.trims == 0, "4,999 reports are no burst")
        let busy = Drains()
        busy.counts.withLock { $0 = [1] }
        trim.writerDrained(after: 1, isIdle: { busy.counts.withLock { $0.isEmpty } })
        try await Task.sleep(for: .milliseconds(600))
        #expect(trim.trims == 0, "the writer is busy again: no trim during a burst")
        busy.counts.withLock { $0 = [] }
        let deadline2 = ContinuousClock.now + .seconds(10)
        while trim.trims == 0, ContinuousClock.now < deadline2 { try await Task.sleep(for: .milliseconds(20)) }
        #expect(trim.trims == 1)
    }

    /// Reports that never pause (the writer never idle, drains every 50 ms) are trimmed anyway once `steadyInterval`
    /// has passed since the last trim; before that, not at all.
    @Test func reportsThatNeverPauseAreTrimmedEveryInterval() async throws {
        let trim = HeapTrim(burstReports: 5_000, quiet: .milliseconds(300), steadyInterval: .seconds(2), logger: ControllerFixture.logger)
        let started = trim.lastTrimmed
        trim.writerDrained(after: 5_000, isIdle: { false })
        // Reports flow until three trims are done (each needs a burst's worth first: here half a second of flow), on
        // the trims' own clock rather than a count in a fixed time, which a loaded machine's slower loop would miss.
        var trimmedAt: [ContinuousClock.Instant] = []
        while trimmedAt.count < 3, ContinuousClock.now - started < .seconds(60) {
            try await Task.sleep(for: .milliseconds(50))
            trim.writerDrained(after: 500, isIdle: { false })
            if trim.trims > trimmedAt.count { trimmedAt.append(trim.lastTrimmed) }
            if ContinuousClock.now - started < .milliseconds(1_500) { #expect(trim.trims == 0, "no trim before the interval") }
        }
        #expect(trimmedAt.count == 3 && trim.trims == 3, "\(trim.trims) trims while reports flowed for a minute")
        // Every interval, never more often: the first 2 s after the start, each next one at least 2 s after the last.
        let gaps = zip([started] + trimmedAt, trimmedAt).map { $1 - $0 }
        #expect(gaps.allSatisfy { $0 >= .seconds(2) }, "\(gaps)")
    }

    /// A full queue refuses at once rather than growing: while another connection holds the database's write lock
    /// (a slow disk), reports beyond the bound are refused with `Full`, and those accepted are committed afterwards.
    /// SQLite only: the lock is SQLite's file lock, taken by another process.
    @Test func aFullQueueRefusesAndTheAcceptedOnesAreCommittedLater() async throws {
        try await Self.withQueue(agents: 20, configuration: .init(maximumPending: 5, maximumBatch: 100)) { queue, store, location in
            // Holds the write lock from another process for 3 s: SQLite makes the queue's writer wait meanwhile.
            let lock = try await SQLiteWriteLock.hold(
                location.sqlitePath,
                seconds: 3,
                marker: location.directory.appendingPathComponent("locked").path
            )
            let results = await withTaskGroup(of: Result<Bool, any Error>.self) { group in
                for agent in 0..<20 {
                    group.addTask {
                        do {
                            return .success(try await queue.record(Self.report(agent, serial: 1), agentID: "agt_\(agent)", receivedAt: Date()).stored)
                        } catch {
                            return .failure(error)
                        }
                    }
                    // One at a time into the queue, so the count is exact: the writer takes the first as its batch.
                    try? await Task.sleep(for: .milliseconds(20))
                }
                var results: [Result<Bool, any Error>] = []
                for await result in group { results.append(result) }
                return results
            }
            _ = try await lock.value
            let refused = results.filter { if case .failure(let error) = $0 { return error is StatusReportQueue.Full } else { return false } }
            let stored = results.filter { if case .success(true) = $0 { return true } else { return false } }
            #expect(refused.count > 0, "reports beyond the bound are refused")
            #expect(stored.count + refused.count == 20, "everything else is committed: \(results)")
            #expect(try await store.runningSerials(for: ["api"]).count == stored.count)
        }
    }
}
