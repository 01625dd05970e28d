import Shared

/// PM2's process table as `pm2 jlist` prints it, every namespace included.
///
/// Reading is robust to what real PM2 7 prints (captures in Tests/AgentTests/Fixtures/pm2/captures): a daemon that
/// was not running is spawned by `jlist` itself, and its `[PM2] Spawning PM2 daemon…` lines — plus the ASCII banner
/// on the very first run — come on stdout *before* the JSON (`jlist-daemon-not-running`, `jlist-first-run-fresh-home`).
/// The JSON is one line (`JSON.stringify`, no trailing newline), so the table is the last line that parses as a JSON
/// array.
struct PM2ProcessTable: Sendable, Equatable {
    /// One element per instance, in pm_id order.
    var processes: [ManagedProcess]
    /// Each app's `kill_timeout` and `listen_timeout` as PM2 holds them (`pm2_env`), by namespace and name: what bounds
    /// a delete or restart of an app this agent process has not started or reloaded itself (after its restart).
    var timings: [AppKey: PM2AppTiming] = [:]

    /// An app in a namespace.
    struct AppKey: Hashable, Sendable {
        var namespace: String
        var name: String

        init(namespace: String, name: String) {
            self.namespace = namespace
            self.name = name
        }

        init(_ process: ManagedProcess) {
            self.init(namespace: process.namespace, name: process.name)
        }
    }

    init(processes: [ManagedProcess]) {
        self.processes = processes
    }

    /// Reads `pm2 jlist` output.
    ///
    /// - Parameters:
    ///   - stdout: pm2's stdout, banner and daemon messages included.
    ///   - nowMilliseconds: the current time in epoch milliseconds (`pm_uptime` is the epoch-ms time of the last
    ///     (re)start, not a duration).
    /// - Throws: `PM2Error.unreadableTable` naming the element and field that is wrong.
    init(jlistOutput stdout: [UInt8], nowMilliseconds: Int64) throws(PM2Error) {
        try self.init(elements: try Self.jsonArray(in: stdout), nowMilliseconds: nowMilliseconds)
    }

    /// Reads the table's elements: `pm2 jlist`'s array, or the daemon's `getMonitorData` answer (`PM2RPC`), which is
    /// the same array before `jlist` prints it.
    ///
    /// - Throws: `PM2Error.unreadableTable` naming the element and field that is wrong.
    init(elements: [JSONValue], nowMilliseconds: Int64) throws(PM2Error) {
        var processes: [ManagedProcess] = []
        processes.reserveCapacity(elements.count)
        for (index, element) in elements.enumerated() {
            let process = try Self.process(element, index: index, now: nowMilliseconds)
            processes.append(process)
            if case .object(let top) = element, case .object(let env)? = top["pm2_env"] {
                timings[AppKey(process)] = PM2AppTiming(
                    kill: Self.integer(env["kill_timeout"]) ?? PM2AppTiming.pm2Defaults.kill,
                    listen: Self.integer(env["listen_timeout"]) ?? PM2AppTiming.pm2Defaults.listen
                )
            }
        }
        // PM2 does not always print `instances`; the number of elements with the same name is the truth then. Counted
        // once: a count per element was quadratic in the table (minutes for a table of 20,000, read every 250 ms).
        if processes.contains(where: { $0.instances < 1 }) {
            var counts: [AppKey: Int] = [:]
            for process in processes { counts[AppKey(process), default: 0] += 1 }
            for index in processes.indices where processes[index].instances < 1 {
                processes[index].instances = counts[AppKey(processes[index])] ?? 1
            }
        }
        self.processes = processes.sorted { $0.pmId < $1.pmId }
    }

    /// The processes in `namespace` (Ferry's own); everything else in the table is not Ferry's to touch.
    func owned(by namespace: String) -> [ManagedProcess] {
        processes.filter { $0.namespace == namespace }
    }

    /// An app of another namespace whose merged log file (`<logs>/<logName>-out.log` or `-error.log`, PM2's default in
    /// fork mode) an app called `name` would write too, with that file; `nil` when there is none.
    func foreignLogFile(of name: String, besides namespace: String, logsDirectory: String) -> (app: String, namespace: String, file: String)? {
        let logName = PM2App.logName(name)
        let files = Set(["\(logsDirectory)/\(logName)-out.log", "\(logsDirectory)/\(logName)-error.log"])
        for process in processes where process.namespace != namespace && process.name != name {
            if let file = [process.outLogPath, process.errLogPath].compactMap({ $0 }).first(where: files.contains) {
                return (process.name, process.namespace, file)
            }
        }
        return nil
    }

    /// Namespaces other than `namespace` that hold an app called `name`.
    func foreignNamespaces(holding name: String, besides namespace: String) -> [String] {
        var seen: Set<String> = []
        return processes.filter { $0.name == name && $0.namespace != namespace }.map(\.namespace).filter { seen.insert($0).inserted }
    }

    // MARK: - Reading

    private static func jsonArray(in stdout: [UInt8]) throws(PM2Error) -> [JSONValue] {
        let lines = stdout.split(separator: 0x0A, omittingEmptySubsequences: true)
        var lastProblem = "no JSON array in the output"
        for line in lines.reversed() {
            let trimmed = line.drop { $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }
            guard trimmed.first == UInt8(ascii: "[") else { continue }
            do {
                if case .array(let elements) = try JSONValue.parse(trimmed, loneSurrogates: .replace) { return elements }
            } catch {
                // `[PM2] Spawning…` (with NO_COLOR=1) also starts with `[`: keep looking further up.
                lastProblem = "\(error)"
            }
        }
        throw .unreadableTable(reason: lastProblem, excerpt: excerpt(stdout))
    }

    private static func process(_ element: JSONValue, index: Int, now: Int64) throws(PM2Error) -> ManagedProcess {
        let at = "element \(index)"
        guard case .object(let top) = element else { throw problem("\(at) is not an object") }
        guard case .object(let env)? = top["pm2_env"] else { throw problem("\(at) has no pm2_env object") }
        guard let name = string(top["name"]) ?? string(env["name"]) else { throw problem("\(at) has no name") }
        let at2 = "\(at) (\(name))"
        guard let pmId = integer(top["pm_id"]) ?? integer(env["pm_id"]) else { throw problem("\(at2) has no integer pm_id") }
        guard let statusText = string(env["status"]) else { throw problem("\(at2) has no pm2_env.status") }
        guard var status = ProcessStatus(rawValue: statusText) else {
            throw problem("\(at2) has unknown pm2_env.status \"\(statusText)\"")
        }
        // PM2 gives up on an instance that restarted too often within min_uptime × max_restarts (God.handleExit sets
        // `errored` and created_at = null), but when the app sets restart_delay or exp_backoff_restart_delay it then
        // overwrites the status with `waiting restart` and schedules nothing: "waiting" for ever, pid 0. created_at is
        // null only after such a give-up (every start sets it again), so the instance is read as what PM2 decided.
        if status == .waitingRestart, env["created_at"] == .null { status = .errored }
        let execMode: ExecMode
        if let text = string(env["exec_mode"]) {
            guard let mode = ExecMode(pm2Value: text) else { throw problem("\(at2) has unknown pm2_env.exec_mode \"\(text)\"") }
            execMode = mode
        } else {
            execMode = .fork
        }
        // PM2 keeps the pid of a dead process while `waiting restart`; only a running instance has a real pid.
        let running: Set<ProcessStatus> = [.online, .launching, .stopping]
        let pid = integer(top["pid"]).flatMap { $0 > 0 && $0 <= Int64(Int32.max) && running.contains(status) ? Int32($0) : nil }
        var uptime: Int64?
        if status == .online, let startedAt = integer(env["pm_uptime"]) {
            // A start time no clock gives (PM2 writes `Date.now()`) leaves the uptime unknown rather than overflow.
            let (elapsed, overflow) = now.subtractingReportingOverflow(startedAt)
            uptime = overflow ? nil : max(0, elapsed) / 1000
        }
        var memory: Int64 = 0
        var cpu = 0.0
        if case .object(let monit)? = top["monit"] {
            memory = integer(monit["memory"]) ?? 0
            cpu = number(monit["cpu"]) ?? 0
        }
        let instanceVariable = string(env["instance_var"]) ?? "NODE_APP_INSTANCE"
        return ManagedProcess(
            name: name,
            namespace: string(env["namespace"]) ?? "default",
            pmId: Int(clamping: pmId),
            pid: pid,
            status: status,
            restarts: Int(clamping: integer(env["restart_time"]) ?? 0),
            uptimeSeconds: uptime,
            memoryBytes: memory,
            cpuPercent: cpu,
            execMode: execMode,
            instances: Int(clamping: integer(env["instances"]) ?? 0),
            instanceIndex: Int(clamping: integer(env[instanceVariable]) ?? integer(env["NODE_APP_INSTANCE"]) ?? 0),
            scriptPath: string(env["pm_exec_path"]) ?? "",
            cwd: string(env["pm_cwd"]) ?? string(env["cwd"]) ?? "",
            interpreter: string(env["exec_interpreter"]),
            lastExitCode: integer(env["exit_code"]).flatMap { Int32(exactly: $0) },
            outLogPath: string(env["pm_out_log_path"]),
            errLogPath: string(env["pm_err_log_path"])
        )
    }

    private static func string(_ value: JSONValue?) -> String? {
        if case .string(let text)? = value { return text }
        return nil
    }

    private static func integer(_ value: JSONValue?) -> Int64? {
        switch value {
        case .integer(let number)?: return number
        case .number(let number)?: return Int64(exactly: number.rounded(.towardZero))
        case .string(let text)?: return Int64(text)
        default: return nil
        }
    }

    private static func number(_ value: JSONValue?) -> Double? {
        switch value {
        case .integer(let number)?: return Double(number)
        case .number(let number)?: return number
        default: return nil
        }
    }

    private static func problem(_ reason: String) -> PM2Error {
        .unreadableTable(reason: reason, excerpt: "")
    }

    /// The start of `stdout` as printable text, for error messages.
    static func excerpt(_ stdout: [UInt8], limit: Int = 200) -> String {
        let text = String(decoding: stdout.prefix(limit), as: UTF8.self)
        let printable = text.unicodeScalars.map { scalar in
            scalar == "\n" ? "\\n" : (scalar.value < 0x20 || scalar.value == 0x7F ? "\\u{\(String(scalar.value, radix: 16))}" : String(scalar))
        }.joined()
        return stdout.count > limit ? printable + "…" : printable
    }
}
