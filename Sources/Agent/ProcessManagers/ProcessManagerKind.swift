/// Which process manager runs the apps on this instance.
enum ProcessManagerKind: String, Sendable, Codable, CaseIterable {
    /// The one the apps run under (`ProcessManagerChoice`); on a first start, PM2 when `pm2` is found on PATH, else the
    /// builtin supervisor.
    case auto
    case pm2
    case builtin
}

/// Where the agent reads PM2's process table (`pm2TableSource` in the agent config).
enum PM2TableSource: String, Sendable, Codable, CaseIterable {
    /// The daemon's `rpc.sock` (`getMonitorData`, what `pm2 jlist` asks), with `pm2 jlist` for a read it cannot answer.
    case socket
    /// `pm2 jlist` for every read.
    case jlist
}
