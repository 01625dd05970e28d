import Shared

/// One pm2 CLI call exactly as the agent runs it: binary, arguments, environment, working directory and time bound.
///
/// Built by `PM2Invocation.command(_:)` as a plain value, so tests assert the argv and environment of every action
/// directly, and the runner executes nothing that is not visible here.
struct PM2Command: Sendable, Equatable, CustomStringConvertible {
    /// What a pm2 call does. Each maps to one fixed argv (see `arguments`).
    enum Operation: Sendable, Equatable {
        /// `pm2 jlist`: the whole table, every namespace.
        case list
        /// `pm2 start <ecosystem> --only <app>`: starts the app from the generated file.
        case start(app: String, ecosystem: String)
        /// `pm2 reload <ecosystem> --only <app> --update-env`: reloads one app (pm2 takes one reload target), with its
        /// env refreshed from the file. The file form is PM2's `startOrReload`: it applies the file's `env` and never
        /// changes script or cwd (`symlink-07`, `path-02`…`path-04`).
        case reload(app: String, ecosystem: String)
        /// `pm2 delete <app>`.
        case delete(app: String)
        /// `pm2 restart <app>`: without `--update-env`, so the app keeps the env it got from the file.
        case restart(app: String)
        /// `pm2 delete <pm_id>…`: the app's processes by id, for a name PM2 would not read as that app (see `canName`).
        case deleteIds(app: String, ids: [Int])
        /// `pm2 restart <pm_id>…`, as `deleteIds`.
        case restartIds(app: String, ids: [Int])
        /// `pm2 save`: writes `$PM2_HOME/dump.pm2`, which `pm2 resurrect` (and `pm2 startup`'s unit) restores at boot.
        case save
        /// `pm2 reloadLogs`: every app's log files are reopened (after `PM2LogRotation` renamed them).
        case reloadLogs

        /// The arguments after the pm2 binary. `--only` selects the app in the service's file; a name `--only` cannot
        /// carry (see `canSelect`) is started from a file that holds that app alone, so no `--only` is needed.
        var arguments: [String] {
            switch self {
            case .list: ["jlist"]
            case .start(let app, let ecosystem): ["start", ecosystem] + Self.only(app)
            case .reload(let app, let ecosystem): ["reload", ecosystem] + Self.only(app) + ["--update-env"]
            case .delete(let app): ["delete", app]
            case .restart(let app): ["restart", app]
            case .deleteIds(_, let ids): ["delete"] + ids.map(String.init)
            case .restartIds(_, let ids): ["restart"] + ids.map(String.init)
            // `--force`: without it PM2 leaves `dump.pm2` as it was when the table is empty ("PM2 is not managing any
            // process, skipping save", exit 0), and the next boot resurrected the apps Ferry had deleted.
            case .save: ["save", "--force"]
            case .reloadLogs: ["reloadLogs"]
            }
        }

        /// Whether `pm2 … --only <name>` selects exactly the app `name`: PM2 splits the value on commas and spaces.
        static func canSelect(_ name: String) -> Bool { !name.contains(",") && !name.contains(" ") }

        private static func only(_ app: String) -> [String] { canSelect(app) ? ["--only", app] : [] }

        /// Whether `pm2 delete <name>` and `pm2 restart <name>` act on the app `name` and nothing else. Not for a name
        /// PM2 reads as something else (lib/API.js `delete`, `restart`, `_operate`; lib/binaries/CLI.js): `all` (every
        /// app), `/…/` (a regular expression over every namespace's names: `/.*/` deletes everything), one holding a
        /// config file's extension (`Common.isConfigFile`: loaded as an ecosystem file, its apps deleted by name
        /// wherever they run, a `.config.js` executed), `-` (a list read from standard input) or one starting with `-`
        /// (an option). Release names are refused these, but a process in Ferry's namespace may carry any name.
        static func canName(_ name: String) -> Bool {
            !(name == "all" || name.hasPrefix("-") || (name.hasPrefix("/") && name.hasSuffix("/"))
                || PM2App.configFileMarkers.contains(where: { name.contains($0) }))
        }

        /// The app this operation targets, if any.
        var app: String? {
            switch self {
            case .list, .save, .reloadLogs: nil
            case .start(let app, _), .reload(let app, _), .delete(let app), .restart(let app), .deleteIds(let app, _), .restartIds(let app, _):
                app
            }
        }
    }

    /// Absolute path of the pm2 binary.
    var executable: String
    /// Arguments after the binary.
    var arguments: [String]
    /// The complete environment pm2 gets (nothing is inherited from the agent).
    var environment: [String: String]
    /// pm2's working directory. Every path Ferry passes is absolute, so this only matters for pm2's own lookups.
    var workingDirectory: String
    /// How long pm2 may run before its process group is killed.
    var timeout: Duration

    /// `pm2 <arguments>` with the binary as configured, for messages and logs (never carries env values).
    var description: String {
        ([executable] + arguments).map(Self.quoted).joined(separator: " ")
    }

    private static func quoted(_ word: String) -> String {
        guard word.isEmpty || word.contains(where: { $0 == " " || $0 == "\"" || $0 == "'" }) else { return word }
        return "'" + word.replacing("'", with: #"'\''"#) + "'"
    }
}
