import ArgumentParser
import Logging
import Shared

/// `ferry-agent once`: one full pass, for scripts and first boots.
struct OnceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "once",
        abstract: "Run one full pass and exit: 0 when this instance runs the desired state, 1 with the reasons otherwise.",
        discussion: "Fetches the desired state (no long-poll), installs what changed, repairs drift, reports once."
    )

    @OptionGroup var options: ConfigOptions

    func run() async throws {
        let (config, logger, runtime) = try options.makeRuntime()
        try await MachineCheck.enforce(config: config, logger: logger)
        try await runtime.reconciler.prepare()
        var desired: DesiredState?
        var problems: [String] = []
        do {
            if case .changed(let state, _) = try await runtime.client.desiredState(agentID: config.agentID, etag: nil, wait: 0) {
                desired = state
            }
            await runtime.reconciler.noteControllerContact(failure: nil)
        } catch {
            problems.append("\(error)")
            await runtime.reconciler.noteControllerContact(failure: "\(error)")
        }
        await runtime.refreshTrust(for: desired)
        let summary = await runtime.reconciler.pass(desired: desired)
        problems += summary.problems
        do {
            try await runtime.client.report(await runtime.reconciler.statusReport(hostname: AgentRuntime.hostname()), agentID: config.agentID)
        } catch {
            problems.append("status report not delivered: \(error)")
        }
        problems += await runtime.reconciler.convergenceProblems()
        var seen: Set<String> = []
        let unique = problems.filter { seen.insert($0).inserted }
        if unique.isEmpty {
            print("converged")
            return
        }
        for problem in unique { printError("not converged: \(runtime.secrets.apply(problem))") }
        throw ExitCode(1)
    }
}
