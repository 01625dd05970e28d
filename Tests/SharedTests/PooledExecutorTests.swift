import Glibc
import Shared
import Synchronization
import Testing

@testable import Shared

/// The agent's executor (`PooledExecutor`), used here as a task executor preference: the test process keeps the
/// runtime's own default executor. Its scheduling of `Task.sleep` runs in every `ferry-agent` the end-to-end tests
/// start, and `IdleDaemonTests` shows the idle process sleeping.
@Suite("Pooled executor")
struct PooledExecutorTests {
    @Test("tasks preferring the pool all run, on the pool's threads")
    func runsTasks() async throws {
        // A stall threshold no scheduling hiccup reaches: under load both workers can be descheduled for the default
        // 100 ms with jobs waiting, and a third worker (for a stall, not this test's point) would be added.
        let pool = try PooledExecutor(configuration: .init(threads: 2, stallThreshold: .seconds(60)))
        let record = RunRecord()
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<2_000 {
                group.addTask(executorPreference: pool) { record.note(thread: pthread_self()) }
            }
        }
        #expect(record.runs == 2_000)
        // Two workers (and no thread of the caller's pool: the preference holds).
        #expect((1...2).contains(record.threadCount))
    }

    /// What the tasks of `runsTasks` saw.
    private final class RunRecord: Sendable {
        private let state = Mutex<(runs: Int, threads: Set<pthread_t>)>((0, []))

        func note(thread: pthread_t) {
            state.withLock {
                $0.runs += 1
                $0.threads.insert(thread)
            }
        }

        var runs: Int { state.withLock { $0.runs } }
        var threadCount: Int { state.withLock { $0.threads.count } }
    }

    @Test("work queued behind a worker blocked in a system call gets another worker")
    func growsPastBlockedWorker() async throws {
        let pool = try PooledExecutor(configuration: .init(threads: 1, stallThreshold: .milliseconds(50)))
        let (released, _) = try await Self.blockThenWrite(on: pool, pollMilliseconds: 10_000) {}
        #expect(released, "the blocked worker was released by work that ran on a worker added for it")
    }

    /// Both tasks are queued at once, so the second usually arrives while the only worker, signalled for the first, is
    /// still counted idle: that enqueue wakes no one, and the worker then blocks in the first. The worker that takes a
    /// job with more waiting and no other worker idle must have the timer thread watch for a stall, or the second task
    /// waits for the first to end (here: its poll's timeout). Repeated, since it is a race.
    @Test("work queued while the only worker was still waking gets another worker when that worker blocks")
    func growsPastBlockedWorkerQueuedTogether() async throws {
        for round in 0..<40 {
            let pool = try PooledExecutor(configuration: .init(threads: 1, stallThreshold: .milliseconds(20)))
            let (released, _) = try await Self.blockThenWrite(on: pool, pollMilliseconds: 5_000) {}
            #expect(released, "round \(round): the second task waited for the first to give up")
            if !released { break }
        }
    }

    @Test("a worker added for a stall ends after its lifetime without work; the pool's own workers stay and run work")
    func spareWorkerEnds() async throws {
        let pool = try PooledExecutor(configuration: .init(threads: 1, stallThreshold: .milliseconds(20), spareWorkerLifetime: .milliseconds(300)))
        // The writer runs on the worker added for it, and sees the pool at two.
        let (released, workersSeen) = try await Self.blockThenWrite(on: pool, pollMilliseconds: 10_000) { pool.workerCount }
        #expect(released)
        #expect(workersSeen == 2)
        let shrunk = ContinuousClock.now + .seconds(10)
        while pool.workerCount > 1, ContinuousClock.now < shrunk { try await Task.sleep(for: .milliseconds(20)) }
        #expect(pool.workerCount == 1, "the spare worker ended")
        // Three lifetimes later the pool's own worker is still there, and runs work.
        try await Task.sleep(for: .milliseconds(900))
        #expect(pool.workerCount == 1)
        let ran = await withTaskGroup(of: Int.self) { group in
            for _ in 0..<200 { group.addTask(executorPreference: pool) { 1 } }
            return await group.reduce(0, +)
        }
        #expect(ran == 200)
    }

    /// Queues on `pool` a task that blocks its worker in `poll(2)` on a pipe (at most `pollMilliseconds`), then one
    /// that writes the pipe and returns `afterWriting()`; first in, first out, so with one worker the second can only
    /// run on a worker added for it. Returns whether the write released the first, and what the second returned.
    private static func blockThenWrite<Result: Sendable>(
        on pool: PooledExecutor,
        pollMilliseconds: Int32,
        afterWriting: @escaping @Sendable () -> Result
    ) async throws -> (released: Bool, Result) {
        let pipe = try PipeDescriptors.open(nonBlocking: false)
        defer {
            close(pipe.readEnd)
            close(pipe.writeEnd)
        }
        let readEnd = pipe.readEnd
        let writeEnd = pipe.writeEnd
        let blocked = Task(executorPreference: pool) { () -> Bool in
            var descriptor = pollfd(fd: readEnd, events: Int16(POLLIN), revents: 0)
            return poll(&descriptor, 1, pollMilliseconds) == 1
        }
        let writer = Task(executorPreference: pool) { () -> Result in
            var byte: UInt8 = 1
            _ = write(writeEnd, &byte, 1)
            return afterWriting()
        }
        let result = await writer.value
        return (await blocked.value, result)
    }

    @Test("timers come out in deadline order, equal deadlines in insertion order, none early")
    func timerQueueOrder() {
        let start = ContinuousClock.now
        // (element, milliseconds after start), in insertion order; and whether each insert was the earliest so far.
        let inserts: [(String, Int, Bool)] = [
            ("c", 30, true), ("a", 10, true), ("b", 20, false), ("a2", 10, false), ("z", 0, true), ("late", 1_000, false),
        ]
        var queue = TimerQueue<String>()
        for (element, milliseconds, earliest) in inserts {
            #expect(queue.insert(element, at: start + .milliseconds(milliseconds)) == earliest, "\(element)")
        }
        #expect(queue.nextDeadline == start)
        #expect(queue.popDue(now: start - .milliseconds(1)) == nil, "nothing is due before its deadline")
        var popped: [String] = []
        while let element = queue.popDue(now: start + .milliseconds(30)) { popped.append(element) }
        #expect(popped == ["z", "a", "a2", "b", "c"])
        #expect(queue.count == 1 && queue.nextDeadline == start + .seconds(1))
    }

    @Test("deadlines and waits are bounded whatever the delay")
    func boundedArithmetic() {
        let now = ContinuousClock.now
        let century = Duration.seconds(100 * 365 * 86_400)
        let cases: [(Duration, Duration)] = [
            (.zero, .zero), (.milliseconds(-5), .zero), (.seconds(-Int64.max), .zero), (.seconds(3), .seconds(3)),
            (.seconds(Int64.max), century), (century + .seconds(1), century),
        ]
        for (delay, expected) in cases {
            #expect(now.duration(to: PooledExecutor.deadline(after: delay, from: now)) == expected, "\(delay)")
        }
        for wait in [Duration.zero, .milliseconds(-1), .nanoseconds(1), .seconds(Int64.max)] {
            var before = timespec()
            clock_gettime(CLOCK_MONOTONIC, &before)
            let deadline = PooledExecutor.monotonicTimespec(after: wait)
            #expect((0..<1_000_000_000).contains(deadline.tv_nsec), "\(wait)")
            let seconds = deadline.tv_sec - before.tv_sec
            #expect((0...86_401).contains(seconds), "\(wait): at most a day ahead")
        }
    }

    @Test("FERRY_EXECUTOR=platform, in any case and nothing else, keeps the runtime's executor")
    func platformSwitch() {
        let cases: [(String?, Bool)] = [(nil, false), ("", false), ("platform", true), ("pooled", false), ("PLATFORM", true), (" platform", false)]
        for (value, expected) in cases {
            #expect(PooledExecutor.platformRequested(environment: value) == expected, "\(value ?? "unset")")
        }
        let recognised: [(String?, Bool)] = [
            (nil, true), ("", true), ("pooled", true), ("Platform", true), ("platfrom", false), (" platform", false),
        ]
        for (value, expected) in recognised {
            #expect((PooledExecutor.unrecognised(environment: value) == nil) == expected, "\(value ?? "unset")")
        }
        #expect(PooledExecutor.unrecognised(environment: "platfrom")?.contains("FERRY_EXECUTOR=\"platfrom\"") == true)
    }
}
