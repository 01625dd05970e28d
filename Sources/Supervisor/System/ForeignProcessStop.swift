import Glibc

/// Stops processes this process did not start — a dead daemon's apps, leftovers of an earlier run — each named by pid
/// and `/proc` start time, so a reused pid is never signalled: SIGINT to the group a process leads (to the process
/// alone when it leads none), SIGKILL to whatever still runs after its `killTimeout`, then up to `killGrace` for it to
/// go. Not our children, so no exit notification: `/proc` is polled. The one stop loop of the supervisor's resurrection
/// and the agent's process ledger.
package enum ForeignProcessStop {
    /// A process to stop, as first seen.
    package struct Target: Sendable {
        package var pid: Int32
        package var startTicks: UInt64
        package var killTimeout: Duration

        package init(pid: Int32, startTicks: UInt64, killTimeout: Duration) {
            self.pid = pid
            self.startTicks = startTicks
            self.killTimeout = killTimeout
        }
    }

    /// Sends `number` to `pid` alone if it is still the process first seen (`/proc` start time `startTicks`, not
    /// exited); whether it was sent. Between a scan of `/proc` and its signals a process can exit and its pid go to an
    /// unrelated one, which a bare `kill` would hit.
    @discardableResult
    package static func signal(_ pid: Int32, startTicks: UInt64, _ number: Int32) -> Bool {
        guard let stat = same(pid, startTicks: startTicks), !stat.hasExited else { return false }
        return kill(pid, number) == 0
    }

    /// `pid`'s `/proc` stat while it is the process first seen (start time `startTicks`), `nil` once the pid is free or
    /// another process's.
    private static func same(_ pid: Int32, startTicks: UInt64) -> ProcStat? {
        ProcStat.read(pid: pid).flatMap { $0.startTicks == startTicks ? $0 : nil }
    }

    /// Stops every target at once; whether each is gone (in `targets`' order).
    package static func stop(_ targets: [Target], killGrace: Duration) async -> [Bool] {
        await withTaskGroup(of: (Int, Bool).self) { group in
            for (index, target) in targets.enumerated() {
                group.addTask { (index, await stop(target, killGrace: killGrace)) }
            }
            var gone = [Bool](repeating: false, count: targets.count)
            for await (index, stopped) in group { gone[index] = stopped }
            return gone
        }
    }

    /// Stops `target`; whether it is gone.
    package static func stop(_ target: Target, killGrace: Duration) async -> Bool {
        func runs() -> Bool { same(target.pid, startTicks: target.startTicks).map { !$0.hasExited } ?? false }
        func signal(_ number: Int32) {
            guard let stat = same(target.pid, startTicks: target.startTicks) else { return }
            // A detached app leads its own group: its children (a shell's, a cluster's) go with it.
            _ = stat.processGroup == target.pid ? kill(-target.pid, number) : kill(target.pid, number)
        }
        signal(SIGINT)
        let deadline = ContinuousClock.now + target.killTimeout
        while runs(), ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(50)) }
        guard runs() else { return true }
        signal(SIGKILL)
        let killDeadline = ContinuousClock.now + killGrace
        while runs(), ContinuousClock.now < killDeadline { try? await Task.sleep(for: .milliseconds(50)) }
        return !runs()
    }
}
