/// One PM2 app of a release, in PM2's own ecosystem vocabulary (`exec_mode`, `max_memory_restart`, ...).
///
/// `publish` writes the normalised form (`EcosystemNormalizer` on the operator side: every decision `pm2 start` would
/// make is made there and written down), and agents validate it strictly here: known options only, each with its type.
package struct PM2App: Sendable, Equatable {
    package var name: String
    /// The entry point: a path relative to the release root, or, when `isProgram`, a program looked up on the
    /// instance's `PATH` (`npm`) or an absolute path outside the release (`/usr/bin/python3`).
    package var script: String
    /// Every other option, validated against `PM2App.options`.
    package var options: [String: JSONValue]

    package init(name: String, script: String, options: [String: JSONValue] = [:]) {
        self.name = name
        self.script = script
        self.options = options
    }

    /// Whether `script` names a program on the instance (`script_source: "path"`) rather than a file of the release.
    package var isProgram: Bool { options["script_source"] == .string("path") }

    /// The working directory relative to the release root (`""`: the root).
    package var cwd: String {
        if case .string(let text)? = options["cwd"] { return text }
        return ""
    }

    /// The kinds of values PM2 options take.
    package enum OptionKind: Sendable {
        case string
        case bool
        case integer(ClosedRange<Int64>)
        /// A string, or a list of strings (`args`, `node_args`).
        case stringOrList
        /// A number, `"max"`, or a negative number meaning "CPUs minus n".
        case instances
        /// `fork`, `cluster`, `fork_mode` or `cluster_mode`.
        case execMode
        case environment
        /// Bytes as a number, or a string like `300M`, `1G`, `512K`.
        case memory
        /// Milliseconds as a number, or a string like `1s`, `500ms`, `2m`.
        case duration
        /// A list of integers, or one integer (`stop_exit_codes`).
        case integerList
        /// A boolean, or a string (`pmx`).
        case boolOrString
        /// A boolean, a string, or a list of strings (`filter_env`).
        case boolOrList
        /// A cron pattern, or `0` (off).
        case cron
        /// A path relative to the release root (`cwd`).
        case relativePath
        /// Where `script` is: `path` for a program on the instance (`release`, the default, for a file of the release).
        case scriptSource
        /// Any JSON object, bounded in size (`io`).
        case object
    }

    /// The PM2 options a release may carry (PM2's names). Anything else is refused as unknown.
    package static let options: [String: OptionKind] = [
        "args": .stringOrList,
        "interpreter": .string,
        "interpreter_args": .stringOrList,
        "node_args": .stringOrList,
        "instances": .instances,
        "exec_mode": .execMode,
        "env": .environment,
        "max_memory_restart": .memory,
        "autorestart": .bool,
        "max_restarts": .integer(0...1_000_000),
        "min_uptime": .duration,
        "restart_delay": .integer(0...86_400_000),
        "exp_backoff_restart_delay": .integer(0...86_400_000),
        "kill_timeout": .integer(0...Self.maximumKillTimeoutMilliseconds),
        "kill_retry_time": .integer(0...3_600_000),
        "listen_timeout": .integer(0...3_600_000),
        "wait_ready": .bool,
        "shutdown_with_message": .bool,
        "cron_restart": .cron,
        "merge_logs": .bool,
        "time": .bool,
        "log_date_format": .string,
        "log_type": .string,
        "disable_logs": .bool,
        "source_map_support": .bool,
        "disable_source_map_support": .bool,
        "instance_var": .string,
        "increment_var": .string,
        "watch": .bool,
        "stop_exit_codes": .integerList,
        "treekill": .bool,
        "vizion": .bool,
        "automation": .bool,
        "pmx": .boolOrString,
        "force": .bool,
        "filter_env": .boolOrList,
        "disable_trace": .bool,
        "trace": .bool,
        "v8": .bool,
        "event_loop_inspector": .bool,
        "deep_monitoring": .bool,
        "windowsHide": .bool,
        "write": .bool,
        "post_update": .stringOrList,
        "io": .object,
        "cwd": .relativePath,
        "script_source": .scriptSource,
    ]

    /// Options Ferry sets itself on the instance; an operator giving one is an error that says so.
    package static let ferryOwned: Set<String> = [
        "namespace", "out_file", "error_file", "err_file", "log_file", "log", "output", "error", "pid_file", "pid",
    ]

    /// Validates one app of a release; `path` names it in errors (`pm2.apps[0]`).
    package init(json: JSONValue, path: String) throws(DocumentError) {
        var reader = try ObjectReader(json, path: path)
        let name = try reader.required("name", Field.string(maxLength: Self.maximumNameBytes))
        if let problem = Self.nameProblem(name) {
            throw .invalidValue(field: reader.path(of: "name"), reason: problem)
        }
        self.name = name
        let isProgram = reader.fields["script_source"] == .string("path")
        self.script = try reader.required("script") { (value, path) throws(DocumentError) in
            isProgram ? try Self.program(value, path) : try Self.relativePath(value, path)
        }
        var options: [String: JSONValue] = [:]
        for key in reader.fields.keys.sorted() where key != "name" && key != "script" {
            let fieldPath = reader.path(of: key)
            if Self.ferryOwned.contains(key) { throw .ownedByFerry(field: fieldPath) }
            if key.hasPrefix("env_") {
                throw .invalidValue(
                    field: fieldPath,
                    reason: "env_<name> blocks are merged at publish time (publish --env-name <name>); a release carries the merged env only"
                )
            }
            guard let kind = Self.options[key], let value = reader.fields[key] else { throw .unknownField(fieldPath) }
            reader.consume(key)
            if value == .null { continue }
            try Self.validate(value, as: kind, path: fieldPath)
            options[key] = value
        }
        try reader.rejectUnknownFields()
        if let interpreter = options["interpreter"], case .string(let text) = interpreter {
            guard !text.split(separator: "/").contains("..") else {
                throw .invalidValue(field: reader.path(of: "interpreter"), reason: "must not contain ..")
            }
        }
        self.options = options
    }

    /// Most instances a release may ask for (`instances`; `-n`, "every CPU but n", down to its negative). Every
    /// process manager runs this many, the builtin supervisor included.
    package static let maximumInstances = 1024
    /// Longest `kill_timeout` a release may give, in milliseconds (one hour). Every process manager waits this long.
    package static let maximumKillTimeoutMilliseconds: Int64 = 3_600_000

    /// A `kill_timeout` or `listen_timeout` as a process manager waits for it: held to 0 through
    /// `maximumKillTimeoutMilliseconds` (numbers beyond what a release may give count as that limit).
    package static func waitedTimeout(milliseconds: Int64) -> Duration {
        .milliseconds(min(max(0, milliseconds), maximumKillTimeoutMilliseconds))
    }

    /// The bound of a process manager's call that stops and starts `instances` processes of an app one after another:
    /// `base`, plus `perInstance` (the longest one instance's stop and start can take) for each, the count held to
    /// `maximumInstances` and one more (the surplus a smaller count stops).
    package static func callTimeout(base: Duration, perInstance: Duration, instances: Int) -> Duration {
        base + perInstance * min(max(0, instances), maximumInstances + 1)
    }

    /// Longest app name, in UTF-8 bytes.
    package static let maximumNameBytes = 128

    /// What PM2's commands take for a config file anywhere in an argument (`Common.isConfigFile`: `pm2 delete feed.json`
    /// loads `feed.json` as an ecosystem file and deletes the apps it lists, instead of the app `feed.json`).
    package static let configFileMarkers = [".json", ".yml", ".yaml", ".config.js", ".config.cjs", ".config.mjs"]

    /// Fields of PM2's process entry (`pm2_env`) beyond the options: PM2 puts an entry named after the app into its env
    /// (`NPM.getModuleConf`) and copies the env over the entry (`God.executeApp`), so an app named `namespace` runs in
    /// the namespace `{}`, one named `pm_id` loses its id, one named `env` its environment.
    static let processEntryFields: Set<String> = [
        "name", "namespace", "pm_id", "status", "pm_uptime", "restart_time", "unstable_restarts", "created_at", "exit_code",
        "pm_exec_path", "pm_cwd", "pm_out_log_path", "pm_err_log_path", "pm_pid_path", "pm_log_path", "unique_id", "version",
        "node_version", "versioning", "vizion_running", "km_link", "username", "axm_actions", "axm_monitor", "axm_options",
        "axm_dynamic", "prev_restart_delay", "restart_delay", "script", "cwd", "env", "PM2_HOME", "NODE_APP_INSTANCE",
    ]

    /// Environment variable names PM2 takes for fields of its process entry: `God.executeApp` copies an app's env over
    /// its entry (`pm2_env`), so `name=x` in the env renames the app `x` in PM2's table (Ferry then finds its app gone
    /// and starts it again), `namespace=x` moves it out of Ferry's namespace, `cwd=/` changes where it runs. Every option
    /// and field PM2 keeps there, lower case as PM2 names them; `NODE_APP_INSTANCE` is an ordinary variable of the
    /// app's env. `PM2_HOME` is not, though PM2 only hands it on: the app's value replaces the home of the daemon that
    /// runs it, so the app's own pm2 calls reach another daemon, and a process of it that a dead daemon left behind is
    /// not found by its home (`PM2Leftovers`) and keeps its port.
    /// (`status`, `pm_uptime` and the `axm_*` fields PM2 sets again right after the copy, so they do no harm.)
    package static let processEntryEnvKeys: Set<String> = processEntryFields.subtracting(["NODE_APP_INSTANCE"])
        .union(options.keys).union(ferryOwned)
        .union(["exec_interpreter", "autostart", "interpreterArgs", "script_args", "pm_pid_path", "pm_log_path", "windowsHide"])
        .subtracting(["status", "pm_uptime", "axm_actions", "axm_monitor", "axm_options", "axm_dynamic"])

    /// The part of `processEntryEnvKeys` an agent refuses to start an app with (an instance env file, a release signed
    /// before publish refused them): those that take the app out of Ferry's reach or change what runs and where. The
    /// app would run renamed (Ferry then starting it again at every pass), in another namespace, from another script or
    /// directory, or with another instance count; refused, it is not started until the variable is renamed. The others
    /// are refused at publish only: an app that ran with one before keeps running after an upgrade of the agent.
    package static let envKeysMovingTheApp: Set<String> = [
        "name", "namespace", "pm_id", "script", "pm_exec_path", "cwd", "pm_cwd", "exec_mode", "instances", "interpreter",
        "exec_interpreter", "env", "pm_out_log_path", "pm_err_log_path", "pm_pid_path", "pm_log_path", "PM2_HOME",
    ]

    /// Why `key` cannot be a variable of an app's env, or `nil` when it can (`processEntryEnvKeys`).
    package static func envKeyProblem(_ key: String) -> String? {
        guard processEntryEnvKeys.contains(key) else { return nil }
        if key == "PM2_HOME" {
            return "\"PM2_HOME\" is the home of the PM2 daemon that runs the app (the agent's): set in its env, the app's own pm2 "
                + "calls reach another daemon, and a process of it a dead daemon left behind is not found and keeps its port"
        }
        return
            "\"\(key)\" is a field of PM2's process entry, which PM2 overwrites with the env's value (an env name=x renames the app): rename the variable"
    }

    /// The options naming a variable PM2 sets for each instance (`God.injectVariables`): on its process entry
    /// (`pm2_env`), not in the app's env, which is copied over the entry after.
    package static let injectedVariableOptions = ["instance_var", "increment_var"]

    /// Why `option` (`instance_var`, `increment_var`) cannot name `variable`, or `nil` when it can: PM2 sets that
    /// variable on its process entry, so `instance_var: "namespace"` moves every instance to namespace 0 (out of Ferry's
    /// reach: it can neither see nor delete them) and `instance_var: "pm_id"` makes PM2 overwrite another app's entry.
    package static func injectedVariableProblem(option: String, variable: String) -> String? {
        guard processEntryEnvKeys.contains(variable) else { return nil }
        return "\(option) \"\(variable)\" names a field of PM2's process entry, which PM2 sets to each instance's number (instance_var: "
            + "\"namespace\" moves the app out of its namespace): name an env variable, such as NODE_APP_INSTANCE or PORT"
    }

    /// Why `name` cannot be an app name, or `nil` when it can. PM2 accepts any string; Ferry refuses only the names
    /// PM2's own commands would misread when the agent addresses the app: `all`, a `/regex/`, a leading `-` (an
    /// option), control characters, and surrounding spaces. Agents and the builtin supervisor apply these rules to every
    /// release; `publishNameProblem` adds the rules new releases meet.
    package static func nameProblem(_ name: String) -> String? {
        if name.isEmpty { return "must not be empty" }
        if name.utf8.count > maximumNameBytes { return "\"\(name.prefix(40))…\" is longer than \(maximumNameBytes) bytes" }
        if name.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f }) { return "must not contain control characters" }
        if name == "all" { return "\"all\" means every app to PM2 (pm2 delete all): choose another name" }
        if name.hasPrefix("-") { return "\"\(name)\" starts with -, which the pm2 command line reads as an option" }
        if name.count >= 2, name.hasPrefix("/"), name.hasSuffix("/") {
            return "\"\(name)\" is read by PM2 as a regular expression over every app's name"
        }
        if name.first?.isWhitespace == true || name.last?.isWhitespace == true { return "\"\(name)\" must not start or end with a space" }
        return nil
    }

    /// `nameProblem`, plus what a new release may not name an app (checked at publish only, so a release signed
    /// before these rules, running or kept to roll back to, still parses on an upgraded agent): a name holding a config
    /// file's extension (`.json`, `.yml`, …), or the name of a field of PM2's process entry or of an option.
    package static func publishNameProblem(_ name: String) -> String? {
        if let problem = nameProblem(name) { return problem }
        if let marker = configFileMarkers.first(where: { name.contains($0) }) {
            return "\"\(name)\" holds \"\(marker)\", which PM2's commands read as a config file to load (pm2 delete \(name))"
        }
        if processEntryFields.contains(name) || options[name] != nil {
            return "\"\(name)\" is a field of PM2's process entry, which PM2 overwrites with the app's name: choose another name"
        }
        return nil
    }

    /// Whether `name` is a valid app name (see `nameProblem`).
    package static func isValidName(_ name: String) -> Bool { nameProblem(name) == nil }

    /// The name PM2 gives an app's log files (`$PM2_HOME/logs/<logName>-out.log`): every character but ASCII letters,
    /// digits, `.`, `-` and `\` made a dash, one per UTF-16 unit as JavaScript's `replace` counts them (lib/Common.js,
    /// `prepareAppConf`: `/[^a-zA-Z0-9\\.\\-]/g`). Two names with the same log name share files.
    package static func logName(_ name: String) -> String {
        var result = ""
        for scalar in name.unicodeScalars {
            let kept =
                scalar.isASCII && (scalar.properties.isAlphabetic || ("0"..."9").contains(scalar) || scalar == "." || scalar == "-" || scalar == "\\")
            result += kept ? String(scalar) : String(repeating: "-", count: UTF16.width(scalar))
        }
        return result
    }

    /// `name` made safe for a file name: PM2's rule (`[^a-zA-Z0-9.-]` → `-`, as for its log files), plus, whenever that
    /// changed anything, `-` and 8 hex digits of the name's SHA-256, so two names never share a file.
    package static func fileSafeName(_ name: String) -> String {
        var safe = String(
            name.unicodeScalars.map { scalar -> Character in
                let isSafe =
                    scalar.isASCII
                    && (("a"..."z").contains(scalar) || ("A"..."Z").contains(scalar) || ("0"..."9").contains(scalar) || scalar == "."
                        || scalar == "-")
                return isSafe ? Character(scalar) : "-"
            }
        )
        // No hidden files, no `.` or `..`: leading dots become dashes too.
        let dots = safe.prefix { $0 == "." }.count
        safe = String(repeating: "-", count: dots) + safe.dropFirst(dots)
        guard safe != name else { return safe }
        return "\(safe.prefix(80))-\(SHA256.hash(Array(name.utf8)).hex.prefix(8))"
    }

    /// A path relative to the release root, without `..` components.
    package static func relativePath(_ value: JSONValue, _ path: String) throws(DocumentError) -> String {
        let text = try Field.string(maxLength: Limits.pathLength)(value, path)
        guard !text.isEmpty else { throw .invalidValue(field: path, reason: "must not be empty") }
        guard !text.hasPrefix("/") else {
            throw .invalidValue(field: path, reason: "must be relative to the release root, not absolute")
        }
        guard !text.split(separator: "/", omittingEmptySubsequences: false).contains("..") else {
            throw .invalidValue(field: path, reason: "must not contain .. (it would leave the release tree)")
        }
        return text
    }

    /// A program on the instance: a name looked up on `PATH` (no `/`), or an absolute path without `..`.
    package static func program(_ value: JSONValue, _ path: String) throws(DocumentError) -> String {
        let text = try Field.string(maxLength: Limits.pathLength)(value, path)
        guard !text.isEmpty else { throw .invalidValue(field: path, reason: "must not be empty") }
        guard !text.contains("/") || text.hasPrefix("/") else {
            throw .invalidValue(field: path, reason: "a program is a name on PATH or an absolute path (a relative path is a file of the release)")
        }
        guard !text.split(separator: "/").contains("..") else { throw .invalidValue(field: path, reason: "must not contain ..") }
        return text
    }

    static func validate(_ value: JSONValue, as kind: OptionKind, path: String) throws(DocumentError) {
        switch kind {
        case .string:
            _ = try Field.string(maxLength: Limits.shortString)(value, path)
        case .bool:
            _ = try Field.bool(value, path)
        case .integer(let range):
            _ = try Field.integer(in: range)(value, path)
        case .stringOrList:
            if case .array(let items) = value {
                guard items.count <= Limits.listItems else { throw .tooMany(field: path, limit: Limits.listItems, actual: items.count) }
                for (index, item) in items.enumerated() {
                    _ = try Field.string(maxLength: Limits.pathLength)(item, "\(path)[\(index)]")
                }
            } else {
                guard case .string(let text) = value else {
                    throw .wrongType(field: path, expected: "string or array of strings", got: value.typeName)
                }
                guard text.utf8.count <= Limits.pathLength * 4 else {
                    throw .tooLarge(field: path, limit: Limits.pathLength * 4, actual: text.utf8.count)
                }
            }
        case .instances:
            switch value {
            case .string(let text):
                guard text == "max" else { throw .invalidValue(field: path, reason: "must be a number or \"max\"") }
            case .integer, .number:
                _ = try Field.integer(in: -Int64(Self.maximumInstances)...Int64(Self.maximumInstances))(value, path)
            default:
                throw .wrongType(field: path, expected: "number or \"max\"", got: value.typeName)
            }
        case .execMode:
            let text = try Field.string(maxLength: 32)(value, path)
            guard ExecMode(pm2Value: text) != nil else {
                throw .invalidValue(field: path, reason: "must be fork, cluster, fork_mode or cluster_mode")
            }
        case .environment:
            _ = try Field.environment(value, path)
        case .memory:
            switch value {
            case .integer, .number:
                _ = try Field.integer(in: 1...ByteSize.maximum)(value, path)
            case .string(let text):
                _ = try ByteSize.bytes(text, field: path)
            default:
                throw .wrongType(field: path, expected: "number or string like 300M", got: value.typeName)
            }
        case .duration:
            switch value {
            case .integer, .number:
                _ = try Field.integer(in: 0...DurationText.maximumMilliseconds)(value, path)
            case .string(let text):
                _ = try DurationText.milliseconds(text, field: path)
            default:
                throw .wrongType(field: path, expected: "number or string like 1s", got: value.typeName)
            }
        case .integerList:
            if case .integer = value {
                _ = try Field.integer(in: 0...255)(value, path)
                return
            }
            guard case .array(let items) = value else { throw .wrongType(field: path, expected: "array of integers", got: value.typeName) }
            guard items.count <= Limits.listItems else { throw .tooMany(field: path, limit: Limits.listItems, actual: items.count) }
            for (index, item) in items.enumerated() { _ = try Field.integer(in: 0...255)(item, "\(path)[\(index)]") }
        case .boolOrString:
            if case .bool = value { return }
            _ = try Field.string(maxLength: Limits.shortString)(value, path)
        case .boolOrList:
            if case .bool = value { return }
            try validate(value, as: .stringOrList, path: path)
        case .cron:
            if case .integer(0) = value { return }
            let text = try Field.string(maxLength: 128)(value, path)
            guard !text.isEmpty else { throw .invalidValue(field: path, reason: "must be a cron pattern like \"0 3 * * *\"") }
            // PM2 refuses a whole ecosystem file for one pattern its croner refuses.
            if text != "0", let problem = CronPattern.problem(in: text) {
                throw .invalidValue(field: path, reason: "is not a cron pattern PM2 accepts (\(problem))")
            }
        case .relativePath:
            let text = try Field.string(maxLength: Limits.pathLength)(value, path)
            guard !text.hasPrefix("/"), !text.split(separator: "/").contains("..") else {
                throw .invalidValue(field: path, reason: "must be a directory relative to the release root, without ..")
            }
        case .scriptSource:
            guard value == .string("path") || value == .string("release") else {
                throw .invalidValue(field: path, reason: "must be \"path\" (a program on the instance) or \"release\" (a file of the release)")
            }
        case .object:
            guard case .object = value else { throw .wrongType(field: path, expected: "object", got: value.typeName) }
            let size = value.encoded().count
            guard size <= 16 * 1024 else { throw .tooLarge(field: path, limit: 16 * 1024, actual: size) }
        }
    }

    /// The app as a JSON object.
    package var json: JSONValue {
        var fields = options
        fields["name"] = .string(name)
        fields["script"] = .string(script)
        return .object(fields)
    }
}

/// PM2's two execution modes.
package enum ExecMode: String, Sendable, Equatable, Codable {
    case fork
    case cluster

    /// Reads `fork`, `cluster`, `fork_mode`, `cluster_mode`.
    package init?(pm2Value: String) {
        switch pm2Value {
        case "fork", "fork_mode": self = .fork
        case "cluster", "cluster_mode": self = .cluster
        default: return nil
        }
    }

    /// The form `pm2 jlist` prints (`fork_mode`, `cluster_mode`).
    package var pm2Name: String { "\(rawValue)_mode" }
}

/// Byte sizes written like PM2's `max_memory_restart` (`300M`, `1G`, `512K`, `1048576`).
package enum ByteSize {
    /// The largest size a release may give: 1 PiB.
    package static let maximum: Int64 = 1 << 50

    /// Bytes for `text`, or `nil` when it is not a size or does not fit in `Int64`.
    package static func parse(_ text: String) -> Int64? {
        guard case .value(let bytes) = read(text) else { return nil }
        return bytes
    }

    /// Bytes for `text` of the document field `field`, at most `maximum`. Throws `DocumentError.invalidValue` naming the
    /// field when `text` is not a size or is too large (an overflow included), never traps.
    package static func bytes(_ text: String, field: String, maximum: Int64 = ByteSize.maximum) throws(DocumentError) -> Int64 {
        switch read(text) {
        case .value(let bytes) where bytes <= maximum:
            return bytes
        case .value, .tooLarge:
            throw .invalidValue(field: field, reason: "\(CheckedNumber.shown(text)) is too large: at most \(maximum) bytes")
        case .invalid:
            throw .invalidValue(field: field, reason: "\(CheckedNumber.shown(text)) must be a number of bytes or like 300M, 1G, 512K")
        }
    }

    private static func read(_ text: String) -> CheckedNumber.Reading {
        guard let last = text.utf8.last else { return .invalid }
        let multiplier: Int64
        switch last {
        case UInt8(ascii: "K"), UInt8(ascii: "k"): multiplier = 1 << 10
        case UInt8(ascii: "M"), UInt8(ascii: "m"): multiplier = 1 << 20
        case UInt8(ascii: "G"), UInt8(ascii: "g"): multiplier = 1 << 30
        default: multiplier = 1
        }
        let digits = multiplier == 1 ? Substring(text) : Substring(text).dropLast()
        switch CheckedNumber.read(digits, multipliedBy: multiplier) {
        case .value(0): return .invalid
        case let reading: return reading
        }
    }
}

/// Durations written like PM2's `min_uptime` (`1000`, `500ms`, `1s`, `2m`, `1h`).
package enum DurationText {
    /// The longest duration a release may give: 24 hours, in milliseconds.
    package static let maximumMilliseconds: Int64 = 86_400_000

    /// Milliseconds for `text`, or `nil` when it is not a duration or does not fit in `Int64`.
    package static func milliseconds(_ text: String) -> Int64? {
        guard case .value(let milliseconds) = read(text) else { return nil }
        return milliseconds
    }

    /// Milliseconds for `text` of the document field `field`, at most `maximum`. Throws `DocumentError.invalidValue`
    /// naming the field when `text` is not a duration or is too long (an overflow included), never traps.
    package static func milliseconds(
        _ text: String,
        field: String,
        maximum: Int64 = DurationText.maximumMilliseconds
    ) throws(DocumentError) -> Int64 {
        switch read(text) {
        case .value(let milliseconds) where milliseconds <= maximum:
            return milliseconds
        case .value, .tooLarge:
            throw .invalidValue(field: field, reason: "\(CheckedNumber.shown(text)) is too long: at most \(maximum) ms")
        case .invalid:
            throw .invalidValue(field: field, reason: "\(CheckedNumber.shown(text)) must be milliseconds or like 500ms, 1s, 2m, 1h")
        }
    }

    private static func read(_ text: String) -> CheckedNumber.Reading {
        let suffixes: [(String, Int64)] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000)]
        for (suffix, factor) in suffixes where text.hasSuffix(suffix) {
            return CheckedNumber.read(Substring(text).dropLast(suffix.count), multipliedBy: factor)
        }
        return CheckedNumber.read(Substring(text), multipliedBy: 1)
    }
}

/// Decimal digits times a unit, with every step checked: an overflow is a result, not a trap.
private enum CheckedNumber {
    enum Reading: Equatable {
        /// The value (bytes or milliseconds).
        case value(Int64)
        /// Well-formed but over `Int64.max`.
        case tooLarge
        /// Not ASCII digits (a sign, a space, a fraction, nothing).
        case invalid
    }

    static func read(_ digits: Substring, multipliedBy unit: Int64) -> Reading {
        guard !digits.isEmpty else { return .invalid }
        var value: Int64 = 0
        var overflowed = false
        for byte in digits.utf8 {
            guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) else { return .invalid }
            let (shifted, overflow1) = value.multipliedReportingOverflow(by: 10)
            let (next, overflow2) = shifted.addingReportingOverflow(Int64(byte - UInt8(ascii: "0")))
            if overflow1 || overflow2 { overflowed = true } else { value = next }
        }
        if overflowed { return .tooLarge }
        let (result, overflow) = value.multipliedReportingOverflow(by: unit)
        return overflow ? .tooLarge : .value(result)
    }

    /// `text` quoted for an error message, cut when it is long.
    static func shown(_ text: String) -> String {
        text.count > 40 ? String(text.prefix(40)).debugDescription + "…" : text.debugDescription
    }
}
