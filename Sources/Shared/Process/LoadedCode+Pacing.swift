extension LoadedCode {
    /// When a long-running process lets go of its code pages: at a quiet moment after it ran code it will not run
    /// again soon (start-up, a deploy, a change of the process table), and not more often than `minimumInterval`.
    ///
    /// Letting go costs the faults that map the steady code again afterwards (a few milliseconds). A process whose
    /// quiet moments come and go quickly (an app that turns healthy and unhealthy pass by pass) would pay them at each
    /// one; paced, it pays them once per interval. A release held back by the interval is not lost: it happens at the
    /// first quiet moment after the interval ends.
    package struct Pacing: Sendable {
        /// The least time between two releases.
        package let minimumInterval: Duration
        private var lastRelease: ContinuousClock.Instant?
        /// Code ran once since the last release. A new process has just run its start-up.
        package private(set) var pending = true

        package init(minimumInterval: Duration) {
            self.minimumInterval = minimumInterval
        }

        /// Code ran that a quiet process does not run again.
        package mutating func ranOnceOffCode() { pending = true }

        /// Whether to let go now, at a quiet moment: code ran once since the last release and the interval has passed.
        /// When it answers yes, the release is counted as done at `now`.
        package mutating func releaseIsDue(at now: ContinuousClock.Instant) -> Bool {
            guard pending else { return false }
            if let lastRelease, lastRelease.duration(to: now) < minimumInterval { return false }
            pending = false
            lastRelease = now
            return true
        }
    }

    /// The pacing of the agent and of the builtin supervisor's daemon: at most one release every five minutes.
    package static let defaultMinimumInterval: Duration = .seconds(300)
}
