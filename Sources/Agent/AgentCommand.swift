import ArgumentParser
import Glibc
import Shared

/// `ferry-agent`: the daemon on every instance, and its local commands.
@main
struct AgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ferry-agent",
        abstract: "Pull signed releases from a Ferry controller and run them under PM2 (or the builtin supervisor).",
        discussion: """
            The agent polls the controller for this instance's desired state, verifies every release against the \
            operator keys pinned in its config, downloads and extracts the artifact, switches the service's \
            `current` release, makes the process manager's table match, checks health, rolls back on its own when a \
            release fails, and reports to the controller.

            Typical set-up: `ferry-agent enroll ...` once (writes the config and token), then `ferry-agent run` \
            under systemd (see deploy/systemd/ferry-agent.service).
            """,
        version: FerryVersion.current,
        subcommands: [
            EnrollCommand.self,
            RunCommand.self,
            OnceCommand.self,
            AgentStatusCommand.self,
            CheckMachineCommand.self,
            SupervisorCommand.self,
            FetchCommand.self,
        ]
    )

    /// Installs the agent's own executor (`PooledExecutor`: no once-a-second wake-up of libdispatch's pool monitor)
    /// before anything runs, then parses and runs the command. `FERRY_EXECUTOR=platform` keeps the runtime's own.
    static func main() async {
        let choice = getenv("FERRY_EXECUTOR").map { String(cString: $0) }
        if let warning = PooledExecutor.unrecognised(environment: choice) {
            let line = Array("ferry-agent: \(warning)\n".utf8)
            _ = line.withUnsafeBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
        }
        if !PooledExecutor.platformRequested(environment: choice) {
            PooledExecutor.installAsDefault()
        }
        await main(nil)
    }
}
