import Foundation
import Synchronization
import Testing

@testable import Controller

@Suite("Desired-state cache: shared service snapshots")
struct DesiredStateCacheTests {
    /// Counts loads, so the test sees how many times the store would be read.
    final class LoadCounter: Sendable {
        let count = Mutex(0)
        func load() async throws -> ServiceSnapshot {
            count.withLock { $0 += 1 }
            try await Task.sleep(for: .milliseconds(20))  // long enough for the other callers to arrive meanwhile
            return ServiceSnapshot()
        }
    }

    @Test func concurrentCallersOfOneGenerationShareOneLoad() async throws {
        let cache = DesiredStateCache()
        let counter = LoadCounter()
        let generation = cache.lookup("agent").generation
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<50 {
                group.addTask { _ = try await cache.snapshot(of: ["web", "api"], generation: generation) { try await counter.load() } }
            }
            try await group.waitForAll()
        }
        #expect(counter.count.withLock { $0 } == 1)
        // The same services in another order are the same snapshot.
        _ = try await cache.snapshot(of: ["api", "web"], generation: generation) { try await counter.load() }
        #expect(counter.count.withLock { $0 } == 1)
    }

    @Test func aNewGenerationLoadsAgainAndAStaleOneIsNotKept() async throws {
        let cache = DesiredStateCache()
        let counter = LoadCounter()
        let first = cache.lookup("agent").generation
        _ = try await cache.snapshot(of: ["web"], generation: first) { try await counter.load() }
        cache.invalidateAll()  // a publish
        let second = cache.lookup("agent").generation
        _ = try await cache.snapshot(of: ["web"], generation: second) { try await counter.load() }
        #expect(counter.count.withLock { $0 } == 2)
        // A caller still holding the old generation gets its own load, which is not cached for anyone.
        _ = try await cache.snapshot(of: ["web"], generation: first) { try await counter.load() }
        _ = try await cache.snapshot(of: ["web"], generation: second) { try await counter.load() }
        #expect(counter.count.withLock { $0 } == 3)
    }

    /// What happens between a lookup of agent `a` and the insert of what was computed from it.
    struct StampCase: Sendable, CustomTestStringConvertible {
        let name: String
        /// Before the lookup (history the epochs carry), and between the lookup and the insert.
        let before: @Sendable (DesiredStateCache) -> Void
        let between: @Sendable (DesiredStateCache) -> Void
        let kept: Bool
        var testDescription: String { "\(name) → \(kept ? "kept" : "not kept")" }
    }

    static let stampCases: [StampCase] = [
        StampCase(name: "nothing", before: { _ in }, between: { _ in }, kept: true),
        StampCase(name: "a invalidated", before: { _ in }, between: { $0.invalidate("a") }, kept: false),
        StampCase(name: "another agent invalidated", before: { _ in }, between: { $0.invalidate("b") }, kept: true),
        StampCase(name: "a publish", before: { _ in }, between: { $0.invalidateAll() }, kept: false),
        StampCase(name: "a removed", before: { _ in }, between: { $0.forget("a") }, kept: false),
        StampCase(name: "a invalidated before the lookup", before: { $0.invalidate("a") }, between: { _ in }, kept: true),
        StampCase(
            name: "a invalidated, a publish, then the lookup",
            before: {
                $0.invalidate("a")
                $0.invalidateAll()
            },
            between: { _ in },
            kept: true
        ),
        StampCase(
            name: "a invalidated, a publish, then a invalidated again",
            before: {
                $0.invalidate("a")
                $0.invalidateAll()
            },
            between: { $0.invalidate("a") },
            kept: false
        ),
        StampCase(
            name: "other agents invalidated, a publish, then a invalidated",
            before: {
                for index in 0..<5 { $0.invalidate("agt_\(index)") }
                $0.invalidateAll()
            },
            between: { $0.invalidate("a") },
            kept: false
        ),
    ]

    /// An agent's stamp stops a value computed before an invalidation from being cached, whatever came before: the
    /// epochs are forgotten at each publish, and an epoch handed out before one never comes back.
    @Test(arguments: stampCases)
    func aValueComputedBeforeAnInvalidationIsNotKept(_ testCase: StampCase) {
        let cache = DesiredStateCache()
        testCase.before(cache)
        let stamp = cache.lookup("a").stamp
        testCase.between(cache)
        let rendered = RenderedDesiredState(agentID: "a", pollSeconds: 30, releases: EncodedReleases([]), services: ["api"])
        cache.insert(rendered, for: "a", computedAt: stamp)
        #expect((cache.lookup("a").state != nil) == testCase.kept)
    }

    /// An agent row read while the agent was invalidated is not remembered; one read undisturbed is, across a publish.
    @Test func anAgentRowReadDuringAnInvalidationIsNotRemembered() async throws {
        let cache = DesiredStateCache()
        let record = AgentRecord(
            id: "a",
            name: "web-1",
            hostname: "h",
            services: ["api"],
            enrolledAt: Date(),
            lastSeen: nil,
            agentVersion: nil,
            processManager: nil
        )
        _ = try await cache.agent("a") {
            cache.invalidate("a")
            return record
        }
        #expect(cache.knownAgent("a") == nil)
        _ = try await cache.agent("a") {
            cache.invalidateAll()
            return record
        }
        #expect(cache.knownAgent("a") == record)
    }

    /// The epochs an autoscaling fleet leaves behind (every agent ever enrolled, removed or re-enrolled) are forgotten at
    /// the next publish instead of kept for as long as the controller runs.
    @Test func theEpochsOfGoneAgentsAreForgottenAtAPublish() {
        let cache = DesiredStateCache()
        for index in 0..<1000 {
            cache.invalidate("agt_\(index)")
            cache.forget("agt_\(index)")
        }
        #expect(cache.trackedEpochs == 1000)
        cache.invalidateAll()
        #expect(cache.trackedEpochs == 0)
    }
}
