import Shared

/// One app in the supervisor's table: its spec and one slot per instance.
struct SupervisedApp: Sendable {
    var spec: AppSpec
    /// Slots in instance order (`instances[i].index == i`).
    var instances: [SupervisedInstance]
    /// Set while the app is being deleted: exits then never trigger a restart.
    var isDeleting = false
}

/// One instance slot of an app. The slot (and its `pm_id`) outlives the processes that run in it.
struct SupervisedInstance: Sendable {
    /// PM2-style id, stable for the slot's life and across daemon restarts.
    let pmId: Int
    /// `NODE_APP_INSTANCE`.
    let index: Int
    /// Status, restart counts and the slot's process: changed only by feeding the machine events.
    var lifecycle: StateMachine

    init(pmId: Int, index: Int, restartBackoff: RestartBackoff) {
        self.pmId = pmId
        self.index = index
        self.lifecycle = StateMachine(restartBackoff: restartBackoff)
    }
}

/// Names one process the supervisor spawned (a key of its child table); never reused within a daemon's life.
struct RunID: Hashable, Sendable, CustomStringConvertible {
    let value: UInt64

    var description: String { "run \(value)" }
}

/// A live process of the supervisor: the current process of a slot, or an old one a rolling reload is stopping.
struct SupervisedChild: Sendable {
    let runID: RunID
    let pid: Int32
    let app: String
    let pmId: Int
    let startedAt: ContinuousClock.Instant
    /// `/proc` start time, saved so a later daemon can recognise the process after a crash of this one.
    let startTicks: UInt64?
    /// The supervisor asked it to stop: its exit is not a crash.
    var stopRequested = false
    /// A reload's replacement of it runs and it is stopped next (no memory restart meanwhile). Not a stop under way: an
    /// exit of its own before the stop comes still takes what it started outside its group with it.
    var retiring = false
    /// It was sent SIGKILL and had not ended by the grace after it (uninterruptible sleep on a hung mount).
    var killSent = false
    /// It ended during a stop while others of its group still run, and is left unreaped until they end too or the
    /// stop's kill_timeout runs out (`Supervisor.childExited`).
    var draining = false
    var lastSample: (ticks: UInt64, at: ContinuousClock.Instant)?
    var cpuPercent: Double = 0
    var memoryBytes: Int64 = 0
}

/// How a child ended.
enum ChildExit: Sendable, Equatable, CustomStringConvertible {
    case exited(code: Int32)
    case signaled(signal: Int32)
    /// The process could not be started at all.
    case notStarted
    /// The exit could not be observed (the process was reaped elsewhere).
    case unknown

    /// The ending a wait reported.
    init(_ termination: ProcessTermination) {
        switch termination {
        case .exited(let code): self = .exited(code: code)
        case .signalled(let signal): self = .signaled(signal: signal)
        }
    }

    var description: String {
        switch self {
        case .exited(let code): "exit code \(code)"
        case .signaled(let signal): "signal \(signal)"
        case .notStarted: "not started"
        case .unknown: "unknown exit"
        }
    }
}
