import ArgumentParser
import Shared

/// `ferry-agent check-machine`: is this the machine the agent was enrolled on? For scripts: the cloud-init bootstrap
/// asks it at every boot and enrols a copy afresh.
struct CheckMachineCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-machine",
        abstract: "Check that this is the machine the agent was enrolled on (not a copy of its state from an image).",
        discussion: """
            Compares this machine's identity (the config's machineIdentity: machine-id, ec2 or none) with the one recorded \
            in <state-dir>/machine.json at enrolment. Exit status: 0 this machine (or nothing recorded yet, or the check \
            is off), 78 another machine (a copy: `run` and `once` refuse to start), 1 cannot tell (the identity or the \
            record could not be read). Changes nothing.
            """
    )

    @OptionGroup var options: ConfigOptions

    func run() async throws {
        let config = try AgentConfig.load(from: options.config)
        let layout = AgentLayout(stateDir: config.stateDir)
        let outcome: MachineCheck.Outcome
        do {
            outcome = try await MachineCheck.check(layout: layout, reader: MachineIdentityReader(configuration: config.machineIdentityReader))
        } catch {
            printError("cannot tell: \(error)")
            throw ExitCode(1)
        }
        let summary = MachineCheck.summary(outcome, layout: layout)
        guard summary.problem else {
            print(summary.text)
            return
        }
        printError(summary.text)
        if case .otherMachine = outcome { throw ExitCode(MachineCheck.copyExitStatus) }
        throw ExitCode(1)
    }
}
