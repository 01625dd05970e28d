import Shared

#if canImport(Glibc)
import Glibc
#endif

extension AppSpec {
    /// The apps of `release` as this instance runs them.
    ///
    /// `cwd` is the service's `current` symlink and `script` is absolute below it (the symlink is resolved again at
    /// every spawn, so a reload after switching `current` runs the new code). Environment precedence: release env <
    /// app env < instance env file.
    static func specs(
        for release: Release,
        currentLink: String,
        instanceEnv: [String: String],
        cpuCount: Int = AppSpec.onlineCPUs()
    ) -> [AppSpec] {
        release.pm2.apps.map { app in
            var env = release.env
            if case .object(let appEnv)? = app.options["env"] {
                for (key, value) in appEnv { if case .string(let text) = value { env[key] = text } }
            }
            for (key, value) in instanceEnv { env[key] = value }
            return AppSpec(
                name: app.name,
                service: release.service,
                script: "\(currentLink)/\(app.script)",
                cwd: currentLink,
                args: stringList(app.options["args"]),
                interpreter: interpreter(for: app),
                interpreterArgs: stringList(app.options["interpreter_args"] ?? app.options["node_args"]),
                instances: instances(app.options["instances"], cpuCount: cpuCount),
                execMode: app.options["exec_mode"].flatMap { if case .string(let s) = $0 { ExecMode(pm2Value: s) } else { nil } } ?? .fork,
                env: env,
                autorestart: bool(app.options["autorestart"]) ?? true,
                maxRestarts: Int(clamping: integer(app.options["max_restarts"]) ?? 16),
                minUptimeMilliseconds: milliseconds(app.options["min_uptime"]) ?? 1000,
                restartDelayMilliseconds: integer(app.options["restart_delay"]) ?? 0,
                killTimeoutMilliseconds: integer(app.options["kill_timeout"]) ?? 1600,
                maxMemoryBytes: memory(app.options["max_memory_restart"]),
                pm2Options: app.options
            )
        }
    }

    /// The number of online CPUs (PM2's `instances: "max"`).
    static func onlineCPUs() -> Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }

    private static func interpreter(for app: PM2App) -> String? {
        if case .string(let name)? = app.options["interpreter"] { return name == "none" ? nil : name }
        let script = app.script
        return script.hasSuffix(".js") || script.hasSuffix(".mjs") || script.hasSuffix(".cjs") ? "node" : nil
    }

    /// PM2's `instances`: a count, `0`/`"max"` = every CPU, `-n` = every CPU but n (at least 1).
    static func instances(_ value: JSONValue?, cpuCount: Int) -> Int {
        switch value {
        case .string("max")?: return cpuCount
        case .integer(let n)?: return count(n, cpuCount: cpuCount)
        // The release validator accepts a whole JSON number (`3.0`) as well as an integer.
        case .number(let d)? where d.rounded() == d && abs(d) <= 1024: return count(Int64(d), cpuCount: cpuCount)
        default: return 1
        }
    }

    private static func count(_ n: Int64, cpuCount: Int) -> Int {
        if n > 0 { return Int(n) }
        if n == 0 { return cpuCount }
        return max(1, cpuCount + Int(n))
    }

    private static func stringList(_ value: JSONValue?) -> [String] {
        switch value {
        case .array(let items)?: return items.compactMap { if case .string(let s) = $0 { s } else { nil } }
        case .string(let text)?: return text.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        default: return []
        }
    }

    private static func bool(_ value: JSONValue?) -> Bool? {
        if case .bool(let flag)? = value { return flag }
        return nil
    }

    private static func integer(_ value: JSONValue?) -> Int64? {
        switch value {
        case .integer(let n)?: return n
        // The release was validated (whole numbers in range); `exactly:` keeps an unvalidated one from trapping.
        case .number(let d)?: return Int64(exactly: d.rounded(.towardZero))
        default: return nil
        }
    }

    private static func milliseconds(_ value: JSONValue?) -> Int64? {
        if case .string(let text)? = value { return DurationText.milliseconds(text) }
        return integer(value)
    }

    private static func memory(_ value: JSONValue?) -> Int64? {
        if case .string(let text)? = value { return ByteSize.parse(text) }
        return integer(value)
    }
}
