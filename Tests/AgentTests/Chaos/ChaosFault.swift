import Foundation
import TestSupport

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

    /// Faults that need something this machine may not have, with the reason they are left out.
    static func unavailable(diskAvailable: String?) -> [ChaosFault: String] {
        var reasons: [ChaosFault: String] = [:]
        if let diskAvailable { reasons[.fillDisk] = diskAvailable }
        return reasons
    }

    /// The clock step of the issue is not injected: see `clockStepReason`.
    static let clockStepReason =
        "clock step: not injected; stepping the wall clock needs a private clock (a VM or a time namespace with CLOCK_REALTIME, "
        + "which Linux does not offer), and on a shared machine it would disturb every other process; libfaketime preloaded "
        + "into the agent empties Swift's CommandLine.arguments on this toolchain (tried: the agent starts without its arguments). "
        + "Expiry and skew are covered by ReleaseDocumentTests and DesiredStateEvaluatorTests with an injected clock."
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

extension SeededRandom {
    /// A duration between `range`'s bounds, in whole milliseconds.
    mutating func duration(_ range: ClosedRange<Double>) -> Duration {
        .milliseconds(Int64((Double.random(in: range, using: &self) * 1000).rounded()))
    }
}
