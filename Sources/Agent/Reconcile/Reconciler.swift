import Logging
import Shared

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Runs passes of the agent loop: evaluate the desired state, plan, act, repair drift (DESIGN §3).
///
/// All state that changes across awaits lives here; it is saved atomically after every change. One service failing
/// never stops the others, and nothing that runs is touched because of a refused release.
actor Reconciler {
    struct Configuration: Sendable {
        var services: [String]
        var namespace: String
        var envDir: String
        /// Extracted releases kept per service besides the applied, previous and pending ones.
        var keepReleases: Int
    }

    /// How a pass went.
    struct PassSummary: Sendable, Equatable {
        /// Something changed (install, rollback, repair, refusal): worth an immediate report.
        var changed = false
        /// Problems that stop the instance from matching the desired state, one sentence each.
        var problems: [String] = []
        /// Every service runs the desired serial, healthy.
        var converged = false
    }

    let configuration: Configuration
    let layout: AgentLayout
    let files: ReleaseFiles
    let store: StateStore
    let processManager: any ProcessManager
    let processManagerName: String
    let evaluator: DesiredStateEvaluator
    let fetcher: ArtifactFetcher
    let extractor: ArchiveExtractor
    let healthGate: HealthGate
    /// The instance env values, masked in everything this agent reports, saves as a message or logs.
    let secrets: InstanceSecrets
    let logger: Logger

    private(set) var state = AgentState()
    private var lastDecisions: DesiredStateEvaluator.Result?
    private var health: [String: HealthState] = [:]
    private var lastTable: [ManagedProcess] = []

    init(
        configuration: Configuration,
        layout: AgentLayout,
        processManager: any ProcessManager,
        processManagerName: String,
        evaluator: DesiredStateEvaluator,
        fetcher: ArtifactFetcher,
        extractor: ArchiveExtractor,
        healthGate: HealthGate,
        secrets: InstanceSecrets,
        logger: Logger
    ) {
        self.configuration = configuration
        self.layout = layout
        self.files = ReleaseFiles(layout: layout)
        self.store = StateStore(path: layout.stateFile)
        self.processManager = processManager
        self.processManagerName = processManagerName
        self.evaluator = evaluator
        self.fetcher = fetcher
        self.extractor = extractor
        self.healthGate = healthGate
        self.secrets = secrets
        self.logger = logger
    }

    // MARK: - Start

    /// Loads the state, removes crash leftovers and undoes an install a crash interrupted: `current` goes back to the
    /// applied release (the interrupted serial stays accepted and is installed again by the next pass).
    func prepare() async throws {
        try files.createDirectories(services: configuration.services)
        for service in configuration.services {
            if let env = try? InstanceEnvFile.load(service: service, directory: configuration.envDir) {
                secrets.update(service: service, values: env.values)
            }
        }
        state = try store.load()
        let pendingDigests = Set(state.services.values.compactMap { $0.pending?.sha256 })
        files.removeLeftovers(services: configuration.services, keepDigests: pendingDigests)
        for service in configuration.services {
            guard let pending = state[service].pending else { continue }
            logger.info("recovering an interrupted install", metadata: ["ferry.service": "\(service)", "ferry.serial": "\(pending.serial)"])
            if let applied = state[service].applied {
                try files.switchCurrent(service, to: applied.directoryName)
                if let apps = try? appSpecs(for: applied, service: service) {
                    try? files.writeEcosystem(service, bytes: EcosystemWriter.render(apps: apps, namespace: configuration.namespace))
                    _ = await apply(apps, service: service, needsRefresh: true, previousNames: [])
                }
            }
            // With nothing applied before, `current` stays on the pending tree (complete: extraction is staged and
            // renamed) until the install runs again.
            state[service].phase = .deploying
            state[service].message = "serial \(pending.serial) was interrupted by a restart of the agent; installing it again"
            try store.save(state)
        }
    }

    // MARK: - Pass

    /// One pass. `desired` is `nil` when the controller could not be reached: then only drift is repaired.
    func pass(desired: DesiredState?) async -> PassSummary {
        var summary = PassSummary()
        let table: [ManagedProcess]
        do {
            table = try await processManager.processes()
        } catch {
            summary.problems.append("cannot read the \(processManagerName) process table: \(error)")
            return summary
        }
        lastTable = table

        var envs: [String: InstanceEnvFile] = [:]
        for service in configuration.services {
            do {
                let env = try InstanceEnvFile.load(service: service, directory: configuration.envDir)
                envs[service] = env
                secrets.update(service: service, values: env.values)
            } catch {
                summary.problems.append("\(service): \(error)")
            }
        }

        let decisions = desired.map { evaluator.evaluate($0, state: state) }
        if let decisions {
            lastDecisions = decisions
            for refusal in decisions.foreign {
                logger.info(
                    "refused a release for a service this instance does not run",
                    metadata: ["ferry.service": "\(refusal.service ?? "?")", "ferry.reason": "\(refusal.reason)"]
                )
            }
        }

        var appliedApps: [String: [AppSpec]] = [:]
        for service in configuration.services {
            guard let applied = state[service].applied, let env = envs[service] else { continue }
            do {
                appliedApps[service] = try AppSpec.specs(
                    for: applied.release(),
                    currentLink: layout.currentLink(service),
                    instanceEnv: env.values
                )
            } catch {
                summary.problems.append("\(service): the applied release cannot be read back: \(error)")
            }
        }

        let actions = Planner.plan(
            Planner.Input(
                decisions: decisions,
                // Only the services configured here: a service removed from the config has its apps removed as orphans.
                state: AgentState(version: state.version, services: state.services.filter { configuration.services.contains($0.key) }),
                observed: table,
                appliedApps: appliedApps,
                envDigests: envs.mapValues(\.digest)
            )
        )
        for action in actions {
            await execute(action, envs: envs, appliedApps: appliedApps, summary: &summary)
        }
        if actions.contains(where: { if case .refuse = $0 { return false } else { return true } }) {
            try? await processManager.save()
        }
        await refreshHealth()
        summary.converged = summary.problems.isEmpty && convergenceProblems().isEmpty
        return summary
    }

    private func execute(
        _ action: AgentAction,
        envs: [String: InstanceEnvFile],
        appliedApps: [String: [AppSpec]],
        summary: inout PassSummary
    ) async {
        switch action {
        case .refuse(let service, let serial, let reason):
            let before = state[service].failures
            state[service].recordFailure(serial: serial ?? 0, reason: reason, kind: "refused")
            if state[service].failures != before {
                summary.changed = true
                state[service].message = "refused serial \(serial.map(String.init) ?? "?"): \(reason)"
                logger.info(
                    "release refused",
                    metadata: ["ferry.service": "\(service)", "ferry.serial": "\(serial ?? 0)", "ferry.reason": "\(reason)"]
                )
                save(&summary)
            }
        case .install(let service, let release, let payload):
            summary.changed = true
            guard let env = envs[service] else {
                summary.problems.append("\(service): serial \(release.serial) waits for a readable instance env file")
                return
            }
            await install(release, payload: payload, service: service, env: env, otherApps: appliedApps, summary: &summary)
        case .refreshEnvironment(let service):
            summary.changed = true
            guard let env = envs[service], var applied = state[service].applied, let apps = appliedApps[service] else { return }
            do {
                try files.writeEcosystem(service, bytes: EcosystemWriter.render(apps: apps, namespace: configuration.namespace))
            } catch {
                summary.problems.append("\(service): cannot write the ecosystem file: \(error)")
                return
            }
            if let failure = await apply(apps, service: service, needsRefresh: true, previousNames: []) {
                summary.problems.append("\(service): reload after an env change failed: \(failure)")
                return
            }
            applied.envDigest = env.digest
            state[service].applied = applied
            state[service].message = "reloaded serial \(applied.serial) with a changed instance env file"
            save(&summary)
        case .repair(let service, let app, let appAction):
            summary.changed = true
            logger.info("repairing drift", metadata: ["ferry.service": "\(service)", "ferry.app": "\(app.name)", "ferry.action": "\(appAction)"])
            if let failure = await perform(appAction, app: app, service: service) {
                summary.problems.append("\(service): repairing \(app.name) (\(appAction)) failed: \(failure)")
            }
        case .removeOrphan(let name):
            summary.changed = true
            logger.info("removing an app no release here runs", metadata: ["ferry.app": "\(name)"])
            do {
                try await processManager.delete(appNamed: name)
            } catch {
                summary.problems.append("removing \(name) failed: \(error)")
            }
        }
    }

    // MARK: - Install

    private func install(
        _ release: Release,
        payload: [UInt8],
        service: String,
        env: InstanceEnvFile,
        otherApps: [String: [AppSpec]],
        summary: inout PassSummary
    ) async {
        let serial = release.serial
        let metadata: Logger.Metadata = ["ferry.service": "\(service)", "ferry.serial": "\(serial)", "artifact.sha256": "\(release.artifact.sha256)"]
        for (other, apps) in otherApps where other != service {
            if let clash = apps.first(where: { app in release.pm2.apps.contains { $0.name == app.name } }) {
                refuse(
                    service,
                    serial: serial,
                    reason: "app name \(clash.name) is already used by service \(other) on this instance",
                    summary: &summary
                )
                return
            }
        }
        let directoryName = AgentLayout.releaseDirectoryName(serial: serial, sha256: release.artifact.sha256)
        let candidate = AppliedRelease(
            serial: serial,
            version: release.version,
            sha256: release.artifact.sha256.hex,
            directoryName: directoryName,
            payload: payload,
            envDigest: env.digest
        )
        // Accept first: from here on no serial at or below this one is installed, whatever happens next.
        state[service].highestAcceptedSerial = max(state[service].highestAcceptedSerial ?? 0, serial)
        state[service].pending = candidate
        state[service].phase = .deploying
        state[service].message = "deploying serial \(serial) (\(release.version))"
        save(&summary)
        logger.info("installing release", metadata: metadata)

        // Download and extract: nothing running is touched until both succeeded.
        if !files.releaseExists(service, directoryName: directoryName) {
            do {
                let artifact = try await fetcher.fetch(release.artifact)
                _ = try await extractor.extract(artifact.path, into: layout.releaseDir(service, directoryName: directoryName))
            } catch {
                // Transient or not, the release stays pending and the next pass tries again; `current` is unchanged.
                state[service].phase = state[service].applied == nil ? .failed : .running
                state[service].message = "serial \(serial) (\(release.version)) not installed yet: \(error)"
                summary.problems.append("\(service): \(error)")
                logger.info("release download or extraction failed", metadata: metadata.merging(["ferry.reason": "\(error)"]) { $1 })
                save(&summary)
                return
            }
        }

        let apps = AppSpec.specs(for: release, currentLink: layout.currentLink(service), instanceEnv: env.values)
        let previous = state[service].applied
        let previousApps = (try? previous.map { try appSpecs(for: $0, service: service) }) ?? nil
        do {
            try files.writeEcosystem(service, bytes: EcosystemWriter.render(apps: apps, namespace: configuration.namespace))
            try files.switchCurrent(service, to: directoryName)
        } catch {
            summary.problems.append("\(service): cannot activate serial \(serial): \(error)")
            state[service].message = "serial \(serial) could not be activated: \(error)"
            save(&summary)
            return
        }

        var outcome: HealthGate.Outcome
        if let failure = await apply(apps, service: service, needsRefresh: true, previousNames: Set((previousApps ?? []).map(\.name))) {
            outcome = Task.isCancelled ? .interrupted : .unhealthy(reason: failure)
        } else {
            try? await processManager.save()
            let health = release.health.resolved(against: release, instanceEnv: env.values)
            outcome = await healthGate.watch(apps: apps, health: health, processManager: processManager)
        }

        switch outcome {
        case .interrupted:
            // Shutting down mid-install: no verdict. The release stays pending; the next start goes back to the
            // applied release and installs this one again.
            logger.info("install interrupted by shutdown", metadata: metadata)
        case .healthy:
            state[service].previous = previous
            state[service].applied = candidate
            state[service].pending = nil
            state[service].phase = .running
            state[service].message = "serial \(serial) (\(release.version)) is running and healthy"
            health[service] = .healthy
            save(&summary)
            logger.info("release healthy", metadata: metadata)
            collectGarbage()
        case .unhealthy(let reason):
            logger.info("release unhealthy, rolling back", metadata: metadata.merging(["ferry.reason": "\(reason)"]) { $1 })
            await rollBack(
                service: service,
                failed: candidate,
                reason: reason,
                to: previous,
                previousApps: previousApps,
                newApps: apps,
                summary: &summary
            )
        }
    }

    private func rollBack(
        service: String,
        failed: AppliedRelease,
        reason: String,
        to previous: AppliedRelease?,
        previousApps: [AppSpec]?,
        newApps: [AppSpec],
        summary: inout PassSummary
    ) async {
        state[service].recordFailure(serial: failed.serial, reason: reason, kind: "rolled-back")
        state[service].pending = nil
        health[service] = .unhealthy
        if let previous, let previousApps {
            do {
                try files.switchCurrent(service, to: previous.directoryName)
                try files.writeEcosystem(service, bytes: EcosystemWriter.render(apps: previousApps, namespace: configuration.namespace))
            } catch {
                summary.problems.append("\(service): rollback could not switch back: \(error)")
            }
            if let failure = await apply(previousApps, service: service, needsRefresh: true, previousNames: Set(newApps.map(\.name))) {
                summary.problems.append("\(service): re-applying serial \(previous.serial) failed: \(failure)")
            }
            try? await processManager.save()
            state[service].phase = .rolledBack
            state[service].message =
                "serial \(failed.serial) (\(failed.version)) failed and was rolled back to serial \(previous.serial) (\(previous.version)): \(reason)"
        } else {
            for app in newApps { try? await processManager.delete(appNamed: app.name) }
            try? await processManager.save()
            files.removeCurrent(service)
            state[service].phase = .failed
            state[service].message = "serial \(failed.serial) (\(failed.version)) failed and there is no earlier release to roll back to: \(reason)"
        }
        summary.problems.append("\(service): \(state[service].message)")
        save(&summary)
    }

    private func refuse(_ service: String, serial: Int64, reason: String, summary: inout PassSummary) {
        state[service].recordFailure(serial: serial, reason: reason, kind: "refused")
        state[service].message = "refused serial \(serial): \(reason)"
        summary.problems.append("\(service): \(reason)")
        save(&summary)
    }

    /// Applies `apps` (and deletes `previousNames` that are no longer wanted); returns the first failure.
    private func apply(_ apps: [AppSpec], service: String, needsRefresh: Bool, previousNames: Set<String>) async -> String? {
        let table: [ManagedProcess]
        do {
            table = try await processManager.processes()
        } catch {
            return "cannot read the process table: \(error)"
        }
        var failures: [String] = []
        for app in apps {
            let action = AppAction.decide(desired: app, observed: table.filter { $0.name == app.name }, needsRefresh: needsRefresh)
            if let failure = await perform(action, app: app, service: service) { failures.append("\(app.name): \(failure)") }
        }
        let wanted = Set(apps.map(\.name))
        for name in previousNames.subtracting(wanted) where table.contains(where: { $0.name == name }) {
            do {
                try await processManager.delete(appNamed: name)
            } catch {
                failures.append("\(name): delete failed: \(error)")
            }
        }
        return failures.isEmpty ? nil : failures.joined(separator: "; ")
    }

    /// Carries out one app action; returns the failure, if any.
    private func perform(_ action: AppAction, app: AppSpec, service: String) async -> String? {
        let ecosystem = layout.ecosystemFile(service)
        do {
            switch action {
            case .none: break
            case .start: try await processManager.start(app, ecosystem: ecosystem)
            case .reload: try await processManager.reload(app, ecosystem: ecosystem)
            case .replace(let reason):
                logger.info("replacing app (costs a restart)", metadata: ["ferry.app": "\(app.name)", "ferry.reason": "\(reason)"])
                try await processManager.delete(appNamed: app.name)
                try await processManager.start(app, ecosystem: ecosystem)
            case .delete: try await processManager.delete(appNamed: app.name)
            case .restart: try await processManager.restart(appNamed: app.name)
            }
            return nil
        } catch {
            return "\(error)"
        }
    }

    /// Records how the last poll of the controller went (`failure` is `nil` when it succeeded), for
    /// `ferry-agent status`. Saved only when it changes.
    func noteControllerContact(failure: String?) {
        let before = state.controllerProblem
        if let failure {
            guard before?.message != failure else { return }
            state.controllerProblem = ControllerProblem(message: failure, since: before?.since ?? Date())
        } else {
            guard before != nil else { return }
            state.controllerProblem = nil
        }
        var summary = PassSummary()
        save(&summary)
    }

    // MARK: - Reporting helpers

    /// Re-reads the table after the pass's actions and derives each service's health from it.
    private func refreshHealth() async {
        guard let table = try? await processManager.processes() else { return }
        lastTable = table
        for service in configuration.services where state[service].pending == nil {
            guard let applied = state[service].applied, let apps = try? appSpecs(for: applied, service: service) else {
                health[service] = .unknown
                continue
            }
            switch ProcessTableCheck(evaluating: table, against: apps) {
            case .allOnline: health[service] = .healthy
            case .failed: health[service] = .unhealthy
            case .pending: health[service] = .unknown
            }
        }
    }

    /// Why the instance does not (yet) run exactly the desired state; empty when it does.
    func convergenceProblems() -> [String] {
        guard let decisions = lastDecisions else { return ["no desired state received from the controller yet"] }
        var problems: [String] = []
        for service in configuration.services {
            let serviceState = state[service]
            switch decisions.decisions[service] {
            case nil:
                problems.append("\(service): the controller has no release for this service yet")
                continue
            case .skipFailed(let serial)?:
                problems.append("\(service): serial \(serial) failed here and is not retried: \(serviceState.message)")
                continue
            case .refuse(let serial, let reason)?:
                problems.append("\(service): serial \(serial.map(String.init) ?? "?") refused: \(reason)")
                continue
            case .install(let release, _)?:
                if serviceState.applied?.serial != release.serial {
                    problems.append("\(service): serial \(release.serial) is not installed: \(serviceState.message)")
                    continue
                }
            case .keep?:
                break
            }
            if serviceState.pending != nil { problems.append("\(service): an install is still pending") }
            if health[service] != .healthy { problems.append("\(service): not healthy (\(serviceState.message))") }
        }
        return problems
    }

    /// The status report for the controller.
    func statusReport(hostname: String) -> StatusReport {
        var appNames: [String: Set<String>] = [:]
        var targets: [String: Int64] = [:]
        for service in configuration.services {
            if let applied = state[service].applied, let release = try? applied.release() {
                appNames[service] = Set(release.pm2.apps.map(\.name))
            }
            if let pending = state[service].pending, let release = try? pending.release() {
                appNames[service, default: []].formUnion(release.pm2.apps.map(\.name))
            }
            switch lastDecisions?.decisions[service] {
            case .install(let release, _)?: targets[service] = release.serial
            case .skipFailed(let serial)?: targets[service] = serial
            default: break
            }
        }
        return StatusReportBuilder.report(
            services: configuration.services,
            state: state,
            table: lastTable,
            appNames: appNames,
            health: health,
            targetSerials: targets,
            hostname: hostname,
            processManager: processManagerName,
            mask: secrets.mask
        )
    }

    // MARK: - Helpers

    private func appSpecs(for applied: AppliedRelease, service: String) throws -> [AppSpec] {
        let env = try InstanceEnvFile.load(service: service, directory: configuration.envDir)
        return AppSpec.specs(for: try applied.release(), currentLink: layout.currentLink(service), instanceEnv: env.values)
    }

    private func collectGarbage() {
        var keepDigests: Set<String> = []
        for service in configuration.services {
            let serviceState = state[service]
            let protected = [serviceState.applied, serviceState.previous, serviceState.pending].compactMap { $0 }
            keepDigests.formUnion(protected.map(\.sha256))
            files.collectReleases(service, protected: Set(protected.map(\.directoryName)), keep: configuration.keepReleases)
        }
        files.collectArtifacts(keep: keepDigests)
    }

    private func save(_ summary: inout PassSummary) {
        // Messages quote errors from the process manager, apps and the network: no instance secret is kept in them.
        state.mask(with: secrets.mask)
        do {
            try store.save(state)
        } catch {
            summary.problems.append("cannot save the agent state: \(error)")
            logger.error("cannot save the agent state", metadata: ["ferry.reason": "\(error)"])
        }
    }
}
