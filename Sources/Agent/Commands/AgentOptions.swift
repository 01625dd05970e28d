import ArgumentParser
import Logging

/// Options every daemon-side command takes.
struct ConfigOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("The agent configuration (JSON or YAML) written by `enroll`.", valueName: "FILE"))
    var config: String = "/etc/ferry/agent.yaml"

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical (env FERRY_LOG_LEVEL).")
    var logLevel: String?

    /// The level `text` names, in any case (`DEBUG`, `Warning`); `nil` for anything else.
    static func level(_ text: String) -> Logger.Level? { Logger.Level(rawValue: text.lowercased()) }

    static let levelNames = Logger.Level.allCases.map(\.rawValue).joined(separator: ", ")

    func validate() throws {
        if let logLevel, Self.level(logLevel) == nil {
            throw ValidationError("--log-level \(logLevel.prefix(40).debugDescription) is not a log level: give one of \(Self.levelNames)")
        }
    }

    /// A stderr logger at the chosen level that masks the instance env values `secrets` knows in every line. A
    /// `FERRY_LOG_LEVEL` that names no level is said (at `info`, the level used then), not silently ignored.
    func makeLogger(secrets: InstanceSecrets) -> Logger {
        let fromEnvironment = ProcessEnvironment.current["FERRY_LOG_LEVEL"].flatMap { $0.isEmpty ? nil : $0 }
        let level = logLevel.flatMap(Self.level) ?? fromEnvironment.flatMap(Self.level) ?? .info
        var logger = Logger(label: "ferry.agent") { MaskingLogHandler(base: StreamLogHandler.standardError(label: $0), secrets: secrets) }
        logger.logLevel = level
        if logLevel == nil, let fromEnvironment, Self.level(fromEnvironment) == nil {
            logger.warning(
                "FERRY_LOG_LEVEL=\(fromEnvironment.prefix(40).debugDescription) is not a log level (\(Self.levelNames)): logging at \(level)"
            )
        }
        return logger
    }

    /// The configuration, a masking logger and the runtime built from them: what `run` and `once` start from.
    func makeRuntime() throws -> (config: AgentConfig, logger: Logger, runtime: AgentRuntime) {
        let secrets = InstanceSecrets()
        let logger = makeLogger(secrets: secrets)
        let config = try AgentConfig.load(from: self.config)
        // Before the runtime touches anything of the state directory: one agent process (run or once) at a time.
        try StateDirectoryLock.acquire(stateDir: config.stateDir)
        return (config, logger, try AgentRuntime.make(config: config, logger: logger, secrets: secrets))
    }
}
