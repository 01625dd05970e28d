import Glibc
import Shared

/// How the builtin supervisor checks and launches an `AppSpec`.
extension AppSpec {
    /// Most instances one app may ask for: what a release may (`PM2App.maximumInstances`), so a release PM2 runs
    /// runs here too.
    static let maximumInstances = PM2App.maximumInstances
    /// Longest `kill_timeout` accepted: what a release may give (`PM2App.maximumKillTimeoutMilliseconds`). Requests
    /// that stop processes are given the time it takes (`BuiltinProcessManager.timeout`).
    static let maximumKillTimeoutMilliseconds = PM2App.maximumKillTimeoutMilliseconds
    /// Longest `restart_delay` accepted.
    static let maximumRestartDelayMilliseconds: Int64 = 24 * 3600 * 1000

    /// Checks what the supervisor relies on: a name that is safe in log file names, absolute paths, sane numbers,
    /// env entries `execve` can carry. Throws `.invalidApp` naming the field.
    func validateForSupervisor() throws(SupervisorFailure) {
        func invalid(_ message: String) -> SupervisorFailure { SupervisorFailure(.invalidApp, "app \(name.debugDescription.prefix(80)): \(message)") }
        if let problem = PM2App.nameProblem(name) { throw invalid("name \(problem)") }
        guard cwd.hasPrefix("/"), cwd.utf8.count <= 4096, !cwd.utf8.contains(0) else {
            throw invalid("cwd must be an absolute path without NUL bytes, got \(cwd.debugDescription.prefix(200))")
        }
        // A script is an absolute path, or a program name looked up on the app's PATH (PM2's `which`).
        guard !script.isEmpty, script.hasPrefix("/") || !script.contains("/"), script.utf8.count <= 4096, !script.utf8.contains(0) else {
            throw invalid("script must be an absolute path or a program name without NUL bytes, got \(script.debugDescription.prefix(200))")
        }
        if let interpreter {
            guard !interpreter.isEmpty, interpreter.utf8.count <= 4096, !interpreter.utf8.contains(0) else {
                throw invalid("interpreter must be a non-empty name or path without NUL bytes")
            }
        }
        guard args.count <= 1024, interpreterArgs.count <= 1024,
            !(args + interpreterArgs).contains(where: { $0.utf8.contains(0) })
        else {
            throw invalid("args and interpreter args must be at most 1024 strings without NUL bytes")
        }
        guard (1...Self.maximumInstances).contains(instances) else {
            throw invalid("instances must be between 1 and \(Self.maximumInstances), got \(instances)")
        }
        guard maxRestarts >= 0, minUptimeMilliseconds >= 0 else {
            throw invalid("max_restarts and min_uptime must not be negative")
        }
        guard minUptimeMilliseconds <= DurationText.maximumMilliseconds else {
            throw invalid("min_uptime must be at most \(DurationText.maximumMilliseconds) ms")
        }
        guard (0...Self.maximumRestartDelayMilliseconds).contains(restartDelayMilliseconds) else {
            throw invalid("restart_delay must be between 0 and \(Self.maximumRestartDelayMilliseconds) ms")
        }
        guard (0...Self.maximumKillTimeoutMilliseconds).contains(killTimeoutMilliseconds) else {
            throw invalid("kill_timeout must be between 0 and \(Self.maximumKillTimeoutMilliseconds) ms")
        }
        if let maxMemoryBytes, maxMemoryBytes <= 0 {
            throw invalid("max_memory_restart must be positive")
        }
        guard env.count <= 4096 else { throw invalid("env has \(env.count) entries, at most 4096 are accepted") }
        for (key, value) in env {
            guard !key.isEmpty, !key.utf8.contains(UInt8(ascii: "=")), !key.utf8.contains(0), !value.utf8.contains(0) else {
                throw invalid("env name \(key.debugDescription.prefix(80)) must be non-empty, without = or NUL, and its value without NUL")
            }
        }
    }

    /// The interpreter to run, `nil` to execute the script itself (`none`, like PM2, also means that).
    var effectiveInterpreter: String? {
        guard let interpreter, interpreter != "none" else { return nil }
        return interpreter
    }

    /// The environment of instance `index`, as PM2 7 builds it (`God.injectVariables`, then `executeApp` merging the
    /// app's env over it): exactly `env`, plus `PATH` and `HOME` when `env` lacks them, plus
    /// - the variable `instance_var` names (default `NODE_APP_INSTANCE`) set to `index`, unless the env already has
    ///   that variable (PM2 lets the app's env win);
    /// - with `increment_var`, that variable set to its value in `env` read as a JavaScript number (`Number(v) || 0`:
    ///   0 when absent or not a number) plus `index`, written as JavaScript writes numbers; it wins over everything,
    ///   `instance_var` included when both name the same variable.
    ///
    /// PM2 numbers from the lowest free index and the highest increment it already runs for the app; the supervisor's
    /// slots keep their index for life, so both come out as `index` and `base + index`. A name that cannot be an env
    /// name (empty, `=`, NUL) sets nothing. Nothing of the daemon's or the agent's own environment is passed on.
    func environment(instance index: Int) -> [String: String] {
        var result = env
        if result["PATH"] == nil { result["PATH"] = Self.defaultSearchPath }
        if result["HOME"] == nil { result["HOME"] = Self.homeDirectoryOfCurrentUser() }
        // PM2 reads the increment's base from the app's env, before the instance variable is added.
        let incrementVariable = pm2String("increment_var").flatMap { Self.isEnvironmentName($0) ? $0 : nil }
        let base = incrementVariable.map { JavaScriptNumber.value(of: result[$0] ?? "") } ?? 0
        let instanceVariable = pm2String("instance_var") ?? "NODE_APP_INSTANCE"
        if Self.isEnvironmentName(instanceVariable), result[instanceVariable] == nil {
            result[instanceVariable] = String(index)
        }
        if let incrementVariable {
            // `Number(v) || 0`: NaN and ±0 are 0.
            let start = base.isNaN || base == 0 ? 0 : base
            result[incrementVariable] = JavaScriptNumber.text(of: start + Double(index))
        }
        return result
    }

    /// A string option of the release (`pm2Options`), or nil.
    private func pm2String(_ key: String) -> String? {
        if case .string(let text)? = pm2Options[key] { return text }
        return nil
    }

    /// Whether `name` can stand before the `=` of an environment entry.
    private static func isEnvironmentName(_ name: String) -> Bool {
        !name.isEmpty && !name.utf8.contains(UInt8(ascii: "=")) && !name.utf8.contains(0)
    }

    /// The program to execute and its `argv`: the script itself, or the interpreter (resolved on the app's
    /// `PATH`) with the interpreter args, the script and the args. A script named without a path is a program found
    /// on the app's `PATH`, as PM2 finds it.
    ///
    /// A program named with a space (`npm start`) is a command line: PM2 7 runs it as `bash -c "npm start"` (`sh` when
    /// there is no bash), with the app's args dropped (`Common.prepareAppConf`), and so does the supervisor. A release
    /// file's path (absolute) is run as named, spaces and all.
    func command(instance index: Int) throws(SupervisorError) -> (executable: String, arguments: [String]) {
        let searchPath = environment(instance: index)["PATH"] ?? Self.defaultSearchPath
        if !script.hasPrefix("/"), script.contains(" ") {
            let shell: String
            do throws(SupervisorError) {
                shell = try Self.resolve("bash", searchPath: searchPath, relativeTo: cwd)
            } catch {
                shell = try Self.resolve("sh", searchPath: searchPath, relativeTo: cwd)
            }
            let name = shell.split(separator: "/").last.map(String.init) ?? shell
            return (shell, [name, "-c", script])
        }
        let scriptPath = script.hasPrefix("/") ? script : try Self.resolve(script, searchPath: searchPath, relativeTo: cwd)
        guard let interpreter = effectiveInterpreter else { return (scriptPath, [scriptPath] + args) }
        let executable = try Self.resolve(interpreter, searchPath: searchPath, relativeTo: cwd)
        return (executable, [interpreter] + interpreterArgs + [scriptPath] + args)
    }

    /// Finds `program` the way a shell would: a name with a `/` is a path (relative ones against `directory`),
    /// a bare name is looked up in each directory of `searchPath`.
    static func resolve(_ program: String, searchPath: String, relativeTo directory: String) throws(SupervisorError) -> String {
        if program.contains("/") {
            return program.hasPrefix("/") ? program : "\(directory)/\(program)"
        }
        for entry in searchPath.split(separator: ":", omittingEmptySubsequences: true) where entry.hasPrefix("/") {
            let candidate = "\(entry)/\(program)"
            var info = stat()
            if stat(candidate, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG, access(candidate, X_OK) == 0 {
                return candidate
            }
        }
        throw .interpreterNotFound(interpreter: program, searchPath: searchPath)
    }

    private static func homeDirectoryOfCurrentUser() -> String {
        var entry = passwd()
        var result: UnsafeMutablePointer<passwd>?
        var buffer = [CChar](repeating: 0, count: 4096)
        guard getpwuid_r(geteuid(), &entry, &buffer, buffer.count, &result) == 0, result != nil, let directory = entry.pw_dir else {
            return "/"
        }
        return String(cString: directory)
    }
}

extension UInt8 {
    fileprivate var isASCIIAlphanumeric: Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(self) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(self)
            || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(self)
    }
}
