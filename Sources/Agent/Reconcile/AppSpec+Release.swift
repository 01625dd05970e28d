import Shared

#if canImport(Glibc)
import Glibc
#endif

extension AppSpec {
    /// The apps of `release` as this instance runs them.
    ///
    /// `cwd` is the service's `current` symlink (plus the app's `cwd` inside the release) and `script` is absolute
    /// below `current` (the symlink is resolved again at every spawn, so a reload after switching `current` runs the
    /// new code); a program (`script_source: path`) stays a name for the process manager to find on `PATH`, as PM2
    /// does. Environment precedence: release env < app env < instance env file.
    static func specs(
        for release: Release,
        currentLink: String,
        instanceEnv: [String: String],
        cpuCount: Int = AppSpec.onlineCPUs(),
        which: (String) -> String? = { AppSpec.which($0) }
    ) -> [AppSpec] {
        release.pm2.apps.map { app in
            var env = release.env
            if case .object(let appEnv)? = app.options["env"] {
                for (key, value) in appEnv { if case .string(let text) = value { env[key] = text } }
            }
            for (key, value) in instanceEnv { env[key] = value }
            let cwd = app.cwd.isEmpty ? currentLink : "\(currentLink)/\(app.cwd)"
            return AppSpec(
                name: app.name,
                service: release.service,
                script: app.isProgram ? app.script : "\(currentLink)/\(app.script)",
                cwd: cwd,
                args: stringList(app.options["args"]),
                interpreter: interpreter(for: app, currentLink: currentLink, which: which),
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

    /// The interpreter the release names (publish records PM2's choice), made runnable here: a path inside the
    /// release becomes absolute below `current`, and `python` falls back to `python3` where only that exists, as PM2
    /// does. A release signed before publish recorded interpreters keeps the meaning it was deployed with: node for
    /// `.js`, `.mjs`, `.cjs`, else the script runs directly.
    static func interpreter(for app: PM2App, currentLink: String, which: (String) -> String?) -> String? {
        var name: String
        if case .string(let given)? = app.options["interpreter"] {
            name = given
        } else {
            let script = app.script
            name = script.hasSuffix(".js") || script.hasSuffix(".mjs") || script.hasSuffix(".cjs") ? "node" : "none"
        }
        if name == "none" { return nil }
        if name.contains("/"), !name.hasPrefix("/") { return "\(currentLink)/\(name)" }
        if name == "python", which("python") == nil, which("python3") != nil { name = "python3" }
        return name
    }

    /// A program on the agent's `PATH` (then the standard directories).
    static func which(_ name: String) -> String? {
        let path = (getenv("PATH").map { String(cString: $0) } ?? "") + ":" + AppSpec.defaultSearchPath
        for directory in path.split(separator: ":") where directory.hasPrefix("/") {
            let candidate = "\(directory)/\(name)"
            var info = stat()
            if stat(candidate, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG, access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }

    /// PM2's `instances`: a count, `0`/`"max"` = every CPU, `-n` = every CPU but n (at least 1).
    static func instances(_ value: JSONValue?, cpuCount: Int) -> Int {
        switch value {
        case .string("max")?: return cpuCount
        case .integer(let n)?: return count(n, cpuCount: cpuCount)
        // The release validator accepts a whole JSON number (`3.0`) as well as an integer.
        case .number(let d)? where d.rounded() == d && abs(d) <= Double(PM2App.maximumInstances): return count(Int64(d), cpuCount: cpuCount)
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
        // As PM2 and the operator's `publish` split it: quotes group words.
        case .string(let text)?: return PM2Arguments.split(text)
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
