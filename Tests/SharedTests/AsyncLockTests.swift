import Synchronization
import Testing

@testable import Shared

@Suite("AsyncLock")
struct AsyncLockTests {
    @Test("withLockIfFree runs its body only when nobody holds the lock, and a waiter still gets the lock after it")
    func withLockIfFree() async throws {
        let lock = AsyncLock()
        let ran = Entries()
        #expect(await lock.withLockIfFree { ran.append("free") })

        let (held, holding) = AsyncStream.makeStream(of: Void.self)
        let (release, releasing) = AsyncStream.makeStream(of: Void.self)
        let holder = Task {
            await lock.withLock {
                holding.finish()
                for await _ in release {}
                ran.append("holder")
            }
        }
        for await _ in held {}
        #expect(await !lock.withLockIfFree { ran.append("while held") })
        let waiter = Task { await lock.withLock { ran.append("waiter") } }
        // The waiter queues behind the holder; a try while both are there still finds the lock taken.
        try await Task.sleep(for: .milliseconds(50))
        #expect(await !lock.withLockIfFree { ran.append("while queued") })
        releasing.finish()
        await holder.value
        await waiter.value
        #expect(await lock.withLockIfFree { ran.append("free again") })
        #expect(ran.all == ["free", "holder", "waiter", "free again"])
    }

    final class Entries: Sendable {
        private let entries = Mutex<[String]>([])
        func append(_ entry: String) { entries.withLock { $0.append(entry) } }
        var all: [String] { entries.withLock { $0 } }
    }
}
