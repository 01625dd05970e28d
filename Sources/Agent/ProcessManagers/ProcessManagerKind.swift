/// Which process manager runs the apps on this instance.
enum ProcessManagerKind: String, Sendable, Codable, CaseIterable {
    /// PM2 when `pm2` is found on PATH, else the builtin supervisor.
    case auto
    case pm2
    case builtin
}
