/// An app as the agent wants it run: derived from a release, the instance env and the agent's layout. What the agent
/// hands a `ProcessManager`, and what travels on the builtin supervisor's socket.
///
/// `cwd` is `services/<svc>/current` and `script` is absolute below it, so a reload after `current` is switched
/// runs the new release (the symlink is re-resolved at every spawn).
package struct AppSpec: Sendable, Equatable, Codable {
    /// `PATH` an app gets when its env has none (and where the agent looks for interpreters after its own `PATH`).
    package static let defaultSearchPath = "/usr/local/bin:/usr/bin:/bin"

    package var name: String
    /// Service the app belongs to.
    package var service: String
    /// Absolute script path below `cwd`.
    package var script: String
    /// Absolute working directory (the service's `current` symlink).
    package var cwd: String
    package var args: [String]
    /// `node` for `.js`/`.mjs`/`.cjs` scripts unless the release says otherwise; `nil` runs the script directly.
    package var interpreter: String?
    package var interpreterArgs: [String]
    /// Resolved instance count (≥ 1).
    package var instances: Int
    package var execMode: ExecMode
    /// Fully merged environment: release env < app env < instance env file. Never reported.
    package var env: [String: String]
    package var autorestart: Bool
    /// Crash restarts (within `minUptime` of the start) before the app is `errored`.
    package var maxRestarts: Int
    /// A run shorter than this counts as unstable (milliseconds).
    package var minUptimeMilliseconds: Int64
    /// Delay before an automatic restart (milliseconds); 0 = immediate, with exponential backoff on repeated crashes.
    package var restartDelayMilliseconds: Int64
    /// Time between SIGINT and SIGKILL when stopping (milliseconds).
    package var killTimeoutMilliseconds: Int64
    /// Restart when resident memory exceeds this many bytes.
    package var maxMemoryBytes: Int64?
    /// The release's PM2 options exactly as signed, for process managers that pass them through (PM2).
    package var pm2Options: [String: JSONValue]

    package init(
        name: String,
        service: String,
        script: String,
        cwd: String,
        args: [String],
        interpreter: String?,
        interpreterArgs: [String],
        instances: Int,
        execMode: ExecMode,
        env: [String: String],
        autorestart: Bool,
        maxRestarts: Int,
        minUptimeMilliseconds: Int64,
        restartDelayMilliseconds: Int64,
        killTimeoutMilliseconds: Int64,
        maxMemoryBytes: Int64?,
        pm2Options: [String: JSONValue]
    ) {
        self.name = name
        self.service = service
        self.script = script
        self.cwd = cwd
        self.args = args
        self.interpreter = interpreter
        self.interpreterArgs = interpreterArgs
        self.instances = instances
        self.execMode = execMode
        self.env = env
        self.autorestart = autorestart
        self.maxRestarts = maxRestarts
        self.minUptimeMilliseconds = minUptimeMilliseconds
        self.restartDelayMilliseconds = restartDelayMilliseconds
        self.killTimeoutMilliseconds = killTimeoutMilliseconds
        self.maxMemoryBytes = maxMemoryBytes
        self.pm2Options = pm2Options
    }
}

extension AppSpec {
    /// Whether PM2 may restart the app on its schedule more than once an hour: a `cron_restart` (set and not `0`:
    /// `God.registerCron`) whose minute field, or seconds field in a 6-field pattern, is not a single number. PM2
    /// restarts an online app at every tick, one more on its instances' restart counters, so such a schedule climbs as a
    /// crash loop does. A schedule of one tick an hour at most (a nightly restart) adds at most one restart to a crash
    /// loop's window, which the count absorbs: its app's crash loops are still found. (A finished job PM2 starts again
    /// at a tick is started, not restarted: its counter does not move.)
    package var restartsOftenOnSchedule: Bool {
        guard case .string(let pattern)? = pm2Options["cron_restart"] else { return false }
        let fields = pattern.split(whereSeparator: \.isWhitespace)
        guard fields.count >= 5, fields.count <= 6 else { return false }
        // Seconds (6 fields) and minutes: a single number each fires at most once an hour.
        return fields.prefix(fields.count - 4).contains { field in !field.allSatisfy { $0.isASCII && $0.isNumber } }
    }

    /// The exit codes after which PM2 stops the app instead of restarting it (`stop_exit_codes`: one integer or a
    /// list; PM2's `God.handleExit` also parses strings). An instance that exited with one of them is `stopped` on
    /// purpose, whatever `autorestart` says.
    package var stopExitCodes: Set<Int32> {
        func code(_ value: JSONValue) -> Int32? {
            switch value {
            case .integer(let number): Int32(exactly: number)
            case .number(let number): Int32(exactly: number)
            case .string(let text): Int32(text.prefix { $0.isASCII && $0.isNumber })
            default: nil
            }
        }
        switch pm2Options["stop_exit_codes"] {
        case .array(let items)?: return Set(items.compactMap(code))
        case let value?: return code(value).map { Set([$0]) } ?? []
        case nil: return []
        }
    }
}
