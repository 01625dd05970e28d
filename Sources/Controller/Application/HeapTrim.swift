import Foundation
import Glibc
import Logging
import Shared
import Synchronization

/// Gives the C heap's free memory back to the system after a burst of work.
///
/// A publish to 10,000 parked agents is followed by 10,000 status reports within a couple of seconds: request bodies,
/// decoded reports, batch statements and answers, all freed again once the burst is over. glibc keeps freed memory in
/// its arenas for the next allocation and returns it only when the top of an arena is free; measured after such a burst
/// the controller stayed at about 520 MB against 250 MB parked before it. So when the status writer has committed a
/// burst (`burstReports` or more, counted over drains less than `quiet` apart) and then stayed idle for `quiet`, the
/// heap is trimmed once (`malloc_trim(0)`): on a thread of its own, never on an event loop or the cooperative pool,
/// and never during the burst (the call takes each arena's lock while it walks it, and the burst's requests would wait
/// for it). Steady reports never leave the writer idle for `quiet`: while they flow, the waiting task only looks again
/// once a second, and the trim comes when they pause.
///
/// Reports that never pause (10,000 agents every 30 s) left the heap growing the same way, slowly: over an hour of
/// them the controller's RSS rose 31 MB, and at 1,000 reports a second glibc's `malloc_stats` showed the bytes in use
/// flat (+1.6 MiB in seven minutes) while the bytes it held from the system rose 92 MiB. So once `steadyInterval` has
/// passed since the last trim, a burst's worth of reports is trimmed without waiting for a pause: one short stall of the
/// arenas' locks every few minutes, against memory that otherwise grows for as long as reports flow.
final class HeapTrim: Sendable {
    /// Reports that make a burst worth a trim. Default 5,000.
    let burstReports: Int
    /// How long the writer must stay idle before the trim. Default 1 s.
    let quiet: Duration
    /// How long reports may flow without a pause before the heap is trimmed anyway. Default 5 minutes.
    let steadyInterval: Duration
    private let logger: Logger

    private struct State {
        /// Reports committed since the last trim or quiet spell.
        var burst = 0
        var lastDrain = ContinuousClock.now
        /// Whether a task waits for the quiet spell (or trims).
        var waiting = false
        var trims = 0
        /// When the heap was last trimmed (or this was made).
        var lastTrim = ContinuousClock.now
        /// Whether the status writer is idle now (no report waits, no batch commits).
        var writerIsIdle: @Sendable () -> Bool = { true }
    }
    private let state = Mutex(State())

    init(burstReports: Int = 5_000, quiet: Duration = .seconds(1), steadyInterval: Duration = .seconds(300), logger: Logger) {
        self.burstReports = burstReports
        self.quiet = quiet
        self.steadyInterval = steadyInterval
        self.logger = logger
    }

    /// Trims done so far.
    var trims: Int { state.withLock { $0.trims } }

    /// When the heap was last trimmed (or this was made).
    var lastTrimmed: ContinuousClock.Instant { state.withLock { $0.lastTrim } }

    /// The status writer drained its queue after committing `reports`; `isIdle` tells whether it is still idle.
    func writerDrained(after reports: Int, isIdle: @escaping @Sendable () -> Bool) {
        let startWaiting = state.withLock { state -> Bool in
            state.writerIsIdle = isIdle
            state.burst += reports
            state.lastDrain = .now
            guard state.burst >= burstReports, !state.waiting, Self.trim != nil else { return false }
            state.waiting = true
            return true
        }
        guard startWaiting else { return }
        Task { await trimWhenQuiet() }
    }

    private func trimWhenQuiet() async {
        while true {
            let (since, lastTrim) = state.withLock { ($0.lastDrain, $0.lastTrim) }
            // Reports that never pause: trimmed anyway, once per `steadyInterval`.
            if ContinuousClock.now - lastTrim >= steadyInterval { break }
            try? await Task.sleep(until: min(since + quiet, lastTrim + steadyInterval), clock: .continuous)
            let (quietNow, isIdle) = state.withLock { (ContinuousClock.now - $0.lastDrain >= quiet, $0.writerIsIdle) }
            if quietNow && isIdle() { break }
            if !quietNow { continue }
            try? await Task.sleep(for: quiet)
        }
        let reports = state.withLock { state -> Int in
            defer { state.burst = 0 }
            return state.burst
        }
        let before = Self.residentBytes()
        let started = ContinuousClock.now
        _ = try? await DedicatedThread.run(name: "heap trim") { Self.trim?(0) }
        let took = ContinuousClock.now - started
        let after = Self.residentBytes()
        state.withLock { state in
            state.waiting = false
            state.trims += 1
            state.lastTrim = .now
        }
        logger.debug(
            "Heap trimmed after status reports (a burst then a quiet spell, or reports that never paused)",
            metadata: [
                "ferry.status.reports": "\(reports)", "ferry.trim.duration": "\(took)",
                "process.rss_before": "\(before.map { "\($0 / 1_048_576) MB" } ?? "?")",
                "process.rss_after": "\(after.map { "\($0 / 1_048_576) MB" } ?? "?")",
            ]
        )
    }

    /// glibc's `malloc_trim` (not in Swift's Glibc module: `<malloc.h>` is not part of it), found at start-up; `nil`
    /// under another C library.
    private static let trim: (@convention(c) (Int) -> Int32)? = {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "malloc_trim") else { return nil }
        return unsafeBitCast(symbol, to: (@convention(c) (Int) -> Int32).self)
    }()

    /// This process's resident set, from `/proc/self/statm` (pages × page size).
    static func residentBytes() -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return nil }
        let fields = text.split(separator: " ")
        guard fields.count >= 2, let pages = Int(fields[1]) else { return nil }
        return pages * sysconf(Int32(_SC_PAGESIZE))
    }
}
