import Glibc
import Shared

/// What `/proc` says about one process: CPU time, resident memory, identity.
package struct ProcStat: Sendable, Equatable {
    /// `utime + stime`, in clock ticks.
    var cpuTicks: UInt64
    /// Start time after boot, in clock ticks: with the pid it identifies a process across pid reuse.
    package var startTicks: UInt64
    /// One-letter state (`R`, `S`, `Z`, ...).
    package var state: Character
    package var parentPid: Int32
    package var processGroup: Int32
    var session: Int32
    /// Threads of the process (field 20).
    package var threads: Int

    /// Whether the process is gone, with every thread of it. A killed process's first thread shows `Z` while its other
    /// threads are still exiting, and until the last of them has, its files (a listening socket, a held port) stay
    /// open: a process counts as gone only once it is a zombie (or being reaped) with no thread left but that one.
    package var hasExited: Bool { (state == "Z" || state == "X") && threads <= 1 }

    /// Clock ticks per second (`sysconf(_SC_CLK_TCK)`).
    static let ticksPerSecond = max(1, Int64(sysconf(Int32(_SC_CLK_TCK))))
    /// Bytes per page (`sysconf(_SC_PAGESIZE)`).
    static let pageBytes = max(1, Int64(sysconf(Int32(_SC_PAGESIZE))))

    /// Reads `/proc/<pid>/stat`; `nil` when the process does not exist.
    package static func read(pid: Int32) -> ProcStat? {
        guard let text = readSmallFile("/proc/\(pid)/stat") else { return nil }
        return parse(text)
    }

    /// Parses the text of `/proc/<pid>/stat`. The command name (field 2) may hold spaces and parentheses, so the
    /// fields are counted from the last `)`.
    static func parse(_ text: String) -> ProcStat? {
        guard let close = text.lastIndex(of: ")") else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ", omittingEmptySubsequences: true)
        // fields[0] is field 3 (state); utime and stime are fields 14 and 15, num_threads field 20, starttime field 22.
        guard fields.count > 19, let state = fields[0].first,
            let parent = Int32(fields[1]), let group = Int32(fields[2]), let session = Int32(fields[3]),
            let user = UInt64(fields[11]), let system = UInt64(fields[12]), let threads = Int(fields[17]),
            let start = UInt64(fields[19])
        else { return nil }
        return ProcStat(
            cpuTicks: user &+ system,
            startTicks: start,
            state: state,
            parentPid: parent,
            processGroup: group,
            session: session,
            threads: threads
        )
    }

    /// Resident set size in bytes from `/proc/<pid>/statm`, or `nil` when the process does not exist.
    static func residentBytes(pid: Int32) -> Int64? {
        guard let text = readSmallFile("/proc/\(pid)/statm") else { return nil }
        let fields = text.split(separator: " ")
        guard fields.count > 1, let pages = Int64(fields[1]) else { return nil }
        let (bytes, overflow) = pages.multipliedReportingOverflow(by: pageBytes)
        return overflow ? nil : bytes
    }

    /// The pids `/proc` lists now (processes that end meanwhile are the caller's to skip).
    package static func allPids() -> [Int32] {
        guard let directory = opendir("/proc") else { return [] }
        defer { closedir(directory) }
        var pids: [Int32] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
            if let pid = Int32(name), pid > 0 { pids.append(pid) }
        }
        return pids
    }

    /// Whether `pid` names a live process (`hasExited`: a zombie with no other thread left counts as gone).
    package static func isAlive(pid: Int32) -> Bool {
        guard let stat = read(pid: pid) else { return false }
        return !stat.hasExited
    }

    private static func readSmallFile(_ path: String) -> String? {
        guard let bytes = try? SmallFile.read(path, limit: 4096) else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }
}

extension ProcStat {
    /// Whether the environment `pid` started with (`/proc/<pid>/environ`) holds `entry` (`NAME=value`) exactly.
    /// `false` when it cannot be read: another user's process, or one that has exited.
    package static func environment(of pid: Int32, contains entry: String) -> Bool {
        let wanted = Array(entry.utf8)
        return environment(of: pid)?.contains { $0.elementsEqual(wanted) } ?? false
    }

    /// The entries (`NAME=value`, as bytes) of the environment `pid` started with; `nil` when it cannot be read
    /// (another user's process, or one that has exited).
    package static func environment(of pid: Int32) -> [ArraySlice<UInt8>]? {
        // Environments beyond 4 MiB are not ours to look through (ARG_MAX is 2 MiB for argv and env together).
        guard let bytes = try? SmallFile.read("/proc/\(pid)/environ", limit: 4 << 20), bytes.count <= 4 << 20 else { return nil }
        return bytes.split(separator: 0, omittingEmptySubsequences: true)
    }
}
