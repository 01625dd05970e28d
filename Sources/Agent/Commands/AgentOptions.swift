import ArgumentParser
import Logging

/// Options every daemon-side command takes.
struct ConfigOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("The agent configuration (JSON or YAML) written by `enroll`.", valueName: "FILE"))
    var config: String = "/etc/ferry/agent.yaml"

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical (env FERRY_LOG_LEVEL).")
    var logLevel: String?

    /// A stderr logger at the chosen level that masks the instance env values `secrets` knows in every line.
    func makeLogger(secrets: InstanceSecrets) -> Logger {
        let level = (logLevel ?? ProcessEnvironment.current["FERRY_LOG_LEVEL"]).flatMap(Logger.Level.init(rawValue:)) ?? .info
        var logger = Logger(label: "ferry.agent") { MaskingLogHandler(base: StreamLogHandler.standardError(label: $0), secrets: secrets) }
        logger.logLevel = level
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
