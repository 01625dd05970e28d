/// Jittered exponential backoff for retrying network calls (poll, report, download).
///
/// The n-th delay (from 0) is drawn around `min(maximum, initial * factor^n)`: with `.full` jitter uniformly from
/// `[0, base)`, with `.equal` jitter from `[base/2, base)`, with `.none` exactly `base`. Jitter spreads a fleet's
/// retries so a recovering controller is not hit by every agent at the same instant.
package struct Backoff: Sendable {
    /// How much of each delay is random.
    package enum Jitter: Sendable, Equatable {
        /// Exactly the exponential delay (tests, single clients).
        case none
        /// Uniform in `[0, base)`: the widest spread (AWS "full jitter").
        case full
        /// Uniform in `[base/2, base)`: spread, but never shorter than half the delay.
        case equal
    }

    package struct Configuration: Sendable {
        /// The first delay. Default 1 s.
        package var initial: Duration = .seconds(1)
        /// No delay exceeds this. Default 60 s.
        package var maximum: Duration = .seconds(60)
        /// Growth per attempt. Default 2.
        package var factor: Double = 2
        /// Default `.full`.
        package var jitter: Jitter = .full

        package init(initial: Duration = .seconds(1), maximum: Duration = .seconds(60), factor: Double = 2, jitter: Jitter = .full) {
            self.initial = initial
            self.maximum = maximum
            self.factor = factor
            self.jitter = jitter
        }
    }

    package let configuration: Configuration
    private let random: @Sendable () -> Double
    /// Delays handed out since the last `reset()`.
    package private(set) var attempt = 0

    /// - Parameter random: returns a uniform value in `[0, 1)`; inject a fixed source in tests.
    package init(configuration: Configuration = Configuration(), random: @escaping @Sendable () -> Double = { Double.random(in: 0..<1) }) {
        self.configuration = configuration
        self.random = random
    }

    /// The next delay; each call grows the base until it reaches `maximum`.
    package mutating func next() -> Duration {
        let initial = Self.seconds(configuration.initial)
        let maximum = Self.seconds(configuration.maximum)
        // Stop growing the exponent once the cap is reached so it never overflows.
        var base = initial
        for _ in 0..<min(attempt, 1_000) where base < maximum { base *= max(configuration.factor, 1) }
        base = min(base, maximum)
        attempt += 1
        let unit = min(max(random(), 0), 1)
        let delay: Double
        switch configuration.jitter {
        case .none: delay = base
        case .full: delay = base * unit
        case .equal: delay = base / 2 + base / 2 * unit
        }
        return .nanoseconds(Int64((delay * 1e9).rounded()))
    }

    /// Starts over from `initial` (after a success).
    package mutating func reset() { attempt = 0 }

    private static func seconds(_ duration: Duration) -> Double {
        let (seconds, attoseconds) = duration.components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}
