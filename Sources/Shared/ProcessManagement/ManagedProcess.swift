/// One app instance as the process manager reports it (one element per instance, like `pm2 jlist`).
package struct ManagedProcess: Sendable, Equatable, Codable {
    /// App name.
    package var name: String
    /// The process manager's namespace (Ferry's own, default `ferry`).
    package var namespace: String
    /// PM2's `pm_id` (the builtin supervisor numbers instances the same way).
    package var pmId: Int
    /// OS pid; `nil` when not running.
    package var pid: Int32?
    package var status: ProcessStatus
    /// Restarts of any kind since the app was started.
    package var restarts: Int
    /// Seconds since the last (re)start while running, else `nil`.
    package var uptimeSeconds: Int64?
    package var memoryBytes: Int64
    package var cpuPercent: Double
    package var execMode: ExecMode
    /// The app's total instance count.
    package var instances: Int
    /// Index of this instance (`NODE_APP_INSTANCE`).
    package var instanceIndex: Int
    /// Absolute script path as the process manager stored it (symlinks not resolved).
    package var scriptPath: String
    /// Working directory as stored (symlinks not resolved).
    package var cwd: String
    /// Interpreter as stored (`node`, `none`, a path), if known.
    package var interpreter: String?
    /// Exit code of the last exit, if the instance has exited at least once (PM2's `pm2_env.exit_code`).
    package var lastExitCode: Int32?
    /// The signal that ended the last run (`SIGKILL`), when one did and the process manager says so (the builtin
    /// supervisor does; PM2 writes it to its daemon log only, see `ProcessManager.explainingExits(_:)`).
    package var lastExitSignal: String?
    /// The file the instance's stdout goes to, when the process manager says (PM2's `pm_out_log_path`).
    package var outLogPath: String?
    /// The file the instance's stderr goes to (PM2's `pm_err_log_path`).
    package var errLogPath: String?

    package init(
        name: String,
        namespace: String,
        pmId: Int,
        pid: Int32?,
        status: ProcessStatus,
        restarts: Int,
        uptimeSeconds: Int64?,
        memoryBytes: Int64,
        cpuPercent: Double,
        execMode: ExecMode,
        instances: Int,
        instanceIndex: Int,
        scriptPath: String,
        cwd: String,
        interpreter: String?,
        lastExitCode: Int32? = nil,
        lastExitSignal: String? = nil,
        outLogPath: String? = nil,
        errLogPath: String? = nil
    ) {
        self.name = name
        self.namespace = namespace
        self.pmId = pmId
        self.pid = pid
        self.status = status
        self.restarts = restarts
        self.uptimeSeconds = uptimeSeconds
        self.memoryBytes = memoryBytes
        self.cpuPercent = cpuPercent
        self.execMode = execMode
        self.instances = instances
        self.instanceIndex = instanceIndex
        self.scriptPath = scriptPath
        self.cwd = cwd
        self.interpreter = interpreter
        self.lastExitCode = lastExitCode
        self.lastExitSignal = lastExitSignal
        self.outLogPath = outLogPath
        self.errLogPath = errLogPath
    }
}
