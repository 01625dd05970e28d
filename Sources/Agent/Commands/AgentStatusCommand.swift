import ArgumentParser
import Logging
import Shared

#if canImport(Glibc)
import Glibc
#endif

/// `ferry-agent status`: what this instance runs.
struct AgentStatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show, per service, the applied serial and version, the phase and the processes.",
        discussion: "Reads the local state and the process manager's table; does not contact the controller."
    )

    @OptionGroup var options: ConfigOptions

    @Flag(name: .long, help: "Print the status report as JSON (the document sent to the controller).")
    var json = false

    func run() async throws {
        let secrets = InstanceSecrets()
        let logger = options.makeLogger(secrets: secrets)
        let config = try AgentConfig.load(from: options.config)
        for service in config.services {
            if let env = try? InstanceEnvFile.load(service: service, directory: config.envDir) {
                secrets.update(service: service, values: env.values)
            }
        }
        let layout = AgentLayout(stateDir: config.stateDir)
        let state = try StateStore(path: layout.stateFile, services: config.services.count).load()
        let (processManager, name) = try AgentRuntime.makeProcessManager(
            config: config,
            layout: layout,
            logger: logger,
            repairs: false,
            startsDaemon: false
        )
        var table: [ManagedProcess] = []
        var tableError: String?
        do {
            table = try await processManager.processes()
        } catch {
            tableError = "\(error)"
        }
        var appNames: [String: Set<String>] = [:]
        for service in config.services {
            if let release = try? state[service].applied?.release() { appNames[service] = Set(release.pm2.apps.map(\.name)) }
        }
        let report = StatusReportBuilder.report(
            services: config.services,
            state: state,
            table: table,
            appNames: appNames,
            health: [:],
            targetSerials: [:],
            hostname: AgentRuntime.hostname(),
            processManager: name,
            mask: secrets.mask
        )
        if json {
            say(String(decoding: report.json.encoded(), as: UTF8.self))
            return
        }
        say("agent \(config.agentID) on \(report.hostname), process manager \(name), controller \(RedactedURL.redact(config.controllerURL))")
        if let problem = state.controllerProblem {
            say("controller problem since \(Timestamp.format(problem.since)): \(secrets.apply(problem.message))")
        }
        if let tableError { say("process table unavailable: \(secrets.apply(tableError))") }
        // Why a unit stopped with status 78 (a copy of another machine's enrolment), or that the check cannot tell.
        var machineReader = config.machineIdentityReader
        machineReader.attempts = 1
        do {
            let outcome = try await MachineCheck.check(layout: layout, reader: MachineIdentityReader(configuration: machineReader))
            let summary = MachineCheck.summary(outcome, layout: layout)
            if summary.problem { say("machine: \(summary.text)") }
        } catch {
            say("machine: \(error)")
        }
        for service in report.services {
            let running = service.serial.map { "serial \($0) (\(service.version ?? "?"))" } ?? "nothing installed"
            say("")
            say("\(service.service): \(running), phase \(service.phase.rawValue)")
            say("  \(service.message)")
            for failure in service.failures.prefix(3) {
                say("  \(failure.kind) serial \(failure.serial): \(failure.reason)")
            }
            for process in service.processes {
                let uptime = process.uptimeSeconds.map { "\($0)s" } ?? "-"
                let memory = "\(process.memoryBytes / (1 << 20)) MiB"
                say("  \(process.name) [\(process.pmId)] \(process.status) restarts \(process.restarts) uptime \(uptime) mem \(memory)")
            }
        }
    }
}

/// Writes a line to standard output, any control sequence in it escaped (`TerminalText`): a status quotes what the
/// apps wrote (a health check's answer in a failure's reason).
func say(_ line: String) {
    print(TerminalText.safe(line))
}

/// Writes a line to standard error, escaped as `say` does.
func printError(_ line: String) {
    var stream = StandardError()
    print(TerminalText.safe(line), to: &stream)
}

/// `TextOutputStream` over file descriptor 2.
struct StandardError: TextOutputStream {
    mutating func write(_ string: String) {
        var bytes = Array(string.utf8)
        bytes.withUnsafeMutableBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let n = Glibc.write(2, buffer.baseAddress! + offset, buffer.count - offset)
                if n <= 0 { break }
                offset += n
            }
        }
    }
}
