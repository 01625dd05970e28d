import Foundation
import Shared
import TestSupport
import Testing

@testable import Controller

/// After a publish, woken long-polls compute their states in memory on their event loops
/// (`DesiredStateProvider.currentInMemory`): it must give exactly what the store-reading path gives, say `nil` whenever
/// memory does not hold what it takes, and the wake must come after the snapshot it needs is loaded.
@Suite struct DesiredStateInMemoryTests {
    /// Six agents of `web` (two also run `api`), serial 1 of both services out, every agent's state computed once (as
    /// parked agents' are); then `body`.
    private static func withFleet(
        _ body: (SQLControllerStore, DesiredStateProvider, [String]) async throws -> Void
    ) async throws {
        try await TestPaths.withTemporaryDirectory("ferry-in-memory") { directory in
            let store = try await StoreTests.open(directory)
            let provider = Self.provider(store)
            var ids: [String] = []
            for index in 0..<6 {
                let services = index < 2 ? ["web", "api"] : ["web"]
                let agent = try await store.enrollAgent(
                    proposedID: "agt_\(index)",
                    name: "a\(index)",
                    hostname: "h",
                    services: services,
                    tokenHash: "t\(index)",
                    at: Date()
                )
                ids.append(agent.id)
            }
            try await store.insertRelease(try StoreTests.record(serial: 1, service: "web"))
            try await store.insertRelease(try StoreTests.record(serial: 1, service: "api"))
            for id in ids { _ = try #require(try await provider.current(for: id)) }
            do {
                try await body(store, provider, ids)
            } catch {
                try await store.close()
                throw error
            }
            try await store.close()
        }
    }

    private static func provider(_ store: SQLControllerStore) -> DesiredStateProvider {
        DesiredStateProvider(
            builder: DesiredStateBuilder(configuration: .init(), store: store, selector: RolloutReleaseSelector()),
            hub: LongPollHub()
        )
    }

    /// Stores serial 2 of `web` with a rollout of `strategy` over `ids`.
    private static func publishSerial2(_ store: SQLControllerStore, _ strategy: RolloutStrategy, _ ids: [String]) async throws {
        let release = try StoreTests.record(serial: 2, service: "web")
        let plan = RolloutPlan(parameters: RolloutParameters(strategy: strategy), agentOrder: ids)
        _ = try await store.insertRelease(release, rollout: RolloutStateMachine.publish(release, plan: plan))
    }

    /// Waits (at most 30 s) until the first agent's state can be computed in memory: the provider's wake-up task has
    /// loaded the snapshot.
    private static func waitForTheLoad(_ provider: DesiredStateProvider, _ agentID: String) async throws {
        let deadline = ContinuousClock.now + .seconds(30)
        while provider.currentInMemory(for: agentID) == nil {
            guard ContinuousClock.now < deadline else { throw FixtureError("the snapshot was never loaded") }
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    /// Serial 2 of `web` is published with each strategy: every agent's state computed in memory is byte for byte the
    /// one a fresh provider reads from the store.
    @Test(arguments: [RolloutStrategy.all, .canary(2), .waves([50, 100]), .oneAtATime])
    func aStateComputedInMemoryIsTheOneTheStoreGives(strategy: RolloutStrategy) async throws {
        try await Self.withFleet { store, provider, ids in
            try await Self.publishSerial2(store, strategy, ids)
            // One agent reported running serial 2 already (an install that finished): it keeps it whatever the rollout.
            provider.statusReceived(agentID: ids[5], running: ["web": 2])
            _ = try await provider.agent(ids[5])  // The report dropped the agent's row (as a poll's task would): read again.
            provider.releasePublished(service: "web")
            try await Self.waitForTheLoad(provider, ids[0])

            let reference = Self.provider(store)
            reference.statusReceived(agentID: ids[5], running: ["web": 2])
            var given: Set<Int64> = []
            for id in ids {
                let inMemory = try #require(provider.currentInMemory(for: id), "agent \(id)")
                let read = try #require(try await reference.current(for: id))
                #expect(inMemory.etag == read.etag, "agent \(id)")
                #expect(Array(inMemory.body.readableBytesView) == Array(read.body.readableBytesView), "agent \(id)")
                #expect(inMemory.serials == read.serials, "agent \(id)")
                given.insert(inMemory.serials["web"] ?? 0)
            }
            // The rows are not all the same case: a staged rollout hands out both serials.
            #expect(given == (strategy == .all ? [2] : [1, 2]), "\(strategy)")
        }
    }

    /// What memory does not hold, `currentInMemory` does not guess: an agent never read, a snapshot not loaded, a
    /// serial the snapshot does not hold (the store-reading path asks the store, which does not have it either, and
    /// gives the latest).
    @Test func withoutWhatItTakesItSaysNil() async throws {
        try await Self.withFleet { store, provider, ids in
            let fresh = Self.provider(store)
            #expect(fresh.currentInMemory(for: ids[0]) == nil, "an agent never read")
            _ = try await fresh.agent(ids[0])
            #expect(fresh.currentInMemory(for: ids[0]) == nil, "no snapshot loaded")
            #expect(provider.currentInMemory(for: ids[0]) != nil, "cached")

            provider.cache.invalidateAll()
            #expect(provider.currentInMemory(for: ids[0]) == nil, "dropped, and no snapshot of the new generation")
            _ = try #require(try await provider.current(for: ids[0]))
            #expect(provider.currentInMemory(for: ids[1]) != nil, "the snapshot agent 0 loaded serves agent 1 (same services)")
            #expect(provider.currentInMemory(for: ids[2]) == nil, "not agent 2 (web alone: another snapshot)")
            _ = try #require(try await provider.current(for: ids[2]))
            #expect(provider.currentInMemory(for: ids[4]) != nil, "the snapshot agent 2 loaded serves agent 4")

            provider.statusReceived(agentID: ids[3], running: ["web": 99])
            _ = try await provider.agent(ids[3])  // The report dropped the agent's row: read it again.
            #expect(provider.currentInMemory(for: ids[3]) == nil, "serial 99 is not in the snapshot: the store must be asked")
            let read = try #require(try await provider.current(for: ids[3]))
            #expect(read.serials == ["web": 1], "no serial 99 stored: the latest is given")
        }
    }

    /// With several controllers, a report tells the others only what is news: an agent whose state this controller has
    /// not computed (its poll is parked on another) reporting the serials it reported before sends nothing. Before,
    /// every periodic report of such an agent sent a notice that made every other controller drop the agent's state,
    /// read its statuses and wake its poll. A new serial is still announced, once.
    @Test func aReportTellsTheOtherControllersOnlyWhatIsNews() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-report-news") { directory in
            let store = try await StoreTests.open(directory)
            let feed = ClusterChangeFeed.enabled(origin: "c000000000001")
            let provider = DesiredStateProvider(
                builder: DesiredStateBuilder(configuration: .init(), store: store, selector: RolloutReleaseSelector()),
                hub: LongPollHub(),
                changes: feed
            )
            let parkedHere = try await store.enrollAgent(
                proposedID: "agt_here",
                name: "here",
                hostname: "h",
                services: ["web"],
                tokenHash: "t1",
                at: Date()
            )
            let parkedElsewhere = try await store.enrollAgent(
                proposedID: "agt_away",
                name: "away",
                hostname: "h",
                services: ["web"],
                tokenHash: "t2",
                at: Date()
            )
            try await store.insertRelease(try StoreTests.record(serial: 1, service: "web"))
            _ = try #require(try await provider.current(for: parkedHere.id))
            for _ in 0..<3 {
                provider.statusReceived(agentID: parkedElsewhere.id, running: ["web": 1])
                provider.statusReceived(agentID: parkedHere.id, running: ["web": 1])
                provider.statusReceived(agentID: parkedElsewhere.id, running: [:])
            }
            provider.statusReceived(agentID: parkedElsewhere.id, running: ["web": 2])
            provider.statusReceived(agentID: parkedElsewhere.id, running: ["web": 2])
            feed.finish()
            var announced: [ClusterChange] = []
            for await change in try #require(feed.changes) { announced.append(change) }
            #expect(announced == [.agentChanged(id: parkedElsewhere.id), .agentChanged(id: parkedElsewhere.id)], "\(announced)")
            try await store.close()
        }
    }

    /// A publish wakes a parked agent only once the snapshot its new state needs is loaded: the woken poll computes it
    /// in memory at once.
    @Test func theWakeComesAfterTheSnapshotIsLoaded() async throws {
        try await Self.withFleet { store, provider, ids in
            let before = try #require(provider.currentInMemory(for: ids[4]))
            let generation = provider.hub.generation
            let woken = Task { await provider.hub.wait(agentID: ids[4], services: ["web"], after: generation, timeout: .seconds(60)) }
            let deadline = ContinuousClock.now + .seconds(30)
            while provider.hub.waiterCount < 1 {
                guard ContinuousClock.now < deadline else { throw FixtureError("the wait never parked") }
                try await Task.sleep(for: .milliseconds(5))
            }
            try await store.insertRelease(try StoreTests.record(serial: 2, service: "web"))
            provider.releasePublished(service: "web")
            #expect(await woken.value == .changed)
            let after = try #require(provider.currentInMemory(for: ids[4]), "woken before the snapshot was loaded")
            #expect(after.serials == ["web": 2] && after.etag != before.etag)
        }
    }

    /// The snapshot's set of reached agents answers as the rollout's own list does, for every agent and one unknown.
    @Test(arguments: [RolloutStrategy.all, .canary(2), .waves([50, 100]), .oneAtATime])
    func theSnapshotsReachedAgentsAgreeWithTheRollout(strategy: RolloutStrategy) async throws {
        try await Self.withFleet { store, _, ids in
            try await Self.publishSerial2(store, strategy, ids)
            let snapshot = try await ServiceSnapshot.load(["web"], from: store)
            let rollout = try #require(snapshot.rollouts["web"])
            #expect(snapshot.reached["web"]?.count == rollout.reachedCount)
            for id in ids + ["agt_unknown"] {
                #expect(rollout.intendedSerial(for: id, reached: snapshot.reached["web"]) == rollout.intendedSerial(for: id), "\(id)")
            }
        }
    }
}

/// The queue of agents other controllers changed keeps what waits, not what was read: with one always waiting (notices
/// as fast as the reads), it kept every id it ever held.
@Suite struct RemoteAgentQueueTests {
    @Test func aQueueThatNeverEmptiesKeepsOnlyWhatWaits() {
        let queue = RemoteAgentQueue()
        #expect(queue.enqueue("agt_0"))
        for index in 1...100_000 {
            #expect(!queue.enqueue("agt_\(index)"), "a task already reads the queue")
            #expect(queue.next() == "agt_\(index - 1)")
            #expect(queue.stored <= 2_048, "\(queue.stored) ids held after \(index) reads")
        }
        #expect(queue.next() == "agt_100000")
        #expect(queue.next() == nil)
        #expect(queue.enqueue("agt_again"), "drained: the next notice starts a reader")
    }
}
