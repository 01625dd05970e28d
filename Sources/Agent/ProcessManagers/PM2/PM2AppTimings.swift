import Shared
import Synchronization

/// The `kill_timeout` and `listen_timeout` of each app a `PM2ProcessManager` started or reloaded (what bounds a later
/// delete or restart of it).
final class AppTimings: Sendable {
    struct Timing: Sendable, Equatable {
        var kill: Int64
        var listen: Int64

        /// PM2's defaults: 1.6 s to stop, 3 s to listen (`GRACEFUL_LISTEN_TIMEOUT`).
        static let pm2Defaults = Timing(kill: 1_600, listen: 3_000)

        init(kill: Int64, listen: Int64) {
            self.kill = kill
            self.listen = listen
        }

        init(_ app: AppSpec) {
            kill = app.killTimeoutMilliseconds
            if case .integer(let listen)? = app.pm2Options["listen_timeout"] {
                self.listen = listen
            } else {
                listen = Self.pm2Defaults.listen
            }
        }
    }

    private let timings = Mutex<[String: Timing]>([:])

    func note(_ app: AppSpec) {
        let timing = Timing(app)
        timings.withLock { $0[app.name] = timing }
    }

    func timing(of name: String) -> Timing? {
        timings.withLock { $0[name] }
    }
}
