import Shared

/// Finds apps the process manager keeps restarting behind a table that says `online`.
///
/// Both PM2 and the builtin supervisor restart a crashed app on their own. They give up (`errored`) only on restarts
/// they count as unstable: for PM2, runs shorter than `min_uptime` within `min_uptime × max_restarts` of the app's
/// start; for the supervisor, consecutive runs shorter than `min_uptime`. An app that crashes a while after it starts
/// (on its first request, on a timer, when a leak fills its memory), or that starts crashing long after it was
/// launched, is restarted forever, and between two crashes the table shows it `online`. The table's restart counter is
/// what tells: an instance whose counter rose by `restarts` or more within `window` is in a crash loop, and its
/// service is reported unhealthy, with a sentence saying so, until its counter has not moved for `window`.
///
/// The agent's own restarts count too (a drift repair is one), except those of an install or an env-file reload: the
/// service's apps start over then (`forget`), so a release that fixes the loop is judged on its own. Apps PM2 restarts
/// more than once an hour on a schedule (`cron_restart`, `AppSpec.restartsOftenOnSchedule`) are not watched: each tick
/// is a restart.
struct RestartWatch: Sendable {
    struct Policy: Sendable, Equatable {
        /// Restarts of one instance within `window` that make a crash loop. Default 3.
        var restarts = 3
        /// Default 10 minutes.
        var window: Duration = .seconds(600)
    }

    /// An app in a crash loop: its instance that restarted most within the window.
    struct Loop: Sendable, Equatable, CustomStringConvertible {
        var app: String
        var pmId: Int
        /// Restarts counted within the window (at least `Policy.restarts`).
        var restarts: Int
        /// From the first look that counted to the last.
        var over: Duration

        var description: String {
            "\(app) (pm_id \(pmId)) restarted \(restarts) times in \(Self.words(over)) while the process table showed it running: "
                + "a crash loop the process manager keeps restarting"
        }

        /// `over` in whole seconds or minutes, as an operator reads it.
        static func words(_ duration: Duration) -> String {
            let seconds = max(0, duration.components.seconds)
            if seconds < 120 { return "\(seconds) s" }
            return "\(seconds / 60) min"
        }
    }

    private struct Key: Hashable {
        var app: String
        var pmId: Int
    }

    private struct Sample {
        var at: ContinuousClock.Instant
        var restarts: Int
    }

    let policy: Policy
    /// Each instance's looks within the window, oldest first (and the newest one always, however old).
    private var samples: [Key: [Sample]] = [:]

    init(policy: Policy = Policy()) {
        self.policy = policy
    }

    /// Takes one look at the table's instances of `apps` at `now`; returns the apps in a crash loop, one entry each
    /// (its instance with the most restarts in the window), by name.
    mutating func observe(_ table: [ManagedProcess], apps: Set<String>, now: ContinuousClock.Instant) -> [Loop] {
        let seen = Set(table.filter { apps.contains($0.name) }.map { Key(app: $0.name, pmId: $0.pmId) })
        // An instance that left the table (deleted, scaled down, its app renamed) starts over when it comes back.
        for key in samples.keys where apps.contains(key.app) && !seen.contains(key) { samples[key] = nil }
        var worst: [String: Loop] = [:]
        for process in table where apps.contains(process.name) {
            let key = Key(app: process.name, pmId: process.pmId)
            var kept = samples[key] ?? []
            // A negative counter (a table gone wrong) counts as 0, so the rise below cannot overflow.
            let restarts = max(0, process.restarts)
            // A counter that went down was reset (`pm2 reset`, a new daemon): the looks before it say nothing.
            if let last = kept.last, restarts < last.restarts { kept = [] }
            kept.append(Sample(at: now, restarts: restarts))
            kept.removeAll { $0.at.duration(to: now) > policy.window }
            samples[key] = kept
            guard let first = kept.first, let last = kept.last else { continue }
            let rise = last.restarts - first.restarts
            guard rise >= max(1, policy.restarts) else { continue }
            let loop = Loop(app: process.name, pmId: process.pmId, restarts: rise, over: first.at.duration(to: last.at))
            if let held = worst[process.name], held.restarts >= loop.restarts { continue }
            worst[process.name] = loop
        }
        return worst.values.sorted { $0.app < $1.app }
    }

    /// Starts these apps over: an install or an env-file reload restarts them on purpose.
    mutating func forget<Names: Sequence<String>>(_ apps: Names) {
        let names = Set(apps)
        for key in samples.keys where names.contains(key.app) { samples[key] = nil }
    }
}
