import Shared

/// PM2 7.0.3's ecosystem schema (`lib/API/schema.json`) and the validation PM2 runs over it (`lib/tools/Config.js`
/// `validateJSON` / `_valid`), reproduced so an ecosystem file means to Ferry what it means to `pm2 start`.
///
/// `PM2SchemaTests` compares this table with the `schema.json` of the real PM2 the tests run, key by key.
enum PM2Schema {
    /// The JSON types PM2 names in `schema.json`.
    enum ValueType: String, Sendable, CaseIterable {
        case string, number, boolean, array, object
    }

    /// PM2's two custom string types: sizes (`300M`) and times (`2s`).
    enum ExtendedType: Sendable {
        case sbyte
        case stime
    }

    /// One option of the schema.
    struct Option: Sendable {
        var key: String
        /// Accepted types, in schema order (the first one decides whether a string is split into an array).
        var types: [ValueType]
        /// `alias` from schema.json, in schema order.
        var explicitAliases: [String] = []
        /// The value PM2 sets when the option is absent or null.
        var defaultValue: JSONValue? = nil
        /// `regex` a string value must match.
        var pattern: Pattern? = nil
        var minimum: Double? = nil
        var extendedType: ExtendedType? = nil
        var isRequired = false

        /// PM2's alias list (`Config.schema` getter): the explicit aliases, each inserted at the front, then the
        /// camelCase form of the key (`max_memory_restart` → `maxMemoryRestart`).
        var aliases: [String] {
            var list = [PM2Schema.camelCase(key)]
            for alias in explicitAliases { list.insert(alias, at: 0) }
            return list
        }
    }

    /// The three `regex` entries of schema.json, checked by hand rather than with a regex engine.
    enum Pattern: Sendable {
        /// `^\d+(G|M|K)?$`
        case size
        /// `^\d+(h|m|s)?$`
        case time
        /// `^(cluster|fork)(_mode)?$`
        case execMode

        func matches(_ text: String) -> Bool {
            switch self {
            case .size: Self.digitsThenUnit(text, units: "GMK")
            case .time: Self.digitsThenUnit(text, units: "hms")
            case .execMode: ["cluster", "fork", "cluster_mode", "fork_mode"].contains(text)
            }
        }

        /// The text PM2 prints for a mismatch (`desc` in schema.json).
        var description: String {
            switch self {
            case .size: #"it should be a NUMBER - byte, "[NUMBER]G"(Gigabyte), "[NUMBER]M"(Megabyte) or "[NUMBER]K"(Kilobyte)"#
            case .time: #"it should be a NUMBER - milliseconds, "[NUMBER]h"(hours), "[NUMBER]m"(minutes) or "[NUMBER]s"(seconds)"#
            case .execMode: #"it should be "cluster"("cluster_mode") or "fork"("fork_mode") only"#
            }
        }

        private static func digitsThenUnit(_ text: String, units: String) -> Bool {
            var body = Substring(text)
            if let last = body.last, units.contains(last) { body = body.dropLast() }
            return !body.isEmpty && body.allSatisfy { ("0"..."9").contains($0) }
        }
    }

    /// `env_<name>` blocks (schema key `^env_\S*$`): object or string.
    static let environmentBlockTypes: [ValueType] = [.object, .string]

    /// Whether `key` is an `env_<name>` block (`^env_\S*$`).
    static func isEnvironmentBlock(_ key: String) -> Bool {
        key.hasPrefix("env_") && !key.dropFirst(4).contains(where: \.isWhitespace)
    }

    /// Every option of PM2 7.0.3's schema.json, in file order.
    static let options: [Option] = [
        Option(key: "script", types: [.string], explicitAliases: ["exec"], isRequired: true),
        Option(key: "name", types: [.string]),
        Option(key: "name_prefix", types: [.string]),
        Option(key: "filter_env", types: [.boolean, .array, .string]),
        Option(key: "namespace", types: [.string]),
        Option(key: "install_url", types: [.string]),
        Option(key: "cwd", types: [.string]),
        Option(key: "args", types: [.array, .string]),
        Option(key: "exec_interpreter", types: [.string], explicitAliases: ["interpreter"]),
        Option(key: "node_args", types: [.array, .string], explicitAliases: ["interpreterArgs", "interpreter_args"]),
        Option(key: "out_file", types: [.string], explicitAliases: ["out", "output", "out_log"]),
        Option(key: "error_file", types: [.string], explicitAliases: ["error", "err", "err_file", "err_log"]),
        Option(key: "log_file", types: [.boolean, .string], explicitAliases: ["log"]),
        Option(key: "disable_logs", types: [.boolean]),
        Option(key: "log_type", types: [.string]),
        Option(key: "log_date_format", types: [.string]),
        Option(key: "time", types: [.boolean]),
        Option(key: "env", types: [.object, .string]),
        Option(key: "max_memory_restart", types: [.string, .number], pattern: .size, extendedType: .sbyte),
        Option(key: "pid_file", types: [.string], explicitAliases: ["pid"]),
        Option(key: "restart_delay", types: [.number]),
        Option(key: "exp_backoff_restart_delay", types: [.number]),
        Option(key: "source_map_support", types: [.boolean]),
        Option(key: "disable_source_map_support", types: [.boolean]),
        Option(key: "wait_ready", types: [.boolean]),
        Option(key: "instances", types: [.number]),
        Option(key: "kill_timeout", types: [.number]),
        Option(key: "shutdown_with_message", types: [.boolean]),
        Option(key: "listen_timeout", types: [.number]),
        Option(key: "cron_restart", types: [.string, .number], explicitAliases: ["cron"]),
        Option(key: "merge_logs", types: [.boolean], explicitAliases: ["combine_logs"]),
        Option(key: "vizion", types: [.boolean], defaultValue: .bool(true)),
        Option(key: "autostart", types: [.boolean], defaultValue: .bool(true)),
        Option(key: "autorestart", types: [.boolean], defaultValue: .bool(true)),
        Option(key: "stop_exit_codes", types: [.array, .number]),
        Option(key: "watch_delay", types: [.number]),
        Option(key: "watch", types: [.boolean, .array, .string]),
        Option(key: "ignore_watch", types: [.array, .string]),
        Option(key: "watch_options", types: [.object]),
        Option(key: "min_uptime", types: [.number, .string], pattern: .time, minimum: 100, extendedType: .stime),
        Option(key: "max_restarts", types: [.number], minimum: 0),
        Option(key: "execute_command", types: [.boolean]),
        Option(key: "exec_mode", types: [.string], pattern: .execMode),
        Option(key: "force", types: [.boolean]),
        Option(key: "append_env_to_name", types: [.boolean]),
        Option(key: "post_update", types: [.array]),
        Option(key: "trace", types: [.boolean]),
        Option(key: "disable_trace", types: [.boolean]),
        Option(key: "v8", types: [.boolean]),
        Option(key: "event_loop_inspector", types: [.boolean]),
        Option(key: "deep_monitoring", types: [.boolean]),
        Option(key: "increment_var", types: [.string]),
        Option(key: "instance_var", types: [.string], defaultValue: .string("NODE_APP_INSTANCE")),
        Option(key: "pmx", types: [.boolean, .string], defaultValue: .bool(true)),
        Option(key: "automation", types: [.boolean], defaultValue: .bool(true)),
        Option(key: "treekill", types: [.boolean], defaultValue: .bool(true)),
        Option(key: "port", types: [.number]),
        Option(key: "username", types: [.string]),
        Option(key: "uid", types: [.number, .string], explicitAliases: ["user"]),
        Option(key: "gid", types: [.number, .string]),
        Option(key: "windowsHide", types: [.boolean], defaultValue: .bool(true)),
        Option(key: "kill_retry_time", types: [.number], defaultValue: .integer(100)),
        Option(key: "write", types: [.boolean]),
        Option(key: "io", types: [.object]),
    ]

    /// The options by key.
    static let byKey: [String: Option] = Dictionary(options.map { ($0.key, $0) }, uniquingKeysWith: { first, _ in first })

    /// Every name PM2 reads for some option (keys and aliases), mapped to the option's key.
    static let keyForName: [String: String] = {
        var map: [String: String] = [:]
        for option in options {
            for name in [option.key] + option.aliases where map[name] == nil { map[name] = option.key }
        }
        return map
    }()

    /// PM2's camelCase alias: every `_`-separated part after the first with its first letter upper-cased, parts of one
    /// letter or empty left as they are.
    static func camelCase(_ key: String) -> String {
        let parts = key.split(separator: "_", omittingEmptySubsequences: false)
        return parts.enumerated().map { index, part in
            guard index > 0, part.count > 1, let first = part.first else { return String(part) }
            return first.uppercased() + part.dropFirst()
        }.joined()
    }
}
