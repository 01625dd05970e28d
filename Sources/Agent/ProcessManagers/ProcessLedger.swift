import Logging
import Shared
import Supervisor

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

/// The app processes the agent last saw in its process manager's table (`<state>/processes.json`), so that processes a
/// dead daemon left running are found and stopped before their apps are started again.
///
/// PM2 starts fork-mode apps detached (their own session): when its daemon is killed (kill -9, OOM killer) they keep
/// running, holding their ports, and the daemon PM2 spawns next knows nothing of them. (Most exit on their own a moment
/// later, when the metrics transport PM2 injects into them finds the daemon's channel closed; not all, and not their
/// children.) The agent would then start the
/// app a second time next to the orphan (which fails to bind and crash-loops, or runs twice), and a later release would
/// fail its health gate against the old process. The builtin supervisor stops what its dead predecessor left before it
/// answers (`Supervisor.resurrect`); the ledger does the same for any process manager: a recorded process that is no
/// longer in the table but still runs — same pid, same start time in `/proc` — is an orphan. It is stopped like PM2
/// stops an app (SIGINT to its process group, SIGKILL after the app's `kill_timeout`).
struct ProcessLedger: Sendable {
    /// One recorded app process.
    struct Entry: Sendable, Codable, Equatable {
        var name: String
        var pid: Int32
        /// Start time after boot in clock ticks (`/proc/<pid>/stat`): with the pid it names one process, whatever
        /// reuses the pid later.
        var startTicks: UInt64
        /// The boot it was recorded in (`BootID`); `nil` in ledgers written before boots were told apart.
        var bootID: String?
    }

    /// A process found running outside the table, and what became of it.
    struct Orphan: Sendable, Equatable, CustomStringConvertible {
        var entry: Entry
        /// Whether it is gone now (it may have ignored SIGKILL for a moment: a process in uninterruptible sleep).
        var stopped: Bool

        var description: String {
            "stopped \(entry.name) (pid \(entry.pid)), which the process manager no longer listed but was still running"
                + (stopped ? "" : " (it did not exit yet)")
        }
    }

    let path: String
    let logger: Logger

    /// The processes recorded last in this boot, or none when nothing was recorded (or the file cannot be read: then
    /// nothing is stopped, which is what happened before the ledger existed). Entries of an earlier boot are left out:
    /// the file outlives a reboot, and a process of this boot with the same pid and start tick (the PM2 daemon, a pm2
    /// command the agent just ran) would have been stopped as a leftover.
    func load() -> [Entry] {
        guard let bytes = try? SmallFile.read(path, limit: 1 << 20), !bytes.isEmpty else { return [] }
        let entries = (try? JSONDecoder().decode([Entry].self, from: Data(bytes))) ?? []
        return entries.filter { BootID.isThisBoot($0.bootID) }
    }

    /// Records the running processes of `table` (when they differ from `previous`); returns what is recorded now.
    @discardableResult
    func record(_ table: [ManagedProcess], previous: [Entry]) -> [Entry] {
        let entries = table.compactMap { process -> Entry? in
            guard let pid = process.pid, pid > 0, let stat = ProcStat.read(pid: pid) else { return nil }
            return Entry(name: process.name, pid: pid, startTicks: stat.startTicks, bootID: BootID.current)
        }
        .sorted { $0.pid < $1.pid }
        guard entries != previous else { return previous }
        do {
            try AtomicFile.write(Array(try JSONEncoder().encode(entries)), to: path, mode: 0o600)
        } catch {
            // Not fatal: the in-memory record still works until the agent restarts.
            logger.warning("cannot record the app processes", metadata: ["ferry.reason": "\(error)"])
        }
        return entries
    }

    /// The recorded processes that `table` no longer lists but that still run (same pid, same start time), and whose
    /// parent is not the parent of a listed one: a daemon that lists apps is alive, and what it still runs unlisted is
    /// its own. PM2 keeps a cluster worker under `_old_<id>`, out of every table, while a reload (its own for
    /// `max_memory_restart`, an operator's `pm2 reload`) starts the replacement: it was stopped as a dead daemon's, and
    /// the reload lost its overlap. A dead daemon's processes have another parent (init or a subreaper).
    static func orphans(of recorded: [Entry], in table: [ManagedProcess]) -> [Entry] {
        let listed = Set(table.compactMap(\.pid))
        let candidates = recorded.compactMap { entry -> (Entry, ProcStat)? in
            guard !listed.contains(entry.pid), let stat = ProcStat.read(pid: entry.pid), stat.startTicks == entry.startTicks, !stat.hasExited
            else { return nil }
            return (entry, stat)
        }
        // The listed processes' parents are read only when something unlisted still runs: this runs at every pass.
        guard !candidates.isEmpty else { return [] }
        let daemons = Set(listed.compactMap { ProcStat.read(pid: $0)?.parentPid }).subtracting([0, 1])
        return candidates.filter { !daemons.contains($0.1.parentPid) }.map(\.0)
    }

    /// Stops `orphans` (each as its app stops: SIGINT to its process group when it leads one, else to the process;
    /// SIGKILL after `killTimeout(name)`), all at once, and waits for them.
    static func stop(_ orphans: [Entry], killTimeout: @Sendable (String) -> Duration) async -> [Orphan] {
        let targets = orphans.map { ForeignProcessStop.Target(pid: $0.pid, startTicks: $0.startTicks, killTimeout: killTimeout($0.name)) }
        let gone = await ForeignProcessStop.stop(targets, killGrace: .seconds(5))
        return zip(orphans, gone).map { Orphan(entry: $0, stopped: $1) }.sorted { $0.entry.pid < $1.entry.pid }
    }
}
