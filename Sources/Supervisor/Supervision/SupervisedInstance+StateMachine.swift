import Shared

extension SupervisedInstance {
    /// The lifecycle of one instance slot: the one place that decides its status, its restart counts and what the
    /// supervisor does next. The `Supervisor` actor feeds it events (requests, spawns, exits, timers) and performs the
    /// `Action` each returns; nothing else changes the state.
    ///
    /// | state | event → next state (action) |
    /// |---|---|
    /// | stopped | launch, restart, replace → starting (spawn); stop → stopped |
    /// | starting | spawned → online; spawnFailed → crash policy |
    /// | online(run) | stop → stopping(run, stay) (terminate); restart → stopping(run, relaunch) (terminate); replace → starting (spawn, retire run); exited(run) → crash policy |
    /// | stopping(run, then) | stop → stopping(run, stay); restart → stopping(run, relaunch); exited(run), terminateReturned(run) → stopped, or starting (spawn) when relaunching |
    /// | waitingRestart(timer) | stop → stopped (cancel timer); restart, replace → starting (spawn); restartTimerFired(timer) → starting (spawn, restarts + 1) |
    /// | errored | launch, restart, replace → starting (spawn); stop → stopped |
    ///
    /// The crash policy ends in stopped (autorestart off), errored (too many unstable exits) or waitingRestart (arm a
    /// timer). While the app or the supervisor is closing (delete, shutdown), every path that would spawn ends in
    /// stopped instead.
    ///
    /// Crash policy (PM2's, see `Supervisor`): without `autorestart` an exit leaves the instance `stopped`. Otherwise a
    /// run shorter than `min_uptime` is unstable; when consecutive unstable exits reach `max_restarts` the instance is
    /// `errored`; else it waits `restart_delay` (or the growing `RestartBackoff` delay when that is 0) and starts
    /// again, counting a restart. A run that lasted `min_uptime` resets the unstable count and the backoff.
    ///
    /// Events that can no longer concern the slot (the exit of a process a rolling reload retired, a timer that was
    /// replaced) leave it unchanged and return `.none`. Events that contradict the state are a programming error
    /// of the caller: they throw `IllegalTransition` and change nothing.
    struct StateMachine: Sendable, Equatable {
        /// Where the slot is in its lifecycle.
        enum State: Sendable, Equatable {
            /// No process, and none coming (never started, stopped, or `autorestart: false` after an exit).
            case stopped
            /// A process is being spawned (within one turn of the actor: `spawned` or `spawnFailed` follows).
            case starting
            /// `run` is the slot's live process.
            case online(RunID)
            /// `run` was sent SIGINT and its exit is awaited; `then` says what follows it.
            case stopping(RunID, then: AfterStop)
            /// A crash restart is armed; only the timer with this token may fire it.
            case waitingRestart(timer: UInt64)
            /// Gave up after too many unstable restarts; only a request starts it again.
            case errored
        }

        /// What follows the end of a process that is stopping.
        enum AfterStop: Sendable, Equatable {
            /// The slot stays `stopped` (stop, delete, shutdown).
            case stay
            /// A new process starts (restart, fork reload, memory limit); `countingRestart` when the stopped process was
            /// running (PM2 counts a restart of a running app, not of a stopped one).
            case relaunch(countingRestart: Bool)
        }

        /// The app's restart settings, read when a process ends.
        struct Policy: Sendable, Equatable {
            var autorestart: Bool
            var maxRestarts: Int
            var minUptime: Duration
            /// Fixed delay before a crash restart; `.zero` uses the backoff.
            var restartDelay: Duration
            /// Exit codes after which the instance stays stopped, as with `autorestart: false` (`stop_exit_codes`).
            var stopExitCodes: Set<Int32>

            init(autorestart: Bool, maxRestarts: Int, minUptime: Duration, restartDelay: Duration, stopExitCodes: Set<Int32> = []) {
                self.autorestart = autorestart
                self.maxRestarts = maxRestarts
                self.minUptime = minUptime
                self.restartDelay = restartDelay
                self.stopExitCodes = stopExitCodes
            }

            /// Whether `exit` is one of `stopExitCodes` (a process ended by a signal has no exit code).
            func stopsAfter(_ exit: ChildExit) -> Bool {
                if case .exited(let code) = exit { return stopExitCodes.contains(code) }
                return false
            }

            /// The policy of `spec` (already validated: its numbers are in range).
            init(_ spec: AppSpec) {
                self.init(
                    autorestart: spec.autorestart,
                    maxRestarts: spec.maxRestarts,
                    minUptime: .milliseconds(spec.minUptimeMilliseconds),
                    restartDelay: .milliseconds(spec.restartDelayMilliseconds),
                    stopExitCodes: spec.stopExitCodes
                )
            }
        }

        /// What the supervisor does after a transition.
        enum Action: Sendable, Equatable {
            /// Nothing.
            case none
            /// Cancel an armed restart timer, spawn a process in the slot, then report `spawned` or `spawnFailed`.
            case spawn
            /// Rolling (cluster) reload: spawn the new process as for `.spawn`, let it settle, then terminate `retiring`,
            /// which no longer belongs to the slot.
            case spawnReplacing(retiring: RunID)
            /// SIGINT to the process group, SIGKILL after kill_timeout, wait for the exit; then report
            /// `terminateReturned`.
            case terminate(RunID)
            /// Cancel the armed restart timer.
            case cancelRestartTimer
            /// Arm a timer that reports `restartTimerFired(timer)` after `delay`; save the table.
            case scheduleRestart(after: Duration, timer: UInt64)
            /// The process ended and `autorestart` is off: log it, save the table.
            case recordStopped(ChildExit)
            /// Too many unstable restarts: log it, note it in the app's error log, save the table.
            case recordErrored(ChildExit)
        }

        /// The events a state may refuse.
        enum Event: String, Sendable, Equatable {
            case launch
            case spawned
            case spawnFailed
            case stop
            case restart
            case replace
        }

        /// An event that contradicts the state; nothing changed.
        struct IllegalTransition: Error, Sendable, Equatable, CustomStringConvertible {
            var event: Event
            var state: State

            var description: String { "instance event \(event.rawValue) is not allowed in state \(state)" }
        }

        private(set) var state: State = .stopped
        /// Restarts of any kind (PM2's `restart_time`).
        private(set) var restarts = 0
        /// Consecutive exits within `min_uptime` of the start (PM2's `unstable_restarts`).
        private(set) var unstableRestarts = 0
        /// Delay before the next automatic restart when `restart_delay` is 0.
        private(set) var backoff: Duration
        /// How the last process of the slot ended.
        private(set) var lastExit: ChildExit?
        private let restartBackoff: RestartBackoff
        private var nextTimer: UInt64 = 1

        init(restartBackoff: RestartBackoff) {
            self.restartBackoff = restartBackoff
            self.backoff = restartBackoff.initial
        }

        /// The status reported for the slot.
        var status: ProcessStatus {
            switch state {
            case .stopped: .stopped
            case .starting: .launching
            case .online: .online
            case .stopping: .stopping
            case .waitingRestart: .waitingRestart
            case .errored: .errored
            }
        }

        /// The slot's process, while it has one.
        var run: RunID? {
            switch state {
            case .online(let run), .stopping(let run, _): run
            case .stopped, .starting, .waitingRestart, .errored: nil
            }
        }

        // MARK: - Requests

        /// Start the slot's first process (a new app, a new slot, a resurrected app).
        mutating func launch() throws(IllegalTransition) -> Action {
            switch state {
            case .stopped, .errored:
                state = .starting
                return .spawn
            case .starting, .online, .stopping, .waitingRestart:
                throw IllegalTransition(event: .launch, state: state)
            }
        }

        /// Stop the slot (stop, delete, shutdown, shrinking the app).
        mutating func stop() throws(IllegalTransition) -> Action {
            switch state {
            case .online(let run), .stopping(let run, _):
                state = .stopping(run, then: .stay)
                return .terminate(run)
            case .waitingRestart:
                state = .stopped
                return .cancelRestartTimer
            case .stopped, .errored:
                state = .stopped
                return .none
            case .starting:
                throw IllegalTransition(event: .stop, state: state)
            }
        }

        /// Stop the slot's process if it runs, then start a new one with the unstable count and backoff reset (restart,
        /// `start` of an existing app, fork-mode reload, memory limit).
        mutating func restart() throws(IllegalTransition) -> Action {
            switch state {
            case .online(let run):
                state = .stopping(run, then: .relaunch(countingRestart: true))
                return .terminate(run)
            case .stopping(let run, _):
                state = .stopping(run, then: .relaunch(countingRestart: false))
                return .terminate(run)
            case .stopped, .errored, .waitingRestart:
                relaunch(countingRestart: false)
                return .spawn
            case .starting:
                throw IllegalTransition(event: .restart, state: state)
            }
        }

        /// Cluster-mode reload: a new process first, the old one retired once the new one settled. A slot without a
        /// live process restarts instead.
        mutating func replace() throws(IllegalTransition) -> Action {
            switch state {
            case .online(let run):
                relaunch(countingRestart: true)
                return .spawnReplacing(retiring: run)
            case .stopped, .errored, .waitingRestart, .stopping:
                return try restart()
            case .starting:
                throw IllegalTransition(event: .replace, state: state)
            }
        }

        // MARK: - Reports

        /// The process `run` was spawned for the slot.
        mutating func spawned(_ run: RunID) throws(IllegalTransition) -> Action {
            switch state {
            case .starting:
                state = .online(run)
                return .none
            case .stopped, .online, .stopping, .waitingRestart, .errored:
                throw IllegalTransition(event: .spawned, state: state)
            }
        }

        /// The process could not be spawned: an immediate crash (restart, then `errored`). `closing` when the app or the
        /// supervisor is going away: then the slot just stops.
        mutating func spawnFailed(policy: Policy, closing: Bool) throws(IllegalTransition) -> Action {
            switch state {
            case .starting:
                return ended(.notStarted, ranFor: .zero, policy: policy, closing: closing)
            case .stopped, .online, .stopping, .waitingRestart, .errored:
                throw IllegalTransition(event: .spawnFailed, state: state)
            }
        }

        /// The process `run` exited after running for `ranFor`.
        mutating func exited(_ run: RunID, exit: ChildExit, ranFor: Duration, policy: Policy, closing: Bool) -> Action {
            switch state {
            case .online(run):
                return ended(exit, ranFor: ranFor, policy: policy, closing: closing)
            case .stopping(run, let then):
                return stopped(exit, then: then, closing: closing)
            case .stopped, .starting, .online, .stopping, .waitingRestart, .errored:
                // Not the slot's process (a retired one, or one a stop gave up waiting for).
                return .none
            }
        }

        /// `terminate(run)` returned. When the exit was not seen (a process SIGKILL did not end in time), the slot lets
        /// go of it as if it had exited; otherwise the exit was handled already.
        mutating func terminateReturned(_ run: RunID, closing: Bool) -> Action {
            switch state {
            case .stopping(run, let then):
                return stopped(.unknown, then: then, closing: closing)
            case .stopped, .starting, .online, .stopping, .waitingRestart, .errored:
                return .none
            }
        }

        /// The restart timer with token `timer` fired.
        mutating func restartTimerFired(_ timer: UInt64, closing: Bool) -> Action {
            switch state {
            case .waitingRestart(timer) where closing:
                state = .stopped
                return .none
            case .waitingRestart(timer):
                restarts += 1
                state = .starting
                return .spawn
            case .stopped, .starting, .online, .stopping, .waitingRestart, .errored:
                // A timer that was cancelled or replaced.
                return .none
            }
        }

        // MARK: - Shared steps

        /// A process the supervisor did not ask to stop ended (or never started): the crash policy.
        private mutating func ended(_ exit: ChildExit, ranFor: Duration, policy: Policy, closing: Bool) -> Action {
            lastExit = exit
            if closing {
                state = .stopped
                return .none
            }
            // PM2's `God.handleExit`: an exit with one of `stop_exit_codes` stops the app as `autorestart: false` does (a
            // one-shot job that exits 0 is not run again in a loop).
            guard policy.autorestart, !policy.stopsAfter(exit) else {
                state = .stopped
                return .recordStopped(exit)
            }
            // A process that never started is unstable whatever `min_uptime` says: with `min_uptime: 0` a missing
            // interpreter or working directory was otherwise tried every 100 ms for ever, never `errored`.
            if exit == .notStarted || ranFor < policy.minUptime {
                unstableRestarts += 1
            } else {
                unstableRestarts = 0
                // Only a run of a second or more starts the backoff again, whatever `min_uptime` says: with `0`, an app
                // that exits at once (a bad configuration) was restarted every 100 ms for ever, each time a scan of
                // /proc, a thread and a table save. It still never ends errored, as under PM2.
                if ranFor >= .seconds(1) { backoff = restartBackoff.initial }
            }
            if unstableRestarts >= policy.maxRestarts {
                unstableRestarts = 0
                state = .errored
                return .recordErrored(exit)
            }
            let delay: Duration
            if policy.restartDelay > .zero {
                delay = policy.restartDelay
            } else {
                delay = backoff
                backoff = restartBackoff.next(after: backoff)
            }
            let timer = nextTimer
            nextTimer &+= 1
            state = .waitingRestart(timer: timer)
            return .scheduleRestart(after: delay, timer: timer)
        }

        /// A process the supervisor was stopping ended.
        private mutating func stopped(_ exit: ChildExit, then: AfterStop, closing: Bool) -> Action {
            lastExit = exit
            switch then {
            case .relaunch(let counting) where !closing:
                relaunch(countingRestart: counting)
                return .spawn
            case .stay, .relaunch:
                state = .stopped
                return .none
            }
        }

        /// Into `starting` with the unstable count and backoff reset.
        private mutating func relaunch(countingRestart: Bool) {
            if countingRestart { restarts += 1 }
            unstableRestarts = 0
            backoff = restartBackoff.initial
            state = .starting
        }
    }
}
