/// Why a PM2 operation did not happen (or cannot be trusted). Every case names the command or app concerned.
enum PM2Error: Error, Sendable, Equatable, CustomStringConvertible {
    /// The `pm2` binary was not found (`name` as configured; `searched` = the directories looked in).
    case executableNotFound(name: String, searched: [String])
    /// No home directory for the agent user: `HOME` unset and no passwd entry. Set `home`/`pm2Home` in the config.
    case homeUnknown
    /// The ecosystem file path given to start/reload is not absolute (PM2 would resolve it against its cwd).
    case ecosystemNotAbsolute(String)
    /// The single-app ecosystem file for an app `--only` cannot select could not be written.
    case ecosystemNotWritten(path: String, reason: String)
    /// The app's env names fields of PM2's process entry (`PM2App.processEntryEnvKeys`), which PM2 would overwrite
    /// with the env's values (`name` renames the app, `namespace` moves it out of Ferry's). Nothing was sent to PM2.
    case envReplacesProcessFields(app: String, keys: [String])
    /// `instance_var` or `increment_var` names a field of PM2's process entry that takes the app out of Ferry's reach.
    case injectedVariableNamesProcessField(app: String, option: String, variable: String)
    /// pm2 could not be launched at all.
    case launchFailed(command: String, reason: String)
    /// pm2 did not finish within the timeout; its whole process group was killed.
    case unresponsive(command: String, timeout: Duration)
    /// The calling task was cancelled (the agent is shutting down) while pm2 ran; its process group was killed.
    case cancelled(command: String)
    /// pm2 exited with a non-zero status (or was killed by a signal).
    case commandFailed(command: String, status: String, stderr: String, stdout: String)
    /// pm2 printed more than the agent accepts on stdout or stderr.
    case outputTooLarge(command: String, stdoutLimit: Int, stderrLimit: Int)
    /// `pm2 jlist` printed something that is not a process table.
    case unreadableTable(reason: String, excerpt: String)
    /// No daemon runs for the home, and the caller only looks (it does not start one).
    case notRunning(home: String)
    /// An app outside Ferry's namespace has the name Ferry wants to act on. PM2 addresses apps by name across all
    /// namespaces (`restart`, `reload`, `delete`, `start <file>`), so acting would touch that app too.
    case foreignNameClash(app: String, namespaces: [String], ferryNamespace: String)
    /// The app would write the log files an app of another namespace writes (PM2 names them after `PM2App.logName`).
    case foreignLogClash(app: String, other: String, namespace: String, file: String)
    /// A restart was asked for an app that is not in Ferry's namespace (PM2 would fall back to a namespace or pm_id
    /// of that name).
    case appNotFound(app: String, namespace: String)
    /// The app's script path holds a space, which PM2 would run through `bash -c` (`PM2ProcessManager.refusal`).
    case scriptPathWithSpace(app: String, script: String)
    /// An app pm2 can be told about neither by name nor by pm_id (`PM2Command.Operation.canName`).
    case unaddressable(app: String, reason: String)

    var description: String {
        switch self {
        case .executableNotFound(let name, let searched):
            "pm2 executable \"\(name)\" not found (searched \(searched.joined(separator: ":"))); set pm2.path or --pm2 PATH"
        case .homeUnknown:
            "cannot tell the agent user's home directory (HOME is unset and there is no passwd entry); set pm2.home"
        case .ecosystemNotAbsolute(let path):
            "ecosystem file path \"\(path)\" is not absolute (pm2 would resolve it against its own working directory)"
        case .ecosystemNotWritten(let path, let reason):
            "cannot write the ecosystem file \(path): \(reason)"
        case .envReplacesProcessFields(let app, let keys):
            "the env of \(app) has \(keys.joined(separator: ", ")), which PM2 copies over the fields of that name of its process "
                + "entry (an env name=x renames the app): rename the variable(s) in the release or the instance env file; nothing was sent to pm2"
        case .injectedVariableNamesProcessField(let app, let option, let variable):
            "\(app) has \(option) \"\(variable)\", a field of PM2's process entry that PM2 would set to each instance's number "
                + "(\"namespace\" moves the app out of Ferry's namespace): publish it with another variable; nothing was sent to pm2"
        case .launchFailed(let command, let reason):
            "could not run `\(command)`: \(reason)"
        case .unresponsive(let command, let timeout):
            "pm2 unresponsive: `\(command)` did not finish within \(Self.seconds(timeout)); its process group was killed "
                + "and the next pass tries again"
        case .cancelled(let command):
            "`\(command)` was cancelled; its process group was killed"
        case .commandFailed(let command, let status, let stderr, let stdout):
            "`\(command)` failed (\(status))" + Self.detail(stderr: stderr, stdout: stdout)
        case .outputTooLarge(let command, let stdoutLimit, let stderrLimit):
            "`\(command)` printed more than the agent accepts (\(stdoutLimit) bytes on stdout, \(stderrLimit) on stderr)"
        case .notRunning(let home):
            "no PM2 daemon runs for PM2_HOME \(home); this command only looks and does not start one (the agent starts it at its next pass)"
        case .unreadableTable(let reason, let excerpt):
            "cannot read the pm2 process table: \(reason)" + (excerpt.isEmpty ? "" : "; output began with: \(excerpt)")
        case .foreignNameClash(let app, let namespaces, let ferryNamespace):
            "app \"\(app)\" also exists in PM2 namespace(s) \(namespaces.joined(separator: ", ")) outside Ferry's "
                + "\"\(ferryNamespace)\"; PM2 targets apps by name across namespaces, so Ferry leaves it alone: "
                + "rename one of them"
        case .foreignLogClash(let app, let other, let namespace, let file):
            "app \"\(app)\" would write the PM2 log file \(file) of app \"\(other)\" in namespace \"\(namespace)\" (PM2 names log files "
                + "after the app, every character but letters, digits, . and - made a dash): the agent would rotate that app's log and "
                + "send its lines in a failure's diagnosis; rename one of them"
        case .appNotFound(let app, let namespace):
            "app \"\(app)\" is not in PM2 namespace \"\(namespace)\""
        case .scriptPathWithSpace(let app, let script):
            "the script of \(app) is \(script), and PM2 runs a script whose path holds a space through bash -c, which cuts it at "
                + "the space: rename the file (publish turns spaces in file names into dashes), or move the agent's state "
                + "directory when the space is there; nothing was sent to pm2"
        case .unaddressable(let app, let reason):
            "app \"\(app)\" cannot be named to pm2: \(reason); delete it by hand (pm2 delete <pm_id>)"
        }
    }

    private static func seconds(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        let milliseconds = attoseconds / 1_000_000_000_000_000
        guard milliseconds > 0 else { return "\(seconds) s" }
        let digits = String(milliseconds)
        return "\(seconds).\(String(repeating: "0", count: max(0, 3 - digits.count)))\(digits) s"
    }

    private static func detail(stderr: String, stdout: String) -> String {
        if !stderr.isEmpty { return ": \(stderr)" }
        if !stdout.isEmpty { return "; stdout: \(stdout)" }
        return ""
    }
}
