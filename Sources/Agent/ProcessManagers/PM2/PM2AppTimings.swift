import Shared

/// An app's `kill_timeout` and `listen_timeout` in milliseconds: what bounds a pm2 call that stops and starts its
/// instances (`PM2ProcessManager.timeout`). From the app's spec for a start or reload, from PM2's table (`pm2_env`,
/// which keeps both as given) for a delete or restart.
struct PM2AppTiming: Sendable, Equatable {
    var kill: Int64
    var listen: Int64

    /// PM2's defaults: 1.6 s to stop, 3 s to listen (`GRACEFUL_LISTEN_TIMEOUT`).
    static let pm2Defaults = PM2AppTiming(kill: 1_600, listen: 3_000)

    init(kill: Int64, listen: Int64) {
        self.kill = kill
        self.listen = listen
    }

    init(_ app: AppSpec) {
        kill = app.killTimeoutMilliseconds
        // A whole number written with a fraction (`60000.0`) is that number, as for `kill_timeout`: read as absent, the
        // bound on pm2's calls took PM2's 3 s for an app that may take a minute to listen.
        switch app.pm2Options["listen_timeout"] {
        case .integer(let listen)?: self.listen = listen
        case .number(let listen)?: self.listen = Int64(exactly: listen) ?? Self.pm2Defaults.listen
        default: listen = Self.pm2Defaults.listen
        }
    }
}
