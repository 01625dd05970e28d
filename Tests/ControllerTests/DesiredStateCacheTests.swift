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
}
