import Foundation
import Shared

/// One finding about an ecosystem file, naming the field it is about (`apps[1].instances`).
struct EcosystemProblem: Sendable, Equatable, CustomStringConvertible {
    enum Severity: Sendable, Equatable {
        /// The file cannot be published as it is.
        case error
        /// Published, but something was dropped or coerced: the operator should know.
        case warning
    }

    var severity: Severity
    var field: String
    var message: String

    var description: String { field.isEmpty ? message : "\(field): \(message)" }
}

/// Turns the apps of an operator's ecosystem file into the apps of a release, reading the file exactly as PM2 7.0.3's
/// `pm2 start <file>` does (`Common.verifyConfs`, `Config.validateJSON`, `Common.prepareAppConf`,
/// `Common.mergeEnvironmentVariables`): the same aliases, coercions, defaults, script resolution and interpreter.
///
/// The result is Ferry's normalised form, which the release signs: every decision PM2 would make at `pm2 start` time is
/// made here, with the artifact in hand, and written down (`script` relative to the release root or a program on PATH,
/// `cwd`, `interpreter`, `exec_mode`, `instances`, string `env`), so every instance runs the same thing whatever its
/// process manager. What Ferry owns on the instance (log and pid files, namespace, watching the release tree) is
/// dropped with one warning each; what cannot run is an error. Every problem of the file is collected in one pass.
struct EcosystemNormalizer {
    struct Configuration {
        /// `--env-name`: merge each app's `env_<name>` block (and `deploy.<name>.env`), like `pm2 start --env <name>`.
        var environmentName: String?
        /// Absolute directory of the ecosystem file, which is the release root: absolute paths inside it (a
        /// `cwd: __dirname`) are made relative to it.
        var releaseRoot: String
        /// The artifact's files, to resolve and check every script against. `nil` checks nothing on disk (scripts are
        /// taken as files of the release and interpreters come from the extension alone).
        var artifact: ArtifactTree?
        /// PM2's `which`: the absolute path of an executable called `name` on this machine's PATH, or `nil`.
        var which: (String) -> String?
        /// The first 512 bytes of a file on this machine (PM2 tests programs found on PATH for being binary).
        var head: (String) -> [UInt8]?
        /// Normalise only these apps fully (all when empty); the others are validated as PM2 validates every app of
        /// a file, but not checked against the artifact (`publish --app`).
        var selectedNames: Set<String> = []

        init(
            environmentName: String? = nil,
            releaseRoot: String,
            artifact: ArtifactTree? = nil,
            which: @escaping (String) -> String? = { EcosystemNormalizer.which($0) },
            head: @escaping (String) -> [UInt8]? = { EcosystemNormalizer.head(ofFileAt: $0) }
        ) {
            self.environmentName = environmentName
            self.releaseRoot = releaseRoot
            self.artifact = artifact
            self.which = which
            self.head = head
        }
    }

    struct Result {
        /// The apps in the release's vocabulary with their field path in the file, in file order (only those
        /// without errors, and only the selected ones).
        var apps: [(path: String, app: JSONValue)] = []
        var problems: [EcosystemProblem] = []
        /// Every app name the file defines (also those with errors), for `--app` filters.
        var names: [String] = []
        /// Whether some app had an `env_<name>` block for the requested environment.
        var foundEnvironmentBlock = false

        var errors: [EcosystemProblem] { problems.filter { $0.severity == .error } }
        var warnings: [EcosystemProblem] { problems.filter { $0.severity == .warning } }
    }

    let configuration: Configuration

    init(configuration: Configuration) {
        self.configuration = configuration
    }

    /// The options a release may carry as they are (after PM2's coercions); everything else is either decided by
    /// the normaliser, owned by Ferry, or refused.
    static let passedThrough: Set<String> = [
        "filter_env", "log_type", "log_date_format", "time", "disable_logs", "max_memory_restart", "restart_delay",
        "exp_backoff_restart_delay", "source_map_support", "disable_source_map_support", "wait_ready", "kill_timeout",
        "shutdown_with_message", "listen_timeout", "cron_restart", "merge_logs", "vizion", "autorestart", "stop_exit_codes",
        "min_uptime", "max_restarts", "force", "post_update", "trace", "v8", "event_loop_inspector", "deep_monitoring",
        "increment_var", "instance_var", "pmx", "automation", "treekill", "windowsHide", "kill_retry_time", "write", "io",
    ]

    /// Options Ferry owns on the instance: dropped with a warning naming each.
    static let ownedByFerry: [String: String] = [
        "namespace": "Ferry puts every app in its own PM2 namespace on the instance",
        "out_file": "Ferry owns log paths on the instance (PM2_HOME/logs, or the supervisor's logs)",
        "error_file": "Ferry owns log paths on the instance (PM2_HOME/logs, or the supervisor's logs)",
        "log_file": "Ferry owns log paths on the instance (PM2_HOME/logs, or the supervisor's logs)",
        "pid_file": "Ferry owns pid files on the instance",
        "watch": "a release tree never changes in place; Ferry reloads the app when a new release arrives",
        "ignore_watch": "watching is off: a release tree never changes in place",
        "watch_options": "watching is off: a release tree never changes in place",
        "watch_delay": "watching is off: a release tree never changes in place",
        "username": "PM2 sets it to the user running the daemon",
        "name_prefix": "PM2 applies a name prefix from its command line only, not from a file",
        "install_url": "PM2.io module installs are not part of a release",
    ]

    // MARK: - Documents

    /// Normalises every app of an evaluated ecosystem file (`{apps: [...]}`, `{pm2: [...]}`, an array, or one app).
    func normalize(_ document: JSONValue) -> Result {
        var result = Result()
        var appsValue = document
        var base = ""
        var deploy: JSONValue?
        if case .object(let fields) = document {
            deploy = fields["deploy"]
            if JavaScriptSemantics.isTruthy(fields["static"]) {
                result.problems.append(
                    .init(
                        severity: .error,
                        field: "static",
                        message: "PM2's static file servers (pm2 serve) are not part of a release: serve the files from an app"
                    )
                )
            }
            if JavaScriptSemantics.isTruthy(fields["apps"]) {
                appsValue = fields["apps"] ?? .null
                base = "apps"
            } else if JavaScriptSemantics.isTruthy(fields["pm2"]) {
                appsValue = fields["pm2"] ?? .null
                base = "pm2"
            }
        }
        let apps: [(JSONValue, String)]
        if case .array(let items) = appsValue {
            apps = items.enumerated().map { ($1, "\(base)[\($0)]") }
        } else {
            apps = [(appsValue, base)]
        }
        if apps.isEmpty {
            result.problems.append(.init(severity: .error, field: base, message: "the ecosystem file has no apps"))
        }
        // Each name with its own app's path: an app without a name (not an object) has no entry in `result.names`, so
        // its index there is not the app's index in `apps`.
        var namedPaths: [(name: String, path: String)] = []
        for (value, path) in apps {
            var app = AppNormalization(configuration: configuration, path: path, deploy: deploy)
            let normalised = app.run(value)
            result.problems += app.problems
            if let name = app.name { namedPaths.append((name, path)) }
            result.foundEnvironmentBlock = result.foundEnvironmentBlock || app.foundEnvironmentBlock
            if let normalised, !app.problems.contains(where: { $0.severity == .error }) { result.apps.append((path, normalised)) }
        }
        result.names = namedPaths.map(\.name)
        var seen: [String: String] = [:]
        for (name, path) in namedPaths {
            if let first = seen[name] {
                result.problems.append(
                    .init(
                        severity: .error,
                        field: path + ".name",
                        message: "\"\(name)\" is also the name of \(first); app names must be unique"
                    )
                )
            } else {
                seen[name] = path
            }
        }
        return result
    }

    // MARK: - The host

    /// PM2's `which` over this process's `PATH`: the first regular, executable file called `name`.
    static func which(_ name: String, path: String? = ProcessInfo.processInfo.environment["PATH"]) -> String? {
        guard !name.isEmpty else { return nil }
        if name.contains("/") { return isExecutableFile(name) ? name : nil }
        for directory in (path ?? "").split(separator: ":") where !directory.isEmpty {
            let candidate = "\(directory)/\(name)"
            if isExecutableFile(candidate) { return candidate }
        }
        return nil
    }

    private static func isExecutableFile(_ path: String) -> Bool {
        var isDirectory: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && !isDirectory.boolValue
            && FileManager.default.isExecutableFile(atPath: path)
    }

    /// The first 512 bytes of the file at `path`.
    static func head(ofFileAt path: String) -> [UInt8]? {
        guard let handle = FileHandle(forReadingAtPath: path) else { return nil }
        defer { try? handle.close() }
        return (try? handle.read(upToCount: 512)).map(Array.init) ?? []
    }
}

/// The normalisation of one app: PM2's steps in PM2's order, collecting every problem.
private struct AppNormalization {
    let configuration: EcosystemNormalizer.Configuration
    let path: String
    let deploy: JSONValue?
    var problems: [EcosystemProblem] = []
    var name: String?
    var foundEnvironmentBlock = false

    init(configuration: EcosystemNormalizer.Configuration, path: String, deploy: JSONValue?) {
        self.configuration = configuration
        self.path = path
        self.deploy = deploy
    }

    private func field(_ key: String) -> String { path.isEmpty ? key : key.isEmpty ? path : "\(path).\(key)" }

    private mutating func error(_ key: String, _ message: String) {
        problems.append(.init(severity: .error, field: field(key), message: message))
    }

    private mutating func warning(_ key: String, _ message: String) {
        problems.append(.init(severity: .warning, field: field(key), message: message))
    }

    private typealias JS = JavaScriptSemantics

    mutating func run(_ value: JSONValue) -> JSONValue? {
        guard case .object(var app) = value else {
            error("", "an app must be an object, got \(value.typeName)")
            return nil
        }

        // Common.verifyConfs
        if JS.isTruthy(app["exec_mode"]) {
            if case .string(let mode)? = app["exec_mode"] {
                if mode == "fork" || mode == "cluster" { app["exec_mode"] = .string(mode + "_mode") }
            } else {
                error("exec_mode", "must be a string, fork or cluster (PM2 fails on \(app["exec_mode"]?.typeName ?? "it"))")
                app["exec_mode"] = nil
            }
        }
        for alias in ["cmd", "command"] where JS.isTruthy(app[alias]) && !JS.isTruthy(app["script"]) {
            app["script"] = app[alias]
            app[alias] = nil
        }
        if !JS.isTruthy(app["env"]) { app["env"] = .object([:]) }
        if !JS.isTruthy(app["name"]), JS.isTruthy(app["script"]) {
            guard case .string(let script)? = app["script"] else {
                error("script", "must be a string, got \(app["script"]?.typeName ?? "nothing") (PM2 fails on it)")
                return nil
            }
            app["name"] = .string(Self.applicationName(fromScript: script))
        }
        if Self.looselyEqualsTrue(app["execute_command"]) {
            app["exec_mode"] = .string("fork")
            app["execute_command"] = nil
        }
        var shellCommand: String?
        if case .string(let script)? = app["script"], script.contains(" ") {
            // `pm2 start "npm run start"`: PM2 runs a command with spaces through bash -c.
            shellCommand = script
            app["script"] = .string("bash")
            app["args"] = .array([.string("-c"), .string(script)])
        }
        if JS.isTruthy(app["time"]) { app["log_date_format"] = .string("YYYY-MM-DDTHH:mm:ss") }
        for key in ["uid", "gid", "user"] where JS.isTruthy(app[key]) {
            error(
                key,
                "Ferry runs every app as the agent's own user (PM2 switches users only when it runs as root): remove it and run the agent as the user the app should run as"
            )
        }
        if let automation = app["automation"], Self.looselyEqualsFalse(automation) { app["pmx"] = .bool(false) }
        if JS.isTruthy(app["disable_trace"]) {
            app["trace"] = .bool(false)
            app["disable_trace"] = nil
        }
        if case .string(let text)? = app["instances"] {
            if text == "max" {
                app["instances"] = .integer(0)
            } else {
                let parsed = JS.parseInt(text).map { Int64(exactly: $0.rounded(.towardZero)) ?? 0 } ?? 0
                if JS.parseInt(text) == nil {
                    warning("instances", "\"\(text)\" is not a number: PM2 reads it as 0, one instance per CPU, and so does Ferry")
                }
                app["instances"] = .integer(parsed)
            }
        }
        if app["exec_mode"] != .string("cluster_mode"), !JS.isTruthy(app["instances"]), app["merge_logs"] == nil {
            app["merge_logs"] = .bool(true)
        }
        if JS.isTruthy(app["cron_restart"]) { checkCron(app["cron_restart"]) }

        // Config.validateJSON: aliases, types, coercions, defaults; unknown options are dropped. An alias is read while
        // the value so far is falsy (PM2's `conf[key] || (conf[key] = json[alias])`), so `max_restarts: 0` falls back
        // to PM2's default exactly as in PM2.
        let json = app
        var options: [String: JSONValue] = [:]
        var writtenAs: [String: String] = [:]
        for option in PM2Schema.options {
            var value = json[option.key]
            var source = option.key
            for alias in option.aliases where !JS.isTruthy(value) {
                value = json[alias]
                source = alias
            }
            guard let value, value != .null else { continue }
            writtenAs[option.key] = source
            if let valid = validate(option, value, writtenAs: source) { options[option.key] = valid }
        }
        if case .string(let name)? = options["name"] { self.name = name }
        let known = Set(PM2Schema.keyForName.keys).union(["cmd", "command"])
        for key in json.keys.sorted() where !known.contains(key) {
            if PM2Schema.isEnvironmentBlock(key) {
                if let block = json[key], block != .null, !(block.isObject || block.isString) {
                    error(key, "must be an object of environment variables, got \(block.typeName) (PM2 fails on it)")
                }
                continue
            }
            warning(key, "not a PM2 option: PM2 ignores it, and so does Ferry\(Self.suggestion(for: key).map { " (did you mean \($0)?)" } ?? "")")
        }
        // merge_logs is PM2's default for fork apps: kept only when the file sets it.
        if value.objectKeys.isDisjoint(with: ["merge_logs", "combine_logs", "mergeLogs"]) { options["merge_logs"] = nil }

        // API._startJson: the name as PM2 keeps it.
        guard case .string(var name)? = options["name"] else {
            if options["script"] == nil {
                error("script", "required: the file or program the app runs (PM2: \"No script path - aborting\")")
            } else {
                error("name", "required when the script is given as exec: PM2 derives the name from script only, and fails without one")
            }
            return nil
        }
        if options["append_env_to_name"] == .bool(true), let environment = configuration.environmentName { name += "-" + environment }
        self.name = name
        if let problem = PM2App.publishNameProblem(name) { error("name", problem) }
        if !configuration.selectedNames.isEmpty, !configuration.selectedNames.contains(name) { return nil }
        guard case .string(let script)? = options["script"] else {
            error("script", "required: the file or program the app runs (PM2: \"No script path - aborting\")")
            return nil
        }

        // Common.prepareAppConf: cwd, script on disk or on PATH, env, interpreter, exec mode; log paths are Ferry's.
        var release: [String: JSONValue] = ["name": .string(name)]
        let cwd = relativeCwd(options["cwd"])
        if let cwd, !cwd.isEmpty { release["cwd"] = .string(cwd) }
        // prepareAppConf writes PORT and PYTHONUNBUFFERED into `env`; mergeEnvironmentVariables then assigns the deploy
        // block's env and `env_<name>` over it (both win over them).
        let (ownEnvironment, overrides) = mergedEnvironment(options, blocks: json)
        var environment = ownEnvironment
        if let port = options["port"], JS.isTruthy(port) { environment["PORT"] = JS.string(port) }
        // A cwd that is not in the release has been reported; the script cannot be looked up under it.
        guard let cwd, let target = resolveScript(script, cwd: cwd, shellCommand: shellCommand) else { return nil }
        let interpreter = resolveInterpreter(options["exec_interpreter"], target: target)
        if let interpreter, interpreter.contains("python") { environment["PYTHONUNBUFFERED"] = "1" }
        environment.merge(overrides) { _, override in override }
        switch target {
        case .release(let relative, _):
            release["script"] = .string(relative)
        case .program(let program, _):
            release["script"] = .string(program)
            release["script_source"] = .string("path")
        }
        if let interpreter { release["interpreter"] = .string(interpreter) }
        var instances: Int64?
        if let count = options["instances"].flatMap({ JS.number($0) }) {
            if abs(count) > 1024 {
                error(writtenAs["instances"] ?? "instances", "\(JavaScriptNumber.text(of: count)) is more instances than Ferry runs (at most 1024)")
            } else {
                instances = Int64(count.rounded(.towardZero))
                release["instances"] = .integer(instances ?? 1)
            }
        }
        let mode: ExecMode
        if case .string(let text)? = options["exec_mode"], let explicit = ExecMode(pm2Value: text) {
            mode = explicit
        } else {
            mode = PM2Interpreter.defaultExecMode(instances: instances, interpreter: interpreter ?? "none")
        }
        release["exec_mode"] = .string(mode.rawValue)
        for key in ["args", "node_args"] {
            // A number or a boolean is passed as JavaScript writes it: PM2 hands the array to spawn, and real PM2 7.0.3
            // started `args: ['--port', 3000, true]` as `--port 3000 true` (fork mode). Anything else is refused below.
            guard case .array(let items)? = options[key], !items.isEmpty else { continue }
            release[key] = .array(
                items.map { item in
                    switch item {
                    case .integer, .number, .bool: .string(JS.string(item))
                    default: item
                    }
                }
            )
        }
        if !environment.isEmpty { release["env"] = .object(environment.mapValues(JSONValue.string)) }
        for key in EcosystemNormalizer.passedThrough.sorted() {
            guard let value = options[key] else { continue }
            release[key] = value
        }
        for key in EcosystemNormalizer.ownedByFerry.keys.sorted() where options[key] != nil {
            if key == "watch", options[key] == .bool(false) { continue }
            warning(writtenAs[key] ?? key, "dropped: \(EcosystemNormalizer.ownedByFerry[key] ?? "Ferry owns it")")
        }
        if options["autostart"] == .bool(false) {
            error(
                writtenAs["autostart"] ?? "autostart",
                "false would leave the app registered but stopped, which Ferry's health gate counts as a failed deploy: remove the app from the release instead"
            )
        }
        return problems.contains(where: { $0.severity == .error }) ? nil : .object(release)
    }

    // MARK: - validateJSON's _valid

    /// `Config._valid`: coerces `value` as PM2 does, or records the error PM2 would print and returns `nil`.
    private mutating func validate(_ option: PM2Schema.Option, _ value: JSONValue, writtenAs key: String) -> JSONValue? {
        var value = value
        var type = Self.type(of: value)
        // "Auto parse Number": anything but a boolean that Number() reads becomes parseFloat of it.
        if type != .boolean, option.types.contains(.number), JS.number(value) != nil {
            guard let parsed = JS.parseFloat(value) else {
                error(key, "PM2 reads \(JS.jsonString(value)) as NaN here, which silently turns the option off: write a number")
                return nil
            }
            value = Self.numberValue(parsed)
            type = .number
        }
        guard let type, option.types.contains(type) else {
            let expected = option.types.map(\.rawValue).joined(separator: " or ")
            error(key, "expected \(expected), got \(value.typeName) (PM2 refuses the file: Expect \"\(option.key)\" to be a typeof \(expected))")
            return nil
        }
        if type == .string, let pattern = option.pattern, case .string(let text) = value, !pattern.matches(text) {
            error(key, "\"\(text)\": \(pattern.description) (PM2 refuses the file)")
            return nil
        }
        if type == .number, let minimum = option.minimum, let number = JS.number(value), number < minimum {
            error(key, "the minimum is \(JavaScriptNumber.text(of: minimum)), got \(JavaScriptNumber.text(of: number)) (PM2 refuses the file)")
            return nil
        }
        if option.types.count > 1, type != option.types[0], type == .string, option.types[0] == .array, case .string(let text) = value {
            value = .array(PM2Arguments.split(text).map(JSONValue.string))
        }
        if let extended = option.extendedType, case .string(let text) = value {
            if text.count >= 2 {
                let units: [Character: Double] =
                    extended == .sbyte ? ["G": 1_073_741_824, "M": 1_048_576, "K": 1024] : ["h": 3_600_000, "m": 60_000, "s": 1000]
                guard let last = text.last, let factor = units[last], let number = JS.parseFloat(.string(String(text.dropLast()))) else {
                    error(
                        key,
                        "PM2 reads \"\(text)\" as NaN (a string needs a unit: \(extended == .sbyte ? "K, M or G" : "s, m or h")), which silently turns the option off: write \(text) as a number, or with a unit"
                    )
                    return nil
                }
                value = Self.numberValue(number * factor)
            } else if let number = JS.number(value) {
                value = Self.numberValue(number)
            }
        }
        return value
    }

    private static func type(of value: JSONValue) -> PM2Schema.ValueType? {
        switch value {
        case .null: nil
        case .bool: .boolean
        case .integer, .number: .number
        case .string: .string
        case .array: .array
        case .object: .object
        }
    }

    private static func numberValue(_ number: Double) -> JSONValue {
        if number == number.rounded(), abs(number) < 9.0e15 { return .integer(Int64(number)) }
        return .number(number)
    }

    // MARK: - prepareAppConf

    /// Where the script is: a file of the release (path relative to the release root, with its entry) or a program.
    private enum ScriptTarget {
        case release(String, ArtifactTree.Entry?)
        case program(String, head: [UInt8]?)
    }

    /// `cwd` relative to the release root (`""` for the root), or `nil` after an error.
    private mutating func relativeCwd(_ value: JSONValue?) -> String? {
        guard case .string(let text)? = value else { return "" }
        var path = text
        if path.hasPrefix("~") {
            error("cwd", "\(text) is in a home directory: Ferry runs every app from its release tree; make cwd relative to the release root")
            return nil
        }
        if path.hasPrefix("/") {
            let root = configuration.releaseRoot.hasSuffix("/") ? String(configuration.releaseRoot.dropLast()) : configuration.releaseRoot
            guard path == root || path.hasPrefix(root + "/") else {
                error(
                    "cwd",
                    "\(text) is outside the release (\(root)): Ferry runs every app from its release tree; make cwd relative to the release root, the ecosystem file's directory"
                )
                return nil
            }
            path = String(path.dropFirst(root.count))
        }
        guard let normalised = Self.lexicallyNormalised(path) else {
            error("cwd", "\(text) leaves the release tree (..): make it a directory inside the release")
            return nil
        }
        if let artifact = configuration.artifact, !normalised.isEmpty {
            guard let found = artifact.resolve(normalised), found.entry.kind == .directory else {
                error("cwd", "\(text) is not a directory in the artifact")
                return nil
            }
        }
        return normalised
    }

    /// `a/./b/../c` → `a/c`; `nil` when it climbs above the root.
    static func lexicallyNormalised(_ path: String) -> String? {
        var parts: [Substring] = []
        for part in path.split(separator: "/") {
            switch part {
            case ".": continue
            case "..":
                guard !parts.isEmpty else { return nil }
                parts.removeLast()
            default: parts.append(part)
            }
        }
        return parts.joined(separator: "/")
    }

    /// PM2's script lookup: `path.resolve(cwd, script)` if that exists, else `which(script)`, else "Script not found".
    private mutating func resolveScript(_ script: String, cwd: String, shellCommand: String?) -> ScriptTarget? {
        let key = "script"
        let root = configuration.releaseRoot.hasSuffix("/") ? String(configuration.releaseRoot.dropLast()) : configuration.releaseRoot
        var candidate: String?
        if script.hasPrefix("/") {
            if script.hasPrefix(root + "/") { candidate = Self.lexicallyNormalised(String(script.dropFirst(root.count + 1))) }
        } else {
            candidate = Self.lexicallyNormalised(cwd.isEmpty ? script : "\(cwd)/\(script)")
        }
        guard let artifact = configuration.artifact else {
            if let candidate, !candidate.isEmpty { return .release(candidate, nil) }
            error(key, "\(script) must be a file inside the release")
            return nil
        }
        if let candidate, !candidate.isEmpty, let found = artifact.resolve(candidate) {
            guard found.entry.kind == .file else {
                let what = found.entry.kind == .directory ? "a directory" : "not a regular file"
                error(key, "\(candidate) is \(what) in the artifact: the script must be a regular file")
                return nil
            }
            return .release(found.path, found.entry)
        }
        if let candidate, artifact.entries[candidate] != nil {
            error(key, "\(candidate) is a symbolic link that leaves the release tree or loops")
            return nil
        }
        // Not in the release: PM2 looks it up on PATH (`npm`, `bash`, an absolute path).
        if let program = configuration.which(script) {
            let what = shellCommand.map { "\"\($0)\" runs through bash -c (a command with spaces); bash" } ?? script
            warning(key, "\(what) is not a file of the release but a program on PATH (here \(program)): every instance needs it too")
            return .program(script, head: configuration.head(program))
        }
        let looked = candidate.map { "\($0) is not in the artifact" } ?? "\(script) is outside the release"
        error(key, "\(looked), and no program \(script) is on PATH (PM2: Script not found)")
        return nil
    }

    /// PM2's `resolveInterpreter`, then the check that what runs the script can run it.
    private mutating func resolveInterpreter(_ explicit: JSONValue?, target: ScriptTarget) -> String? {
        let head: [UInt8]?
        let scriptPath: String
        switch target {
        case .release(let path, let entry):
            head = entry?.head
            scriptPath = path
        case .program(let program, let programHead):
            head = programHead
            scriptPath = configuration.which(program) ?? program
        }
        let interpreterKey = "interpreter"
        var interpreter: String
        var implicit = false
        if case .string(let given)? = explicit, !given.isEmpty {
            interpreter = given
            if given.contains("node@") {
                error(interpreterKey, "\(given): Ferry does not install Node versions through nvm; name the node binary the instances have")
                return nil
            }
            if given.contains("/"), !given.hasPrefix("/") {
                guard let normalised = Self.lexicallyNormalised(given),
                    configuration.artifact.map({ $0.resolve(normalised)?.entry.kind == .file }) ?? true
                else {
                    error(interpreterKey, "\(given) is not a file in the artifact (a relative interpreter is taken from the release root)")
                    return nil
                }
                interpreter = normalised
            }
        } else {
            interpreter = PM2Interpreter.implicit(forScript: scriptPath, head: head)
            implicit = true
        }
        guard case .release(let path, let entry?) = target else { return interpreter }
        if interpreter == "none" {
            if !entry.isExecutable {
                error(
                    "script",
                    "\(path) runs directly (interpreter none) but has no executable bit in the artifact: chmod +x it before packing, or set an interpreter"
                )
            } else if !PM2Interpreter.isBinary(entry.head), PM2Interpreter.shebangProgram(entry.head) == nil {
                error("script", "\(path) runs directly (interpreter none) but is a text file without a #! line: set an interpreter")
            }
        } else if implicit, interpreter == "node", let program = PM2Interpreter.shebangProgram(entry.head), !PM2Interpreter.isNodeLike(program) {
            error(
                "script",
                "PM2 runs \(path) with node (it has no extension PM2 knows), but its #! line asks for \(program): set interpreter: '\(program)', or 'none' to run it by its #! line"
            )
        }
        return interpreter
    }

    /// `mergeEnvironmentVariables`, every value a string: the app's `env` (objects as JSON), and what is assigned over
    /// it, `deploy.<env>.env` < `env_<env>`. PM2's comment calls the deploy block the "least priority", but the copy
    /// it assigns into is the app's `env` object itself (`Object.assign(new_conf, app)` is shallow), and the `env`
    /// assigned after it is that same object: a deploy value wins over the app's `env`, and `env_<env>` over both.
    private mutating func mergedEnvironment(
        _ options: [String: JSONValue],
        blocks: [String: JSONValue]
    ) -> (own: [String: String], overrides: [String: String]) {
        var result: [String: String] = [:]
        func add(_ block: JSONValue?, from key: String, stringifyObjects: Bool) {
            guard let block else { return }
            guard case .object(let fields) = block else {
                if block.isString {
                    error(key, "must be an object of environment variables: PM2 would spread the characters of the string")
                }
                return
            }
            for (name, value) in fields {
                switch value {
                case .object, .array:
                    if stringifyObjects {
                        result[name] = JS.jsonString(value)
                    } else if case .array = value {
                        result[name] = JS.string(value)
                    } else {
                        error("\(key).\(name)", "is an object: PM2 would pass the text [object Object]; write a string")
                    }
                case .null:
                    result[name] = "null"
                default:
                    result[name] = JS.string(value)
                }
            }
        }
        add(options["env"], from: "env", stringifyObjects: true)
        let own = result
        result = [:]
        if let environment = configuration.environmentName {
            if case .object(let deployFields)? = deploy, let target = deployFields[environment] {
                if let block = target.object?["env"], block != .null { foundEnvironmentBlock = true }
                add(target.object?["env"], from: "deploy.\(environment).env", stringifyObjects: false)
            }
        }
        if let environment = configuration.environmentName, let block = blocks["env_\(environment)"], block != .null {
            foundEnvironmentBlock = true
            add(block, from: "env_\(environment)", stringifyObjects: false)
        }
        return (own, result)
    }

    // MARK: - Helpers

    /// `renderApplicationName`: the script's base name without its last extension.
    static func applicationName(fromScript script: String) -> String {
        var base = script
        while base.count > 1, base.hasSuffix("/") { base.removeLast() }
        if let slash = base.lastIndex(of: "/") { base = String(base[base.index(after: slash)...]) }
        if let dot = base.lastIndex(of: "."), dot != base.startIndex { base = String(base[..<dot]) }
        return base
    }

    /// JavaScript `value == true`.
    private static func looselyEqualsTrue(_ value: JSONValue?) -> Bool {
        guard let value, value != .null else { return false }
        if case .bool(let flag) = value { return flag }
        return JS.number(value) == 1
    }

    /// JavaScript `value == false`.
    private static func looselyEqualsFalse(_ value: JSONValue) -> Bool {
        if case .bool(let flag) = value { return !flag }
        if value == .null { return false }
        if case .object = value { return false }
        return JS.number(value) == 0
    }

    /// Croner's patterns, checked the way PM2's croner 4.1.97 parses them (`CronPattern`): one pattern it refuses makes
    /// PM2 refuse the service's whole ecosystem file.
    private mutating func checkCron(_ value: JSONValue?) {
        switch value {
        case .string(let text)?:
            if text == "0" { return }
            if let problem = CronPattern.problem(in: text) {
                error("cron_restart", "\"\(text)\" is not a cron pattern PM2 accepts (\(problem)): use 5 or 6 fields like \"0 3 * * *\"")
                return
            }
        case .integer(0)?, .number(0)?, nil:
            return
        default:
            error("cron_restart", "must be a cron pattern like \"0 3 * * *\" (PM2: Cron pattern error)")
        }
    }

    /// The option name closest to a misspelt one, when one is close.
    private static func suggestion(for key: String) -> String? {
        let lower = key.lowercased()
        var best: (String, Int)?
        for candidate in PM2Schema.keyForName.keys {
            let distance = editDistance(lower, candidate.lowercased())
            if distance <= 2, best.map({ distance < $0.1 }) ?? true { best = (candidate, distance) }
        }
        return best?.0
    }

    private static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a)
        let b = Array(b)
        guard !a.isEmpty else { return b.count }
        guard !b.isEmpty else { return a.count }
        var previous = Array(0...b.count)
        for i in 1...a.count {
            var current = [i] + Array(repeating: 0, count: b.count)
            for j in 1...b.count {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            previous = current
        }
        return previous[b.count]
    }
}

extension JSONValue {
    fileprivate var objectKeys: Set<String> {
        if case .object(let fields) = self { return Set(fields.keys) }
        return []
    }

    fileprivate var isObject: Bool {
        if case .object = self { return true }
        return false
    }

    fileprivate var isString: Bool {
        if case .string = self { return true }
        return false
    }
}
