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
/// the controller stayed at about 520 MB against 250 MB parked before it, and `malloc_trim(0)` gave 100 MB of that
/// back. So the status writer, when it has committed a burst and its queue is empty again, has the heap trimmed once:
/// on a thread of its own (the call walks every arena under its lock, tens of milliseconds at that size), never on an
/// event loop or the cooperative pool, and never while another trim runs.
final class HeapTrim: Sendable {
    /// Reports committed since the writer last started that make a burst worth a trim. Default 5,000.
    let burstReports: Int
    private let logger: Logger
    private let running = Mutex(false)
    private let started = Mutex(0)

    /// Trims begun so far.
    var trimsStarted: Int { started.withLock { $0 } }

    init(burstReports: Int = 5_000, logger: Logger) {
        self.burstReports = burstReports
        self.logger = logger
    }

    /// The status writer drained its queue after committing `reports`: trims when that was a burst.
    func writerDrained(after reports: Int) {
        guard reports >= burstReports, Self.trim != nil else { return }
        guard
            running.withLock({ running in
                defer { running = true }
                return !running
            })
        else { return }
        started.withLock { $0 += 1 }
        Task {
            let before = Self.residentBytes()
            _ = try? await DedicatedThread.run(name: "heap trim") { Self.trim?(0) }
            let after = Self.residentBytes()
            running.withLock { $0 = false }
            logger.debug(
                "Heap trimmed after a burst of status reports",
                metadata: [
                    "ferry.status.reports": "\(reports)",
                    "process.rss_before": "\(before.map { "\($0 / 1_048_576) MB" } ?? "?")",
                    "process.rss_after": "\(after.map { "\($0 / 1_048_576) MB" } ?? "?")",
                ]
            )
        }
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
