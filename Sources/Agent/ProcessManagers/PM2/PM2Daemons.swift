import Glibc
import Shared
import Supervisor

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The PM2 God Daemons running for one `PM2_HOME`, and which of them the CLI reaches.
///
/// Every pm2 CLI call pings the daemon on `$PM2_HOME/rpc.sock` and spawns one when none answers. Two calls that
/// overlap while no daemon runs (the agent's and an operator's `pm2 ls`, or a test's) each spawn one. The second
/// daemon finds the sockets taken (PM2's socket library refuses to bind a path another process listens on), never
/// reports ready, and keeps running outside any table; the CLI that spawned it waits for it until its timeout. When
/// the two bind one socket each, neither daemon is whole: `rpc.sock` answers from one, `pub.sock` from the other.
///
/// The daemon the CLI reaches is the one listening on both sockets, read with `SO_PEERCRED` (the pid of the process
/// that listens), not from `pm2.pid`, which the second daemon overwrites.
struct PM2Daemons: Sendable, Equatable {
    /// Every God Daemon whose `PM2_HOME` is the home (its title carries the home, cut to its original command line's
    /// length, so the home is read from its environment; only processes of this user are readable).
    var running: Set<Int32>
    /// The pid listening on `rpc.sock`, if one does.
    var rpcOwner: Int32?
    /// The pid listening on `pub.sock`, if one does.
    var pubOwner: Int32?

    /// What to do about the daemons found.
    enum Verdict: Sendable, Equatable {
        /// One daemon or none, or a moment that cannot be judged (a daemon between binding its two sockets).
        case fine
        /// `keep` holds both sockets; `strays` hold none and run outside any table.
        case strays([Int32], keep: Int32)
        /// The sockets answer from two different daemons: no daemon is whole, all of them go.
        case split([Int32])
    }

    /// Looks at `/proc` and the two sockets of `home`.
    static func look(home: String) -> PM2Daemons {
        PM2Daemons(
            running: godDaemons(home: home),
            rpcOwner: listener(of: "\(home)/rpc.sock"),
            pubOwner: listener(of: "\(home)/pub.sock")
        )
    }

    /// The verdict for `home`, asking the sockets who listens only when more than one daemon runs (one daemon or none
    /// is `.fine` whoever listens): each question is a connection the daemon accepts, and this runs after every table
    /// read.
    static func verdict(home: String) -> Verdict {
        let running = godDaemons(home: home)
        guard running.count > 1 else { return .fine }
        return PM2Daemons(running: running, rpcOwner: listener(of: "\(home)/rpc.sock"), pubOwner: listener(of: "\(home)/pub.sock")).verdict
    }

    var verdict: Verdict {
        guard running.count > 1, let rpcOwner, let pubOwner, running.contains(rpcOwner), running.contains(pubOwner) else {
            return .fine
        }
        guard rpcOwner == pubOwner else { return .split(running.sorted()) }
        return .strays(running.subtracting([rpcOwner]).sorted(), keep: rpcOwner)
    }

    /// The God Daemons of `home`.
    static func godDaemons(home: String) -> Set<Int32> {
        Set(
            ProcStat.allPids().filter { pid in
                guard pid > 1, let commandLine = try? SmallFile.read("/proc/\(pid)/cmdline", limit: 4096),
                    String(decoding: commandLine, as: UTF8.self).contains("God Daemon")
                else { return false }
                return ProcStat.environment(of: pid, contains: "PM2_HOME=\(home)") && ProcStat.isAlive(pid: pid)
            }
        )
    }

    /// The pid of the process listening on the Unix socket at `path` (`SO_PEERCRED` of a connection to it), or `nil`
    /// when nothing listens there (or it accepts nothing for 2 s).
    static func listener(of path: String) -> Int32? {
        // Bounded: a wedged daemon whose backlog is full would otherwise hold this connect for ever.
        guard case .success(let descriptor) = UnixSocket.connectReportingErrno(to: path, timeout: .seconds(2)) else { return nil }
        defer { close(descriptor) }
        // struct ucred { pid_t pid; uid_t uid; gid_t gid; }, which Swift's Glibc module does not import.
        var credentials: (Int32, UInt32, UInt32) = (0, 0, 0)
        var length = socklen_t(MemoryLayout.size(ofValue: credentials))
        guard getsockopt(descriptor, SOL_SOCKET, SO_PEERCRED, &credentials, &length) == 0, credentials.0 > 0 else { return nil }
        return credentials.0
    }

    /// Stops `daemon` (SIGKILL: a God Daemon stopping gracefully unlinks the pid file and sockets the live one uses)
    /// and then the apps it ran (its children, collected first: they outlive it), as PM2 stops an app. Returns how many
    /// of its processes there were.
    static func stop(_ daemon: Int32) async -> Int {
        guard let daemonStat = ProcStat.read(pid: daemon) else { return 0 }
        let children = childProcesses(of: daemon)
        // Still the same process (pid reuse is quick here): same start time as just read.
        guard ProcStat.read(pid: daemon)?.startTicks == daemonStat.startTicks else { return 0 }
        kill(daemon, SIGKILL)
        _ = await ProcessLedger.stop(children) { _ in .milliseconds(1600) }
        return children.count
    }

    /// The live children of `pid`, as ledger entries (pid and start time).
    static func childProcesses(of pid: Int32) -> [ProcessLedger.Entry] {
        ProcStat.allPids().compactMap { child in
            guard let stat = ProcStat.read(pid: child), stat.parentPid == pid, !stat.hasExited else { return nil }
            return ProcessLedger.Entry(name: "pid \(child)", pid: child, startTicks: stat.startTicks)
        }
    }
}
