/// PM2's process states (`pm2_env.status`), which the builtin supervisor reports too.
package enum ProcessStatus: String, Sendable, Codable, CaseIterable {
    case online
    case launching
    case stopping
    case stopped
    case errored
    case waitingRestart = "waiting restart"
    case oneLaunchStatus = "one-launch-status"

    /// Whether the instance counts as up for the health gate.
    package var isOnline: Bool { self == .online }
}
