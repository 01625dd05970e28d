import ArgumentParser
import Logging
import ServiceLifecycle
import Shared

/// `ferry-agent run`: the daemon (a systemd service on every instance).
struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run the agent daemon: poll, verify, install, supervise, health-gate, report.",
        discussion: """
            Stops gracefully on SIGTERM or SIGINT. Apps keep running when the agent stops: they belong to PM2 (or the \
            builtin supervisor's daemon), not to this process.
            """
    )

    @OptionGroup var options: ConfigOptions

    func run() async throws {
        let (config, logger, runtime) = try options.makeRuntime()
        // Before anything speaks for this agent: a copy of another machine's enrolment stops here (status 78).
        try await MachineCheck.enforce(config: config, logger: logger)
        logger.info(
            "agent starting",
            metadata: [
                "ferry.agent": "\(config.agentID)", "ferry.controller": "\(RedactedURL.redact(config.controllerURL))",
                "ferry.process_manager": "\(runtime.processManagerName)", "ferry.services": "\(config.services.joined(separator: ","))",
            ]
        )
        if config.allowInsecureHttp, let host = TransportRule.host(of: config.controllerURL), config.controllerURL.lowercased().hasPrefix("http://"),
            !TransportRule.isLoopback(host)
        {
            logger.warning(
                "plain HTTP to a controller that is not loopback, allowed by allowInsecureHttp: the token and releases travel unencrypted",
                metadata: ["ferry.controller": "\(RedactedURL.redact(config.controllerURL))"]
            )
        }
        if let problem = config.tokenFileExposure() {
            logger.warning("\(problem)", metadata: ["ferry.token_file": "\(config.tokenFile)"])
        }
        let reports = ReportTrigger()
        let group = ServiceGroup(
            configuration: .init(
                services: [
                    .init(service: PollService(runtime: runtime, reports: reports)),
                    .init(service: ReportService(runtime: runtime, reports: reports)),
                ],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger
            )
        )
        try await group.run()
    }
}
