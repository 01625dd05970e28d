/// How soon the agent may restart the same app again.
///
/// An app that keeps crashing (at start, or because its port is held by something else) ends up `errored` (the
/// process manager restarted it itself until its limit) or, between its own restarts, stopped. The agent's drift
/// repair used to restart it again on every pass, for as long as it crashed: every few seconds, forever, each time a
/// line in the log, more restarts in the process manager's counter and a repair in the service's report. Now the first
/// restart runs at once, and each further one waits `first`, then twice that, and so on up to `maximum`, counted from
/// the previous one. An app not restarted for `forgetAfter` starts over, and so do a service's apps when a release is
/// installed or the instance env file changes (the operator's fix gets its chance at once). An app missing from the
/// table (its daemon restarted, or it was deleted by hand) is started again at once, every time.
struct RepairBackoff: Sendable {
    struct Policy: Sendable, Equatable {
        var first: Duration = .seconds(10)
        var maximum: Duration = .seconds(300)
        var forgetAfter: Duration = .seconds(600)
        /// Each wait is lengthened by a random share of itself below this (0.25: up to a quarter longer), so that agents
        /// that failed together (a whole fleet woken by one publish, one store serving bad bytes) do not all try again
        /// in the same second, every time.
        var jitter: Double = 0
    }

    /// Repairs in a row of one app, when the last one ran and how long the next one waits.
    private struct Record: Sendable {
        var repairs: Int
        var last: ContinuousClock.Instant
        var wait: Duration
    }

    let policy: Policy
    private var records: [String: Record] = [:]

    init(policy: Policy = Policy()) {
        self.policy = policy
    }

    /// The wait before the next repair, after `repairs` in a row (at least one): `first`, doubled each time, at most
    /// `maximum`.
    func delay(afterRepairs repairs: Int) -> Duration {
        var delay = policy.first
        // Doubling at most 62 times: a zero `first` never reaches `maximum`, and must not keep the loop going.
        for _ in 1..<min(max(repairs, 1), 63) {
            guard delay < policy.maximum else { break }
            delay *= 2
        }
        return min(delay, policy.maximum)
    }

    /// How long a repair of `app` must still wait at `now`; `nil` when it may run.
    func remainingWait(app: String, now: ContinuousClock.Instant) -> Duration? {
        guard let record = current(app, now: now) else { return nil }
        let due = record.last.advanced(by: record.wait)
        return now < due ? now.duration(to: due) : nil
    }

    /// Records a repair of `app` that ran (or was tried) at `now`. Returns how many repairs in a row that makes and how
    /// long the next one will have to wait: the policy's wait, or `floor` when that is longer (both jittered).
    @discardableResult
    mutating func recordRepair(app: String, now: ContinuousClock.Instant, atLeast floor: Duration = .zero) -> (inARow: Int, nextWait: Duration) {
        let repairs = (current(app, now: now)?.repairs ?? 0) + 1
        let wait = jittered(max(delay(afterRepairs: repairs), floor))
        records[app] = Record(repairs: repairs, last: now, wait: wait)
        return (repairs, wait)
    }

    /// `delay` lengthened by a random share of it below `policy.jitter` (none when the jitter is not positive).
    private func jittered(_ delay: Duration) -> Duration {
        guard policy.jitter > 0, policy.jitter.isFinite else { return delay }
        return delay + delay * Double.random(in: 0..<min(policy.jitter, 1))
    }

    /// Starts these apps over: their next repair runs at once.
    mutating func forget<Names: Sequence<String>>(_ apps: Names) {
        for app in apps { records[app] = nil }
    }

    /// The record of `app`, unless it is old enough to be forgotten.
    private func current(_ app: String, now: ContinuousClock.Instant) -> Record? {
        guard let record = records[app], record.last.duration(to: now) < policy.forgetAfter else { return nil }
        return record
    }
}
