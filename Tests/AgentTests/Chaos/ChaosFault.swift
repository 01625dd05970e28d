import Foundation

/// The faults the chaos loop injects, one per cycle at a random moment (docs/reliability.md).
enum ChaosFault: String, CaseIterable, Sendable, Codable {
    /// kill -9 of one agent, restarted after a moment (an OOM kill, a crash, a reboot of the agent alone).
    case killAgent = "kill -9 agent"
    /// kill -9 of the controller, restarted on the same port and data directory.
    case killController = "kill -9 controller"
    /// kill -9 of the agent's process-manager daemon: PM2's God daemon, or the builtin supervisor daemon.
    case killDaemon = "kill -9 PM2 daemon / supervisor"
    /// kill -9 of one app instance.
    case killApp = "kill -9 app"
    /// The agent's state file system filled to the last byte for a while, then freed.
    case fillDisk = "fill the state disk"
    /// The controller stopped (SIGSTOP) for a while: connections hang, nothing answers; then SIGCONT.
    case controllerUnreachable = "controller unreachable"
    /// The agent's wall clock stepped by minutes to hours, forward or back, and left there (an NTP step, a VM resumed
    /// from a snapshot). Injected with libfaketime (`ChaosClock`): the agent and the processes that inherit its
    /// environment see the step, the monotonic clock does not move — as with a real step.
    case stepClock = "step the agent's clock"

    /// Faults that need something this machine may not have, with the reason they are left out.
    static func unavailable(diskProblem: String?, clockProblem: String?) -> [ChaosFault: String] {
        var reasons: [ChaosFault: String] = [:]
        if let diskProblem { reasons[.fillDisk] = diskProblem }
        if let clockProblem { reasons[.stepClock] = clockProblem }
        return reasons
    }
}

/// A wall clock of the agent's own: libfaketime preloaded into the agent, its offset read from a file the loop
/// rewrites (at most a second late). Linux has no time namespace for `CLOCK_REALTIME`, and stepping the machine's clock
/// would disturb every other process on it.
struct ChaosClock {
    /// Where Debian's `libfaketime` package puts the library.
    static let library = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"

    /// Why the fault cannot be injected here, or `nil` when it can.
    static var problem: String? {
        FileManager.default.fileExists(atPath: library) ? nil : "libfaketime is not installed (\(library); apt-get install faketime)"
    }

    /// The offset file of one agent.
    let offsetFile: String

    /// The environment that puts the agent on this clock: wall-clock time shifted by the file's offset, the
    /// monotonic clock left alone (`FAKETIME_DONT_FAKE_MONOTONIC`).
    var environment: [String: String] {
        [
            "LD_PRELOAD": Self.library, "FAKETIME_TIMESTAMP_FILE": offsetFile, "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            "FAKETIME_CACHE_DURATION": "1",
        ]
    }

    /// Sets the agent's clock `seconds` away from the real one (libfaketime's "+N"/"-N" relative format).
    func set(offsetSeconds seconds: Int) throws {
        try "\(seconds >= 0 ? "+" : "")\(seconds)\n".write(toFile: offsetFile, atomically: true, encoding: .utf8)
    }
}

/// What each cycle publishes.
enum ChaosReleaseKind: String, CaseIterable, Sendable, Codable {
    /// Starts, answers 200 with its version: every agent should end up running it.
    case good
    /// Throws at boot: every agent should roll back to its last good release and report the failure.
    case crashing
    /// Starts and listens, but answers 503: fails the health gate at its deadline, rolled back.
    case unhealthy
}

/// A small deterministic generator (SplitMix64), so a run is repeated with its seed.
struct ChaosRandom: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A duration between `range`'s bounds, in whole milliseconds.
    mutating func duration(_ range: ClosedRange<Double>) -> Duration {
        .milliseconds(Int64((Double.random(in: range, using: &self) * 1000).rounded()))
    }
}
