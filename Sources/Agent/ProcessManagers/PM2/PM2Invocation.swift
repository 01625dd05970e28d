import Shared

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// How pm2 runs on this host: the resolved binary and the exact, minimal environment it gets.
///
/// pm2 never inherits the agent's environment. `--update-env` (and every reload through a file) merges the *calling*
/// process's environment into the app (behaviour 8 in Tests/AgentTests/Fixtures/pm2/captures/README.md), so anything
/// the agent has — its token, proxy settings, config paths — would leak into applications. pm2 gets `PATH`, `HOME`, `PM2_HOME` and `NO_COLOR=1`
/// (PM2 7 colours its messages whenever `PM2_HOME` is set, behaviour 1) and nothing else; apps get their env only
/// from the generated ecosystem file.
struct PM2Invocation: Sendable, Equatable {
    /// Absolute path of the pm2 binary.
    var executable: String
    /// The complete environment of every pm2 call.
    var environment: [String: String]
    /// pm2's working directory.
    var workingDirectory: String
    /// Bound on every call.
    var timeout: Duration

    /// Directories always on pm2's `PATH`, after the pm2 and node directories.
    static let standardPath = ["/usr/local/bin", "/usr/bin", "/bin"]

    init(executable: String, environment: [String: String], workingDirectory: String = "/", timeout: Duration) {
        self.executable = executable
        self.environment = environment
        self.workingDirectory = workingDirectory
        self.timeout = timeout
    }

    /// Resolves `configuration` on this host.
    ///
    /// - `executable`: a bare name is looked up on the agent's `PATH`, then in `standardPath`; a path is used as is.
    /// - `HOME`: `configuration.home`, else the agent's `HOME`, else the passwd entry of the agent's uid.
    /// - `PM2_HOME`: `configuration.pm2Home`, else `$HOME/.pm2` (PM2's own default, so `pm2 ls` typed by the same user
    ///   sees the same daemon).
    /// - `PATH`: `configuration.path`, else the directory of the pm2 binary, the directory of `node` found on the
    ///   agent's `PATH` (pm2 is a `#!/usr/bin/env node` script), then `standardPath`.
    ///
    /// - Parameter agentEnvironment: the agent's own environment, read here only to find binaries and the home.
    /// - Throws: `PM2Error.executableNotFound`, `PM2Error.homeUnknown`.
    static func resolve(
        _ configuration: PM2ProcessManager.Configuration,
        agentEnvironment: [String: String]
    ) throws(PM2Error) -> PM2Invocation {
        let agentPath = (agentEnvironment["PATH"] ?? "").split(separator: ":").map(String.init).filter { $0.hasPrefix("/") }
        let executable = try locate(configuration.executable, in: agentPath + standardPath)
        guard let home = configuration.home ?? agentEnvironment["HOME"].flatMap({ $0.isEmpty ? nil : $0 }) ?? passwdHome()
        else { throw .homeUnknown }
        let path: String
        if let configured = configuration.path {
            path = configured
        } else {
            var directories = [directory(of: executable)]
            if let node = try? locate("node", in: agentPath + standardPath) { directories.append(directory(of: node)) }
            directories += standardPath
            var seen: Set<String> = []
            path = directories.filter { seen.insert($0).inserted }.joined(separator: ":")
        }
        return PM2Invocation(
            executable: executable,
            environment: [
                "PATH": path,
                "HOME": home,
                "PM2_HOME": configuration.pm2Home ?? home + "/.pm2",
                "NO_COLOR": "1",
            ],
            timeout: configuration.commandTimeout
        )
    }

    /// The command for `operation`, bounded by `timeout` (`nil`: the configured one).
    func command(_ operation: PM2Command.Operation, timeout: Duration? = nil) -> PM2Command {
        PM2Command(
            executable: executable,
            arguments: operation.arguments,
            environment: environment,
            workingDirectory: workingDirectory,
            timeout: timeout ?? self.timeout
        )
    }

    private static func locate(_ name: String, in directories: [String]) throws(PM2Error) -> String {
        if name.contains("/") {
            guard isExecutableFile(name) else { throw .executableNotFound(name: name, searched: []) }
            return name
        }
        for directory in directories where isExecutableFile(directory + "/" + name) {
            return directory + "/" + name
        }
        throw .executableNotFound(name: name, searched: directories)
    }

    private static func isExecutableFile(_ path: String) -> Bool {
        var info = stat()
        guard stat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { return false }
        return access(path, X_OK) == 0
    }

    private static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    private static func passwdHome() -> String? {
        guard let entry = getpwuid(getuid()), let directory = entry.pointee.pw_dir else { return nil }
        let home = String(cString: directory)
        return home.isEmpty ? nil : home
    }
}
