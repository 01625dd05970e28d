import Shared

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The PM2 ecosystem file Ferry generates for one service (`services/<svc>/ecosystem.json`), read by PM2. (The builtin
/// supervisor gets the same settings as `AppSpec`s on its socket; the file is written either way.)
///
/// Ferry writes every field it decides explicitly, so what runs is what the file says rather than what PM2 would
/// guess: absolute `script`, `cwd` = the service's `current` symlink (re-resolved at every spawn, so a reload picks up
/// a new release), Ferry's `namespace` (ownership), `interpreter` (`none` for "run the script directly": PM2 would
/// otherwise pick one from the file extension or fall back to node), `exec_mode`, `instances`, the merged `env`, and
/// the restart policy. The release's other PM2 options pass through unchanged.
enum EcosystemWriter {
    /// PM2 option names that Ferry sets itself from `AppSpec`, with their PM2 aliases. A release's `pm2Options` entry
    /// with one of these names is not passed through (the typed `AppSpec` field, derived from it, wins).
    static let ferrySetKeys: Set<String> = [
        "name", "script", "exec", "cwd", "namespace", "script_source",
        "interpreter", "exec_interpreter", "node_args", "interpreter_args", "interpreterArgs", "args",
        "instances", "exec_mode", "env",
        "autorestart", "max_restarts", "min_uptime", "restart_delay", "kill_timeout", "max_memory_restart",
    ]

    /// Options that are never passed through: the ones Ferry owns on the instance (log and pid paths) and
    /// `env_<name>` blocks (a signed release carries the merged env only).
    static func isPassedThrough(_ key: String) -> Bool {
        !ferrySetKeys.contains(key) && !PM2App.ferryOwned.contains(key) && !key.hasPrefix("env_")
    }

    /// Renders `{"apps": [...]}` as pretty-printed JSON with sorted keys and a final newline (stable bytes, so an
    /// unchanged service writes an identical file).
    static func render(apps: [AppSpec], namespace: String) -> [UInt8] {
        let document = JSONValue.object(["apps": .array(apps.map { app($0, namespace: namespace) })])
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        // Encoding a JSONValue cannot fail (every case maps to a JSON type); an empty app list is the safe fallback.
        let data = (try? encoder.encode(document)) ?? Data(#"{"apps":[]}"#.utf8)
        return Array(data) + [0x0A]
    }

    /// One entry of `apps`.
    static func app(_ spec: AppSpec, namespace: String) -> JSONValue {
        var fields: [String: JSONValue] = [:]
        for (key, value) in spec.pm2Options where isPassedThrough(key) {
            fields[key] = value
        }
        fields["name"] = .string(spec.name)
        fields["script"] = .string(spec.script)
        fields["cwd"] = .string(spec.cwd)
        fields["namespace"] = .string(namespace)
        fields["interpreter"] = .string(spec.interpreter ?? "none")
        // Written even when empty: a reload through the file then clears arguments an older release had.
        fields["node_args"] = .array(spec.interpreterArgs.map(JSONValue.string))
        fields["args"] = .array(spec.args.map(JSONValue.string))
        fields["instances"] = .integer(Int64(spec.instances))
        fields["exec_mode"] = .string(spec.execMode.rawValue)
        fields["env"] = .object(spec.env.mapValues(JSONValue.string))
        fields["autorestart"] = .bool(spec.autorestart)
        fields["max_restarts"] = .integer(Int64(spec.maxRestarts))
        fields["min_uptime"] = .integer(spec.minUptimeMilliseconds)
        fields["restart_delay"] = .integer(spec.restartDelayMilliseconds)
        fields["kill_timeout"] = .integer(spec.killTimeoutMilliseconds)
        if let bytes = spec.maxMemoryBytes {
            fields["max_memory_restart"] = .integer(bytes)
        }
        if keepsPM2MergeLogsDefault(spec) {
            fields["merge_logs"] = .bool(true)
        }
        return .object(fields)
    }

    /// Whether PM2 would merge this app's logs on its own: `Common.verifyConfs` sets `merge_logs: true` for an app that
    /// is not in cluster mode and has no truthy `instances` ("max" counts as 0) unless the file sets `merge_logs`. The
    /// file always states `instances`, which would turn that default off: log files would then be named after each
    /// instance's pm_id (`web-out-3.log`), and every replace (a new pm_id) would start a new file that nothing removes.
    static func keepsPM2MergeLogsDefault(_ spec: AppSpec) -> Bool {
        guard spec.execMode == .fork, spec.pm2Options["merge_logs"] == nil else { return false }
        switch spec.pm2Options["instances"] {
        case nil, .null?, .integer(0)?: return true
        case .number(let count)?: return count == 0
        // PM2: "max" is 0, another string is parseInt(text) || 0.
        case .string(let text)?: return text == "max" || Int(text.prefix { $0.isNumber || $0 == "-" }) ?? 0 == 0
        default: return false
        }
    }
}
