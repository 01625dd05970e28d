import Shared

/// Delays between automatic restarts of an app whose `restart_delay` is 0.
///
/// The first restart after a crash waits `initial`; each further crash within `min_uptime` of its start doubles the
/// wait, up to `maximum`. A run that lasted at least `min_uptime` resets it to `initial`. (PM2 restarts at once
/// unless `exp_backoff_restart_delay` is set; a short, growing delay keeps a crash loop from spinning the CPU while
/// still reaching `errored` quickly: with the defaults and `max_restarts` 16, about 2 minutes.)
/// A positive `restart_delay` replaces this with a fixed delay, as in PM2.
package struct RestartBackoff: Sendable, Equatable {
    /// Delay before the first automatic restart. Default 100 ms.
    package var initial: Duration
    /// Longest delay. Default 15 s.
    package var maximum: Duration

    package init(initial: Duration = .milliseconds(100), maximum: Duration = .seconds(15)) {
        self.initial = initial
        self.maximum = maximum
    }

    /// The delay after `current`.
    func next(after current: Duration) -> Duration {
        min(current * 2, maximum)
    }
}
