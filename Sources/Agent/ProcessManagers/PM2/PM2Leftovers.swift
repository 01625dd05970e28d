import Shared
import Supervisor

/// App processes that a dead PM2 God Daemon left running without any table naming them.
///
/// The agent's `ProcessLedger` stops the processes it saw in a table that are still running after their daemon died.
/// One case escapes it: a daemon killed after it spawned an app (a start, a reload, a restart after a crash) and before
/// the agent read the table again. That process is in no table the agent ever saw, keeps running detached, and holds
/// the app's port; every start of the app by the next daemon then crash-loops on `EADDRINUSE`. The builtin supervisor
/// marks its apps and a new daemon stops what the old one left (`Supervisor.markedLeftovers`). PM2 marks its apps
/// the same way by itself: every app process starts with the daemon's `PM2_HOME`, its `namespace`, `name` and `pm_id`
/// in its environment (the God Daemon and the pm2 CLI carry `PM2_HOME` but no `pm_id`).
///
/// A process is a leftover when its environment holds `PM2_HOME=<home>`, `namespace=<Ferry's namespace>` and a
/// `pm_id`, the table does not list it, and neither the table's processes nor the daemon that answers are among its
/// ancestors (an app's own child processes inherit its environment; an instance the daemon is starting is not listed
/// yet), and it started before the daemon that answers: a dead daemon's app did, while a process with the marks that
/// started later is a live app's own, re-parented to init (`ssh -fN`, `redis-server --daemonize yes`, a crash
/// handler: a helper that double-forks keeps the app's environment). The census runs when the daemon that answers is
/// not the one seen last (at the agent's start, and after a daemon died and another started), not on every pass.
enum PM2Leftovers {
    /// Ancestors looked through before giving up (a deeper chain is not a leftover: it is left alone).
    static let maximumDepth = 64

    /// The leftovers of `home`'s apps in `namespace`, as ledger entries named after their app.
    static func find(home: String, namespace: String, listed: Set<Int32>, daemon: Int32?) -> [ProcessLedger.Entry] {
        let marks = [Array("PM2_HOME=\(home)".utf8), Array("namespace=\(namespace)".utf8)]
        let pmId = Array("pm_id=".utf8)
        let name = Array("name=".utf8)
        let keep = listed.union(daemon.map { [$0] } ?? [])
        let daemonStarted = daemon.flatMap { ProcStat.read(pid: $0)?.startTicks }
        return ProcStat.allPids().compactMap { pid -> ProcessLedger.Entry? in
            guard pid > 1, !keep.contains(pid), let stat = ProcStat.read(pid: pid), !stat.hasExited,
                daemonStarted.map({ stat.startTicks < $0 }) ?? true,
                let environment = ProcStat.environment(of: pid)
            else { return nil }
            guard marks.allSatisfy({ mark in environment.contains { $0.elementsEqual(mark) } }),
                environment.contains(where: { $0.starts(with: pmId) }),
                !descends(from: keep, parent: stat.parentPid)
            else { return nil }
            let app = environment.first { $0.starts(with: name) }.map { String(decoding: $0.dropFirst(name.count), as: UTF8.self) }
            return ProcessLedger.Entry(name: app ?? "pid \(pid)", pid: pid, startTicks: stat.startTicks)
        }
    }

    /// Whether `parent` or one of its ancestors is in `pids` (true too when the chain is too deep to follow).
    static func descends(from pids: Set<Int32>, parent: Int32) -> Bool {
        var current = parent
        for _ in 0..<maximumDepth {
            if current <= 1 { return false }
            if pids.contains(current) { return true }
            guard let stat = ProcStat.read(pid: current) else { return false }
            current = stat.parentPid
        }
        return true
    }
}
