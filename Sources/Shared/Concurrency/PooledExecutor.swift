import Glibc
@_spi(ExperimentalCustomExecutors) @_spi(ExperimentalScheduling) import _Concurrency

/// A global executor for the agent that sleeps when the agent has nothing to do: worker threads that wait on a
/// condition variable, and one timer thread that waits until the next `Task.sleep` is due and for nothing else.
///
/// Why: on Linux the concurrency runtime's default executor runs tasks on libdispatch's thread pool, and the first
/// worker of that pool starts libdispatch's workqueue monitor, a timer that wakes the process once a second for its
/// whole life (swift-corelibs-libdispatch, `src/event/workqueue.c`). On an agent that otherwise sleeps between 30 s
/// long-polls that tick was about half of its CPU (docs/benchmarks.md). This executor has no periodic timer: an idle
/// agent's threads all sleep until a socket, a timer of its own or a signal wakes one.
///
/// - Tasks run on `threads` workers (the processor count, at least 2) in the order they were enqueued.
/// - Work that waits while every worker is busy and none has taken a job for `stallThreshold` (a worker blocked in a
///   system call, say) gets another worker, up to `maximumThreads`: what the monitor does for libdispatch's pool, but
///   only while work waits, never when the process is idle. A worker beyond `threads` that finds no work for
///   `spareWorkerLifetime` ends.
/// - Delayed jobs (`Task.sleep`) are kept by deadline on the continuous clock; a suspending-clock deadline is taken as
///   the same delay on the continuous clock (they differ only while the machine is suspended).
/// - The main actor keeps the platform's main executor.
///
/// `installAsDefault` makes it the process's default executor; it uses the runtime's experimental custom-executor
/// interface (Swift 6.3: `_createExecutors(factory:)`, `SchedulingExecutor`). The agent installs it first thing
/// in `main` unless `FERRY_EXECUTOR=platform` is set.
package final class PooledExecutor: TaskExecutor, SchedulingExecutor, @unchecked Sendable {
    /// Sizes and limits of the pool.
    package struct Configuration: Sendable {
        /// Workers started with the pool. Default: the number of online processors, at least 2.
        package var threads: Int
        /// Most workers the pool grows to when work waits behind blocked workers. Default 64.
        package var maximumThreads: Int
        /// How long queued work may wait, while no worker is free and none takes a job, before another worker is
        /// started. Default 100 ms.
        package var stallThreshold: Duration
        /// How long a worker beyond `threads` (one added for a stall) waits for work before it ends. Default 30 s.
        package var spareWorkerLifetime: Duration

        package init(
            threads: Int? = nil,
            maximumThreads: Int = 64,
            stallThreshold: Duration = .milliseconds(100),
            spareWorkerLifetime: Duration = .seconds(30)
        ) {
            let processors = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
            self.threads = max(1, threads ?? max(2, processors))
            self.maximumThreads = max(self.threads, maximumThreads)
            self.stallThreshold = stallThreshold
            self.spareWorkerLifetime = spareWorkerLifetime
        }
    }

    /// What the pool's threads share; every field is guarded by `lock`.
    private struct State {
        var jobs = JobQueue()
        var timers = TimerQueue<UnownedJob>()
        var workers = 0
        var idleWorkers = 0
        /// Jobs taken by workers so far: the timer thread tells a stalled pool from a busy one by it.
        var taken: UInt64 = 0
        /// The timer thread is already watching work that waits with every worker busy: a job queued meanwhile need
        /// not wake it again.
        var watchingStall = false
    }

    package let configuration: Configuration
    private let lock: UnsafeMutablePointer<pthread_mutex_t>
    /// Signalled when a job is queued and a worker is idle.
    private let workQueued: UnsafeMutablePointer<pthread_cond_t>
    /// Signalled when the timer thread has something new to look at: an earlier deadline, or work that waits with
    /// every worker busy.
    private let timerAttention: UnsafeMutablePointer<pthread_cond_t>
    private var state = State()

    /// Starts the workers and the timer thread.
    /// - Throws: `DedicatedThread.StartFailure` when not even one worker and the timer thread can be started.
    package init(configuration: Configuration = Configuration()) throws(DedicatedThread.StartFailure) {
        self.configuration = configuration
        lock = .allocate(capacity: 1)
        workQueued = .allocate(capacity: 1)
        timerAttention = .allocate(capacity: 1)
        pthread_mutex_init(lock, nil)
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(workQueued, &attributes)
        pthread_cond_init(timerAttention, &attributes)
        pthread_condattr_destroy(&attributes)

        try DedicatedThread.detach(name: "executor timers") { [self] in timerLoop() }
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        for index in 0..<configuration.threads {
            do throws(DedicatedThread.StartFailure) {
                try startWorker()
            } catch {
                // Fewer workers than asked is still a pool; none is not.
                if index == 0 { throw error }
                break
            }
        }
    }

    // The pool lives as long as the process (the runtime keeps the default executor), so it is never torn down.

    // MARK: - Executor

    package func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        pthread_mutex_lock(lock)
        state.jobs.append(job)
        let workerIdle = state.idleWorkers > 0
        let wakeTimer = !workerIdle && !state.watchingStall
        pthread_mutex_unlock(lock)
        // Signalled after unlocking, so the woken thread does not at once block on the lock this thread still holds.
        if workerIdle {
            pthread_cond_signal(workQueued)
        } else if wakeTimer {
            pthread_cond_signal(timerAttention)
        }
    }

    package func enqueue<C: Clock>(_ job: consuming ExecutorJob, after delay: C.Duration, tolerance: C.Duration?, clock: C) {
        // The runtime schedules only on the continuous and the suspending clock, whose durations are `Duration`.
        guard let delay = delay as? Duration else { return enqueue(job) }
        let deadline = Self.deadline(after: delay, from: .now)
        let job = UnownedJob(job)
        pthread_mutex_lock(lock)
        let earliest = state.timers.insert(job, at: deadline)
        pthread_mutex_unlock(lock)
        if earliest { pthread_cond_signal(timerAttention) }
    }

    /// `now + delay`, with a negative delay taken as none and a delay over a century as a century (so the deadline
    /// cannot overflow the clock).
    static func deadline(after delay: Duration, from now: ContinuousClock.Instant) -> ContinuousClock.Instant {
        let century = Duration.seconds(100 * 365 * 86_400)
        return now.advanced(by: min(max(delay, .zero), century))
    }

    // MARK: - Threads

    /// Starts one worker; the caller holds `lock`.
    private func startWorker() throws(DedicatedThread.StartFailure) {
        try DedicatedThread.detach(name: "executor worker") { [self] in workerLoop() }
        state.workers += 1
    }

    private func workerLoop() {
        let executor = asUnownedTaskExecutor()
        pthread_mutex_lock(lock)
        while true {
            if let job = state.jobs.popFirst() {
                state.taken &+= 1
                // Work still waits and no worker is idle: the timer thread must watch for a stall. An enqueue that
                // found this worker idle (signalled, not yet awake) woke no one else, and this job may block.
                let wakeTimer = !state.jobs.isEmpty && state.idleWorkers == 0 && !state.watchingStall
                if wakeTimer { state.watchingStall = true }
                pthread_mutex_unlock(lock)
                if wakeTimer { pthread_cond_signal(timerAttention) }
                job.runSynchronously(on: executor)
                pthread_mutex_lock(lock)
                continue
            }
            state.idleWorkers += 1
            if state.workers > configuration.threads {
                // A spare worker (added for a stall): it ends when no work came for its lifetime. A job queued as the
                // wait timed out is taken first (the loop looks at the queue before it looks at the time).
                var deadline = Self.monotonicTimespec(after: configuration.spareWorkerLifetime)
                let timedOut = pthread_cond_timedwait(workQueued, lock, &deadline) == ETIMEDOUT
                state.idleWorkers -= 1
                if timedOut, state.jobs.isEmpty, state.workers > configuration.threads {
                    state.workers -= 1
                    pthread_mutex_unlock(lock)
                    return
                }
            } else {
                pthread_cond_wait(workQueued, lock)
                state.idleWorkers -= 1
            }
        }
    }

    /// Workers running now: `threads`, and any added for a stall that have not ended yet.
    package var workerCount: Int {
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        return state.workers
    }

    /// Moves due timers to the job queue, and adds a worker when queued work is stalled. Sleeps until the next
    /// deadline, or until `timerAttention` is signalled; with no timer and no waiting work, with no timeout at all.
    private func timerLoop() {
        pthread_mutex_lock(lock)
        // The `taken` count when the timer thread last saw work waiting with every worker busy, and when.
        var stallSince: (taken: UInt64, at: ContinuousClock.Instant)?
        while true {
            let now = ContinuousClock.now
            var due = 0
            while let job = state.timers.popDue(now: now) {
                state.jobs.append(job)
                due += 1
            }
            for _ in 0..<min(due, state.idleWorkers) { pthread_cond_signal(workQueued) }

            var wakeAt = state.timers.nextDeadline
            if !state.jobs.isEmpty, state.idleWorkers == 0, state.workers < configuration.maximumThreads {
                if let stall = stallSince, stall.taken == state.taken {
                    if stall.at.duration(to: now) >= configuration.stallThreshold {
                        // No job taken for the whole threshold while work waited: the workers are blocked.
                        if (try? startWorker()) != nil { stallSince = nil }
                    }
                } else {
                    stallSince = (state.taken, now)
                }
                let check = (stallSince?.at ?? now).advanced(by: configuration.stallThreshold)
                wakeAt = wakeAt.map { min($0, check) } ?? check
            } else {
                stallSince = nil
            }
            state.watchingStall = stallSince != nil

            if let wakeAt {
                var deadline = Self.monotonicTimespec(after: now.duration(to: wakeAt))
                pthread_cond_timedwait(timerAttention, lock, &deadline)
            } else {
                pthread_cond_wait(timerAttention, lock)
            }
        }
    }

    /// `CLOCK_MONOTONIC` now plus `wait` (at least 0, at most a day: a later deadline is waited for in steps), as the
    /// absolute time `pthread_cond_timedwait` takes on a condition variable set to that clock.
    static func monotonicTimespec(after wait: Duration) -> timespec {
        let bounded = min(max(wait, .zero), .seconds(86_400))
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        let (seconds, attoseconds) = bounded.components
        // Rounded up: waking a nanosecond late is fine, early only costs another round.
        let nanoseconds = Int(now.tv_nsec) + Int((attoseconds + 999_999_999) / 1_000_000_000)
        return timespec(tv_sec: now.tv_sec + Int(seconds) + nanoseconds / 1_000_000_000, tv_nsec: nanoseconds % 1_000_000_000)
    }

    // MARK: - Installing

    /// Makes a new pool the default executor of this process: every task not bound to an actor or the main actor
    /// runs on it from now on, and every `Task.sleep` is timed by it. Call it first thing in `main`, before any task
    /// is started. Returns `nil`, and changes nothing, when the pool's threads cannot be started.
    @discardableResult
    package static func installAsDefault(configuration: Configuration = Configuration()) -> PooledExecutor? {
        guard let executor = try? PooledExecutor(configuration: configuration) else { return nil }
        Factory.installed = executor
        _createExecutors(factory: Factory.self)
        return executor
    }

    /// Whether `installAsDefault` should be skipped: `FERRY_EXECUTOR=platform` (in any case) keeps the runtime's own
    /// executor.
    package static func platformRequested(environment value: String?) -> Bool {
        value?.lowercased() == "platform"
    }

    /// What to tell the operator about a `FERRY_EXECUTOR` value that is neither unset, empty, `pooled` nor `platform`
    /// (a typo must not pass for the way back unnoticed); `nil` for those.
    package static func unrecognised(environment value: String?) -> String? {
        guard let value, !value.isEmpty, !["pooled", "platform"].contains(value.lowercased()) else { return nil }
        return "FERRY_EXECUTOR=\"\(value)\" is not recognised (pooled or platform); the agent's own executor runs"
    }

    private enum Factory: ExecutorFactory {
        nonisolated(unsafe) static var installed: PooledExecutor?
        static var mainExecutor: any MainExecutor { PlatformExecutorFactory.mainExecutor }
        static var defaultExecutor: any TaskExecutor { installed ?? PlatformExecutorFactory.defaultExecutor }
    }
}

/// A first-in first-out queue of jobs: an array and the index of its head, compacted as the head moves on.
struct JobQueue {
    private var items: [UnownedJob?] = []
    private var head = 0

    var isEmpty: Bool { head == items.count }
    var count: Int { items.count - head }

    mutating func append(_ job: UnownedJob) {
        items.append(job)
    }

    mutating func popFirst() -> UnownedJob? {
        guard head < items.count else { return nil }
        defer {
            items[head] = nil
            head += 1
            if head == items.count {
                items.removeAll(keepingCapacity: items.count <= 1024)
                head = 0
            } else if head >= 1024, head * 2 >= items.count {
                items.removeFirst(head)
                head = 0
            }
        }
        return items[head]
    }
}

/// Elements waiting for a deadline, earliest first; equal deadlines keep the order they were inserted in.
struct TimerQueue<Element> {
    private var entries: [(deadline: ContinuousClock.Instant, element: Element)] = []

    var isEmpty: Bool { entries.isEmpty }
    var count: Int { entries.count }
    var nextDeadline: ContinuousClock.Instant? { entries.first?.deadline }

    /// Adds `element`; returns whether it is now the earliest (the timer thread must wake sooner).
    @discardableResult
    mutating func insert(_ element: Element, at deadline: ContinuousClock.Instant) -> Bool {
        // After every entry due at or before `deadline`: binary search for the first later one.
        var low = 0
        var high = entries.count
        while low < high {
            let middle = (low + high) / 2
            if entries[middle].deadline <= deadline { low = middle + 1 } else { high = middle }
        }
        entries.insert((deadline, element), at: low)
        return low == 0
    }

    /// The earliest element whose deadline is at or before `now`, removed; `nil` when none is due.
    mutating func popDue(now: ContinuousClock.Instant) -> Element? {
        guard let first = entries.first, first.deadline <= now else { return nil }
        return entries.removeFirst().element
    }
}
