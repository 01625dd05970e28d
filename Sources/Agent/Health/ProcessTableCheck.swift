import Shared

/// The verdict of one look at the process table against the apps that should run.
///
/// Pure: the health gate polls `processes()` and evaluates each table with `init(evaluating:against:)` until it is
/// `.allOnline` for long enough, or `.failed`, or the deadline passes while `.pending`. It exists because a process
/// manager command succeeding proves nothing: `pm2 reload` exits 0 while the new code crashes at boot and the table
/// ends `errored` (the `symlink-08`, `symlink-09` and `start-syntax-error` runs in
/// Tests/AgentTests/Fixtures/pm2/captures).
enum ProcessTableCheck: Sendable, Equatable, CustomStringConvertible {
    /// Every desired app has exactly its instance count, all `online` (an `autorestart: false` app that exited with
    /// code 0 counts as done).
    case allOnline
    /// Not there yet, but PM2 is still working on it: an instance is `launching` (wait_ready), `waiting restart`
    /// (restart_delay), `stopping`, or instances are missing or extra. The reason names each app and status.
    case pending(String)
    /// An instance is `errored` (PM2 gave up after max_restarts), or `stopped` while autorestart is on (it crashed:
    /// PM2 shows `stopped` between crash restarts), or `stopped` with a non-zero exit code while autorestart is off
    /// (nothing will start it again). The reason names each app and status.
    case failed(String)

    /// Evaluates `table` (Ferry's namespace) against `desired`. Failures win over pending; apps in the table that are
    /// not desired are ignored here (the planner deletes them).
    ///
    /// `online` alone proves nothing: PM2 shows `online` for an instance whose spawn failed (no pid, 0 bytes of
    /// memory), for instance a `.sh` script without its executable bit run with interpreter `none`. An instance counts
    /// as up only with a pid of a live process (in `/proc`) and some resident memory (`notRunning` says why not, by
    /// default `ProcessTableCheck.notRunning`); otherwise it is pending, and `HealthGate` fails it when that lasts.
    init(
        evaluating table: [ManagedProcess],
        against desired: [AppSpec],
        notRunning: (ManagedProcess) -> String? = { ProcessTableCheck.notRunning($0) }
    ) {
        var failures: [String] = []
        var waiting: [String] = []
        for app in desired {
            let instances = table.filter { $0.name == app.name }.sorted { $0.pmId < $1.pmId }
            if let failure = Self.failure(of: app, instances) {
                failures.append(failure)
                continue
            }
            if instances.count != app.instances {
                waiting.append("\(app.name): \(instances.count) of \(app.instances) instances present")
            }
            let settling = instances.filter { process in
                process.status != .online && !Self.finishedCleanly(process, app)
            }
            if !settling.isEmpty {
                waiting.append("\(app.name): \(Self.listing(settling))")
            }
            for process in instances where process.status == .online {
                if let problem = notRunning(process) { waiting.append("\(app.name): \(problem)") }
            }
        }
        if !failures.isEmpty {
            self = .failed(failures.joined(separator: "; "))
        } else if !waiting.isEmpty {
            self = .pending(waiting.joined(separator: "; "))
        } else {
            self = .allOnline
        }
    }

    var description: String {
        switch self {
        case .allOnline: "all online"
        case .pending(let reason): "pending: \(reason)"
        case .failed(let reason): "failed: \(reason)"
        }
    }

    /// Marks the reasons `pending` gives for an instance that is `online` but not running.
    static let notRunningMarker = "online but not running"

    /// Why an `online` instance is not really running, or `nil` when it is: no pid, a pid `isAlive` does not find, or
    /// no resident memory.
    static func notRunning(_ process: ManagedProcess, isAlive: (Int32) -> Bool = ProcessTableCheck.isAlive) -> String? {
        guard let pid = process.pid else {
            return "pm_id \(process.pmId) \(notRunningMarker): it has no pid (the process manager could not start it)"
        }
        guard isAlive(pid) else { return "pm_id \(process.pmId) \(notRunningMarker): pid \(pid) is not in /proc" }
        guard process.memoryBytes > 0 else { return "pm_id \(process.pmId) \(notRunningMarker): pid \(pid) uses 0 bytes of memory" }
        return nil
    }

    /// Whether a process with `pid` exists (`/proc/<pid>`), and is not a zombie.
    static func isAlive(_ pid: Int32) -> Bool {
        guard pid > 0, let status = try? SmallFile.read("/proc/\(pid)/stat", limit: 4096) else { return false }
        // "pid (comm) S ...": the state follows the last ')'.
        guard let close = status.lastIndex(of: UInt8(ascii: ")")), close + 2 < status.count else { return true }
        return status[close + 2] != UInt8(ascii: "Z")
    }

    private static func failure(of app: AppSpec, _ instances: [ManagedProcess]) -> String? {
        let errored = instances.filter { $0.status == .errored }
        if !errored.isEmpty {
            return "\(app.name): \(listing(errored)) (PM2 gave up restarting it)"
        }
        let stopped = instances.filter { isStoppedForGood($0, app) && !finishedCleanly($0, app) }
        guard !stopped.isEmpty else { return nil }
        if app.autorestart {
            return "\(app.name): \(listing(stopped)) although autorestart is on (it exited)"
        }
        return "\(app.name): \(listing(stopped)) and autorestart is off, so PM2 will not start it again"
    }

    /// An instance PM2 stopped on purpose: an `autorestart: false` app that ran to completion (exit code 0), or one
    /// that exited with a code of its `stop_exit_codes` (PM2's `God.handleExit` restarts neither). PM2 leaves it
    /// `stopped`, or `waiting restart` for ever with no pid when the app sets `restart_delay` or
    /// `exp_backoff_restart_delay` (it sets that status before looking at whether it will restart, then schedules
    /// nothing).
    ///
    /// Without an exit code it did not finish cleanly: a signal ended it (the builtin supervisor's table, or PM2's once
    /// `ProcessManager.explainingExits` read the signal from its log), or it never started (a missing interpreter).
    /// Such a job used to count as done.
    static func finishedCleanly(_ process: ManagedProcess, _ app: AppSpec) -> Bool {
        guard isStoppedForGood(process, app) else { return false }
        guard let code = process.lastExitCode else { return false }
        return app.stopExitCodes.contains(code) || (!app.autorestart && code == 0)
    }

    /// Whether PM2 will not start this instance again by itself: `stopped` after an exit it does not restart from, or
    /// `waiting restart` without a pid for the same reason (see `finishedCleanly`).
    static func isStoppedForGood(_ process: ManagedProcess, _ app: AppSpec) -> Bool {
        switch process.status {
        case .stopped:
            return true
        case .waitingRestart:
            guard process.pid == nil || process.pid == 0 else { return false }
            if !app.autorestart { return true }
            return process.lastExitCode.map(app.stopExitCodes.contains) ?? false
        default:
            return false
        }
    }

    private static func listing(_ processes: [ManagedProcess]) -> String {
        processes.map { process in
            var text = "pm_id \(process.pmId) \(process.status.rawValue)"
            var details: [String] = []
            if process.restarts > 0 { details.append("\(process.restarts) restarts") }
            if let code = process.lastExitCode, process.status != .online { details.append("last exit code \(code)") }
            if let signal = process.lastExitSignal, process.status != .online { details.append("ended by \(signal)") }
            if !details.isEmpty { text += " (\(details.joined(separator: ", ")))" }
            return text
        }.joined(separator: ", ")
    }
}
