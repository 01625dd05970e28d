import Logging
import Shared

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

/// Runs passes of the agent loop: evaluate the desired state, plan, act, repair drift (DESIGN §3).
///
/// All state that changes across awaits lives here; it is saved atomically after every change. A service's state
/// changes only through its state machine (`ServiceState.handle(_:)`, called from `transition(_:_:summary:)`); the
/// install steps are in `Reconciler+Install.swift`, the process manager calls in `Reconciler+Apply.swift`. One service
/// failing never stops the others, and nothing that runs is touched because of a refused release.
actor Reconciler {
    struct Configuration: Sendable {
        var services: [String]
        var namespace: String
        var envDir: String
        /// Extracted releases kept per service besides the applied, previous and pending ones.
        var keepReleases: Int
        /// Test-only (`FERRY_TEST_PAUSE_BEFORE_ROLLBACK`): once a failed release's verdict is saved, the agent stops
        /// there until it is killed, so a crash test can land in the middle of taking it out.
        var pausesBeforeTakingOut = false
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
    /// Changes only through `updateTrust(_:)`, between passes.
    private(set) var evaluator: DesiredStateEvaluator
    let fetcher: ArtifactFetcher
    let extractor: ArchiveExtractor
    let healthGate: HealthGate
    /// The instance env values, masked in everything this agent reports, saves as a message or logs.
    let secrets: InstanceSecrets
    let logger: Logger

    private(set) var state = AgentState()
    /// Whether the last save of `state` failed: the pass tries again at its end.
    private(set) var unsaved = false
    /// Services whose `current` link or ecosystem file could not be put back to their applied release
    /// (`Reconciler+FileSync`).
    var filesOutOfSync: Set<String> = []
    /// Per service and app, env variables its last ecosystem file dropped that the running process may still have
    /// (`Reconciler+Environment`).
    var removedEnvironment: [String: [String: Set<String>]] = [:]
    /// Per service and app, PM2 options its last ecosystem file no longer sets that the running app may still have
    /// (`Reconciler+Environment`).
    var removedOptions: [String: [String: Set<String>]] = [:]
    private var lastDecisions: DesiredStateEvaluator.Result?
    /// The trust root as the status report states it (`AgentTrust.Snapshot.report`).
    private var trustReport: TrustRootStatus?
    /// The app processes last seen in the table, to find those a dead daemon left running (`ProcessLedger`).
    let ledger: ProcessLedger
    var recordedProcesses: [ProcessLedger.Entry] = []
    /// What was repaired behind the process manager's back this pass, per service: reported at the end of the pass.
    var repairs: [String: [String]] = [:]
    /// How soon each app may be repaired again (an app that keeps crashing is not restarted on every pass).
    var repairBackoff = RepairBackoff()
    /// Per service, the env refresh that failed for some apps: the env file's digest and the apps still to reload with
    /// it (`Reconciler+Environment`).
    var failedRefreshes: [String: FailedRefresh] = [:]
    /// How soon each service's serial whose download or extraction failed is tried again (keyed by `installAttempt`):
    /// a digest or size that never matches, an archive the extractor refuses (`InstallError.repeatsTheSameWay`). Each pass
    /// with a problem runs one poll interval after the last, and each downloaded the artifact (or extracted it from the
    /// cache, fsyncs and all) again, until a new serial was published.
    /// The waits are spread by up to a quarter (`RepairBackoff.Policy.jitter`): every agent that got the release from
    /// one publish failed within the same second, and came back to the store together every time.
    var installBackoff = RepairBackoff(
        policy: .init(first: .seconds(10), maximum: .seconds(300), forgetAfter: .seconds(3600), jitter: 0.25)
    )
    /// How long a serial the agent refused (its bytes did not match twice, its archive is refused) waits before it is
    /// tried again: 30 minutes, spread by `installBackoff`'s jitter; under `installBackoff`'s `forgetAfter`.
    static let refusedWait = Duration.seconds(1800)
    /// Per service, the serial whose artifact's last download brought other bytes than it signed (`InstallError
    /// .isTheReleasesFaultOnceRepeated`). One download that does not match may be the path's fault (a proxy or a cache
    /// that served a damaged copy once, an object being replaced): it is tried again after the backoff, and only a second
    /// one in a row refuses the serial, which its rollout counts as a failure.
    var mismatchedDownloads: [String: Int64] = [:]
    /// Per service, the serial whose tree did not fit, with where and how much space its extraction needs: it is not
    /// extracted again until that much is free. Each pass filled the file system to its last byte again (the apps' logs,
    /// PM2's dump and the agent's own state meeting ENOSPC meanwhile), once a poll interval, until space was freed.
    var spaceWaits: [String: SpaceWait] = [:]
    /// How soon a service's failed env refresh is tried again (keyed by service).
    var refreshBackoff = RepairBackoff()
    /// Each service's health as last judged (by the health gate of an install, or from the table after a pass).
    var health: [String: HealthState] = [:]
    /// Services whose release restored by a rollback failed its own health gate while its processes stayed online (an
    /// HTTP check answering 500), with those processes' pids by pm_id: the table cannot see what the gate saw, so the
    /// gate's verdict stands until those processes change (a restart, a repair, an install).
    var failedGateProcesses: [String: [Int: Int32]] = [:]
    /// When a health gate's table last judged the other services (`observeDuringGate`).
    var lastGateObservation: ContinuousClock.Instant?
    /// Sends a status report now (the poll loop's trigger), for news the rest of a pass would hold back.
    private(set) var reportHook: (@Sendable () -> Void)?
    /// Apps the process manager keeps restarting while the table shows them online (`RestartWatch`).
    var restartWatch = RestartWatch()
    /// Each service's apps in a crash loop at the last look: the service is unhealthy and its report says why.
    var crashLoops: [String: [RestartWatch.Loop]] = [:]
    private var lastTable: [ManagedProcess] = []
    /// Services no longer configured that left files, with their directory as named and resolved, found at start (the
    /// configuration is read once) and cleared by the first pass whose table shows no process running from them
    /// (`removeUnconfiguredServices`).
    private var unconfiguredServices: [(service: String, directories: [String])] = []
    /// Why the process table could not be read at the last try (`nil`: it could): each service's report says it.
    private(set) var tableProblem: String?
    /// Newer serials offered while a pass runs (`supersede(with:)`), read by the health gates between looks.
    let supersessions = Supersessions()

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
        self.store = StateStore(path: layout.stateFile, services: configuration.services.count)
        self.ledger = ProcessLedger(path: layout.processLedgerFile, logger: logger)
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
            if let values = InstanceEnvFile.valuesToMask(service: service, directory: configuration.envDir) {
                secrets.update(service: service, values: values)
            }
        }
        state = try store.load()
        recordedProcesses = ledger.load()
        loadOwed()
        let pendingDigests = Set(state.services.values.compactMap { $0.pending?.sha256 })
        files.removeLeftovers(services: configuration.services, keepDigests: pendingDigests)
        await collectGarbage()
        unconfiguredServices = files.unconfiguredServices(configured: configuration.services).map { service in
            let directory = layout.serviceDir(service)
            var resolved = directory
            if let real = realpath(directory, nil) {
                resolved = String(cString: real)
                free(real)
            }
            return (service, [directory, resolved])
        }
        var summary = PassSummary()
        noteFilesOutOfSync()
        for service in configuration.services {
            guard let pending = state[service].pending else { continue }
            logger.info("recovering an interrupted install", metadata: ["ferry.service": "\(service)", "ferry.serial": "\(pending.serial)"])
            guard let action = transition(service, .installResumed, summary: &summary) else { continue }
            // Never an app another service's applied release runs under the same name.
            let othersApps = Set(
                configuration.services.filter { $0 != service }.compactMap { try? state[$0].applied?.release() }.flatMap {
                    $0.pm2.apps.map(\.name)
                }
            )
            if case .restore(let applied) = action {
                // The interrupted release's own apps (those the applied release does not run) go too: they would
                // otherwise run beside the restored release, from its files, until the install is retried.
                let interrupted = Set((try? pending.release().pm2.apps.map(\.name)) ?? [])
                await restore(applied, service: service, removing: interrupted.subtracting(othersApps))
            } else if case .removeFailedRelease(let failed) = action {
                // It had failed with nothing to go back to, and the agent stopped while taking it out: its apps go now,
                // by name (their specs need the instance env file, which may not be readable now).
                let names = (try? failed.release().pm2.apps.map(\.name)) ?? []
                await remove(names.filter { !othersApps.contains($0) }, service: service)
            }
            // A save that fails (a full disk) is retried at the end of every pass, as any other: throwing here ended the
            // agent, whose restart restored and reloaded every app again, every few seconds while the disk stayed full.
            save(&summary)
        }
    }

    /// Points `current` back at `applied` and applies its apps again, deleting those of `removing` it does not run (best
    /// effort: the next pass repairs drift). Files that cannot be put back are noted and retried by every pass, and the
    /// apps are left as they run until then.
    private func restore(_ applied: AppliedRelease, service: String, removing: Set<String>) async {
        guard let apps = try? appSpecs(for: applied, service: service) else {
            // The instance env file cannot be read now: `current` goes back at least, the ecosystem at the first pass
            // that reads it.
            try? files.switchCurrent(service, to: applied.directoryName)
            filesOutOfSync.insert(service)
            return
        }
        guard restoreFiles(service, to: applied, apps: apps).isEmpty else { return }
        do {
            try await apply(apps, service: service, needsRefresh: true, previousNames: removing)
        } catch {
            logger.info("re-applying the applied release failed", metadata: ["ferry.service": "\(service)", "ferry.reason": "\(error)"])
            // Processes of the same names may run the interrupted release's code: reloaded from the files at the first pass.
            filesOutOfSync.insert(service)
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
            summary.problems.append(tableUnreadable(error, summary: &summary))
            return summary
        }
        tableReadAgain(summary: &summary)
        lastTable = table
        repairs = [:]
        let stoppedOrphans = await !settleProcesses(table).isEmpty
        if stoppedOrphans { summary.changed = true }
        if !unconfiguredServices.isEmpty { await removeUnconfiguredServices(table: table) }

        var envs: [String: InstanceEnvFile] = [:]
        for service in configuration.services {
            do {
                let applied = state[service].applied?.envDigest
                let env = try InstanceEnvFile.load(service: service, directory: configuration.envDir, applied: applied).continuing(applied)
                envs[service] = env
                secrets.update(service: service, values: env.values)
            } catch {
                summary.problems.append("\(service): \(error)")
            }
        }

        let decisions = desired.map { evaluator.evaluate($0, state: state) }
        if let decisions {
            lastDecisions = decisions
            // The applied serial offered again over a pending one: the pending install is given up, or it would stay
            // pending for ever (its health frozen, every restart reloading the service's apps to resume it).
            for (service, decision) in decisions.decisions where decision == .keep && state[service].pending != nil {
                if transition(service, .installWithdrawn, summary: &summary) != nil { save(&summary) }
            }
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

        if await resyncFiles(appliedApps: appliedApps, envs: envs, summary: &summary) {
            // Reloaded from the files put back: the table read at the start of the pass is stale, the next pass plans.
            try? await processManager.save()
            reportRepairs(summary: &summary)
            if unsaved { save(&summary) }
            return summary
        }

        let waiting = refreshesWaiting(envs: envs, summary: &summary)
        let actions = Planner.plan(
            Planner.Input(
                decisions: decisions,
                // Only the services configured here: a service removed from the config has its apps removed as orphans.
                state: AgentState(version: state.version, services: state.services.filter { configuration.services.contains($0.key) }),
                observed: table,
                appliedApps: appliedApps,
                envDigests: envs.mapValues(\.digest),
                refreshesWaiting: waiting,
                refreshesOwed: Set(envs.filter { refreshOwed($0.key, env: $0.value) }.keys).subtracting(waiting),
                services: Set(configuration.services)
            )
        )
        var touchedProcesses = false
        for action in actions where !waitsForFiles(action) {
            guard await execute(action, envs: envs, appliedApps: appliedApps, summary: &summary) else { continue }
            touchedProcesses = true
        }
        if touchedProcesses {
            try? await processManager.save()
        }
        reportRepairs(summary: &summary)
        if unsaved { save(&summary) }
        // An idle pass (nothing started, stopped or installed) judges health from the table it began with: one
        // process-manager round trip a pass instead of two.
        if await refreshHealth(unchanged: touchedProcesses || stoppedOrphans ? nil : table) { summary.changed = true }
        summary.converged = summary.problems.isEmpty && convergenceProblems().isEmpty
        return summary
    }

    /// Carries out one planned action; returns whether it may have changed the process table (then the pass saves it).
    private func execute(
        _ action: AgentAction,
        envs: [String: InstanceEnvFile],
        appliedApps: [String: [AppSpec]],
        summary: inout PassSummary
    ) async -> Bool {
        switch action {
        case .refuse(let service, let serial, let reason):
            guard transition(service, .releaseRefused(serial: serial, reason: reason), summary: &summary) == .save else { return false }
            summary.changed = true
            logger.info(
                "release refused",
                metadata: ["ferry.service": "\(service)", "ferry.serial": "\(serial ?? 0)", "ferry.reason": "\(reason)"]
            )
            save(&summary)
            return false
        case .install(let service, let release, let payload):
            if let wait = spaceWaits[service], wait.serial == release.serial, let free = wait.stillShort() {
                summary.problems.append(
                    "\(service): serial \(release.serial) waits for \(DiskSpace.megabytes(wait.wanted)) free on \(wait.path) to be "
                        + "extracted (\(DiskSpace.megabytes(free)) free)"
                )
                await keepApplied(service, apps: appliedApps[service] ?? [], env: envs[service], summary: &summary)
                return true
            }
            let applyWait = installBackoff.remainingWait(app: Self.applyAttempt(service, release.serial), now: .now)
            if let wait = installBackoff.remainingWait(app: Self.installAttempt(service, release.serial), now: .now) ?? applyWait {
                // Nothing of it runs, and the planner skipped the service's drift repair for the install.
                let what = applyWait == nil ? "could not be downloaded or extracted" : "could not be activated or applied"
                summary.problems.append("\(service): serial \(release.serial) \(what); tried again in \(max(1, wait.components.seconds)) s")
                await keepApplied(service, apps: appliedApps[service] ?? [], env: envs[service], summary: &summary)
                return true
            }
            guard let env = envs[service] else {
                summary.changed = true
                summary.problems.append("\(service): serial \(release.serial) waits for a readable instance env file")
                return false
            }
            // `install` says whether the pass changed anything: a release refused for an app name clash, offered again
            // at every pass, is news once.
            await install(release, payload: payload, service: service, env: env, otherApps: appliedApps, summary: &summary)
            return true
        case .refreshEnvironment(let service):
            guard let env = envs[service], state[service].applied != nil, let apps = appliedApps[service] else {
                summary.changed = true
                return true
            }
            return await retryingRefresh(service, apps: apps, env: env, summary: &summary)
        case .repair(let service, let app, let appAction):
            return await repairDrift(appAction, app: app, service: service, summary: &summary)
        case .removeOrphan(let name):
            summary.changed = true
            logger.info("removing an app no release here runs", metadata: ["ferry.app": "\(name)"])
            do {
                try await processManager.delete(appNamed: name)
            } catch {
                summary.problems.append("removing \(name) failed: \(error)")
            }
            return true
        }
    }

    /// A serial whose tree did not fit (`spaceWaits`).
    struct SpaceWait: Sendable, Equatable {
        var serial: Int64
        /// The file system's directory the extraction wrote to.
        var path: String
        /// What the tree takes, as the archive declares it, plus a margin (blocks, directories): 5 %, at least 1 MiB.
        /// A tree that fails again with that much free backs off instead (`InstallError.repeatsTheSameWay`).
        var wanted: Int64

        init(serial: Int64, path: String, needed: Int64) {
            self.serial = serial
            self.path = path
            wanted = needed.addingClamped(max(needed / 20, 1 << 20))
        }

        /// The space free at `path` while it is less than `wanted` (`nil`: enough, or it cannot be read).
        func stillShort() -> Int64? {
            guard let free = DiskSpace.available(at: path), free < wanted else { return nil }
            return free
        }
    }

    /// The `installBackoff` key of `serial` of `service`.
    static func installAttempt(_ service: String, _ serial: Int64) -> String { "\(service) \(serial)" }

    /// The `installBackoff` key of activating `serial` of `service` (its files could not be written) or applying it (the
    /// process manager did not answer): apart from `installAttempt`, which a download or extraction that succeeds
    /// forgets (so each retry was the first, 10 s apart, for as long as the daemon stayed wedged). Forgotten once a
    /// verdict is in.
    static func applyAttempt(_ service: String, _ serial: Int64) -> String { "\(service) \(serial) apply" }

    /// Rewrites the ecosystem of `service` and reloads `reloading` (default: all of `apps`) with a changed instance env
    /// file. When some apps fail, they are noted (`failedRefreshes`) for the next try, and the try backs off.
    func refreshEnvironment(
        _ service: String,
        apps: [AppSpec],
        reloading: [AppSpec]? = nil,
        env: InstanceEnvFile,
        summary: inout PassSummary
    ) async {
        do {
            try writeEcosystem(service, apps: apps)
        } catch {
            summary.problems.append("\(service): cannot write the ecosystem file: \(error)")
            return
        }
        let reloading = reloading ?? apps
        do {
            try await apply(reloading, service: service, needsRefresh: true, previousNames: [])
        } catch {
            var failed = Set<String>()
            if case .appsFailed(let failures, _) = error { failed = Set(failures.map(\.app)) }
            failedRefreshes[service] = FailedRefresh(digest: env.digest, apps: failed.isEmpty ? Set(reloading.map(\.name)) : failed)
            let (inARow, wait) = refreshBackoff.recordRepair(app: service, now: .now)
            summary.problems.append(
                "\(service): reload after an env change failed: \(error) (try \(inARow); the apps it failed for are tried again in "
                    + "\(wait.components.seconds) s, the others run with the new env)"
            )
            return
        }
        failedRefreshes[service] = nil
        refreshBackoff.forget([service])
        if transition(service, .environmentReloaded(envDigest: env.digest), summary: &summary) != nil {
            save(&summary)
        }
    }

    /// A desired state that arrived while a pass runs (the poll loop keeps polling during a pass): every verified,
    /// admitted release it offers above a service's accepted serial is recorded, and a health gate watching an older
    /// serial of that service ends at its next failing look (`HealthGate.Outcome.superseded`), so the newer release is
    /// installed without waiting out the older one's deadline. Recorded even before the gate begins (a download or an
    /// apply still under way). Verified here with the same evaluator as a pass: an unverified document ends nothing.
    func supersede(with desired: DesiredState) {
        let decisions = evaluator.evaluate(desired, state: state).decisions
        for (service, decision) in decisions {
            guard case .install(let release, _) = decision, release.serial > state[service].highestAcceptedSerial ?? Int64.min else { continue }
            if supersessions.record(service: service, serial: release.serial) {
                logger.info(
                    "a newer release is offered while a pass runs",
                    metadata: ["ferry.service": "\(service)", "ferry.serial": "\(release.serial)"]
                )
            }
        }
    }

    /// Takes the trust root's verdict for the next pass: the release keys to verify with, and why (if at all) no new
    /// release may be installed.
    /// Lets the pass send a report before it ends (`reportHook`).
    func setReportHook(_ hook: @escaping @Sendable () -> Void) {
        reportHook = hook
    }

    func updateTrust(_ snapshot: AgentTrust.Snapshot) {
        evaluator.policy = snapshot.releasePolicy
        evaluator.trustProblem = snapshot.problem
        trustReport = snapshot.report
    }

    /// Records how the last poll of the controller went (`failure` is `nil` when it succeeded), for
    /// `ferry-agent status`. Saved only when it changes.
    func noteControllerContact(failure: String?) {
        guard state.noteControllerContact(failure: failure, at: Date()) else { return }
        var summary = PassSummary()
        save(&summary)
    }

    // MARK: - State

    /// Hands `event` to the state machine of `service`: the only place where the reconciler changes a service's state.
    /// An illegal transition (a bug) is logged and becomes a problem of the pass; the state stays as it was.
    func transition(_ service: String, _ event: ServiceState.Event, summary: inout PassSummary) -> ServiceState.Action? {
        do {
            return try state[service].handle(event)
        } catch {
            summary.problems.append("\(service): \(error)")
            logger.error("illegal service state transition", metadata: ["ferry.service": "\(service)", "ferry.reason": "\(error)"])
            return nil
        }
    }

    /// Saves the state, masked and its texts cut (`AgentState.prepareForSaving(mask:)`): its messages quote errors from
    /// the process manager, apps and the network, and no instance secret is kept in them.
    /// A save that fails (a full disk) is tried again at the end of every pass until it works: otherwise `state.json`
    /// would keep the state from before, which the next start would go back to (found by the chaos loop: a release
    /// applied during a full disk stayed "pending" on disk while it ran).
    func save(_ summary: inout PassSummary) {
        state.prepareForSaving(mask: secrets.mask)
        do {
            try store.save(state)
            unsaved = false
        } catch {
            unsaved = true
            summary.problems.append("cannot save the agent state: \(error)")
            logger.error("cannot save the agent state", metadata: ["ferry.reason": "\(error)"])
        }
    }

    // MARK: - Reporting

    /// The process table could not be read: what runs, and how healthy it is, is unknown until it can be again. Before,
    /// the last look's health and processes went on being reported as current (a wedged PM2 daemon showed a green
    /// fleet). The report says why (`tableProblem`), and goes out at once when the problem is new.
    /// - Returns: the problem, for the pass's problems.
    private func tableUnreadable(_ error: any Error, summary: inout PassSummary) -> String {
        let problem = "cannot read the \(processManagerName) process table: \(error)"
        if tableProblem == nil { summary.changed = true }
        tableProblem = problem
        lastTable = []
        for service in configuration.services { health[service] = .unknown }
        return problem
    }

    /// The table was read: a problem reading it is over (reported at once).
    private func tableReadAgain(summary: inout PassSummary) {
        guard tableProblem != nil else { return }
        tableProblem = nil
        summary.changed = true
    }

    /// Derives each service's health from the table: `unchanged` when the pass did nothing to the processes, else the
    /// table read again after the pass's actions. An app in a crash loop (`RestartWatch`) makes its service unhealthy
    /// whatever the table's statuses say.
    /// - Returns: whether an app entered or left a crash loop (the report goes out at once).
    private func refreshHealth(unchanged: [ManagedProcess]?) async -> Bool {
        let read: [ManagedProcess]
        if let unchanged {
            read = unchanged
        } else {
            do {
                read = try await processManager.processes()
            } catch {
                var summary = PassSummary()
                _ = tableUnreadable(error, summary: &summary)
                return summary.changed
            }
        }
        // A job a signal ended shows exit code 0 in PM2's table, as one that ran to completion (`explainingExits`).
        let table = await processManager.explainingExits(read)
        lastTable = table
        recordedProcesses = ledger.record(table, previous: recordedProcesses)
        return judgeHealth(table)
    }

    /// Derives every service's health but `gated`'s from `table` (with exits explained).
    /// - Returns: whether an app entered or left a crash loop.
    private func judgeHealth(_ table: [ManagedProcess], except gated: String? = nil) -> Bool {
        let now = ContinuousClock.now
        var loopsChanged = false
        // Not while an install is under way (its gate judges); a release still pending after its download failed does
        // not stop the running one from being judged (its health stayed what it was for as long as the download failed).
        for service in configuration.services where service != gated && (state[service].pending == nil || state[service].phase != .deploying) {
            guard let applied = state[service].applied, let apps = try? appSpecs(for: applied, service: service) else {
                health[service] = .unknown
                loopsChanged = noteCrashLoops([], service: service) || loopsChanged
                continue
            }
            // An app PM2 restarts every few minutes or seconds (`cron_restart`) climbs by one restart a tick: its counter
            // tells nothing.
            let schedules = processManager.restartsOnSchedules
            let loops = restartWatch.observe(table, apps: Set(apps.filter { !(schedules && $0.restartsOftenOnSchedule) }.map(\.name)), now: now)
            loopsChanged = noteCrashLoops(loops, service: service) || loopsChanged
            if let pinned = failedGateProcesses[service] {
                if Self.pids(of: apps, in: table) == pinned {
                    health[service] = .unhealthy
                    continue
                }
                failedGateProcesses[service] = nil
            }
            switch ProcessTableCheck(evaluating: table, against: apps) {
            // Files not yet put back (a rollback cut short): what runs under the apps' names may be another release's
            // code; "healthy" would vouch for it as the applied release's.
            case .allOnline: health[service] = !loops.isEmpty ? .unhealthy : filesOutOfSync.contains(service) ? .unknown : .healthy
            case .failed: health[service] = .unhealthy
            case .pending: health[service] = loops.isEmpty ? .unknown : .unhealthy
            }
        }
        return loopsChanged
    }

    /// While `gated`'s health gate runs, the other services' health from the tables it reads, at most every
    /// `healthDuringGateInterval`. The services are acted on one at a time, so a gate of minutes held them: an app of
    /// another service that crashed meanwhile was reported healthy, with its old pids, until the gate's verdict. (Its
    /// repair still waits for the next pass, and the process ledger and the processes the report lists are taken from
    /// the pass's tables too: a report sent during a rollback's gate listed the failed release's instance, without a
    /// pid, as the service's process.) A crash loop that starts or ends meanwhile is reported at once, as a pass's is.
    func observeDuringGate(_ table: [ManagedProcess], gated: String) {
        let now = ContinuousClock.now
        if let last = lastGateObservation, last.duration(to: now) < Self.healthDuringGateInterval { return }
        lastGateObservation = now
        if judgeHealth(table, except: gated) { reportHook?() }
    }

    /// How often a health gate's table is used to judge the other services (`observeDuringGate`). 5 s.
    static let healthDuringGateInterval = Duration.seconds(5)

    /// The pids of the instances of `apps` in `table`, by pm_id.
    static func pids(of apps: [AppSpec], in table: [ManagedProcess]) -> [Int: Int32] {
        let names = Set(apps.map(\.name))
        var pids: [Int: Int32] = [:]
        for process in table where names.contains(process.name) { pids[process.pmId] = process.pid ?? 0 }
        return pids
    }

    /// Keeps `loops` as the service's crash loops; logs the apps that entered or left one. Returns whether the set of
    /// apps changed.
    private func noteCrashLoops(_ loops: [RestartWatch.Loop], service: String) -> Bool {
        let before = Set((crashLoops[service] ?? []).map(\.app))
        let after = Set(loops.map(\.app))
        crashLoops[service] = loops.isEmpty ? nil : loops
        for loop in loops where !before.contains(loop.app) {
            logger.warning(
                "an app is in a crash loop",
                metadata: ["ferry.service": "\(service)", "ferry.app": "\(loop.app)", "ferry.reason": "\(secrets.mask.apply(loop.description))"]
            )
        }
        for app in before.subtracting(after).sorted() {
            logger.info(
                "an app's crash loop is over (its restart counter did not move for the watch's window)",
                metadata: ["ferry.service": "\(service)", "ferry.app": "\(app)"]
            )
        }
        return before != after
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
        var report = StatusReportBuilder.report(
            services: configuration.services,
            state: state,
            table: lastTable,
            appNames: appNames,
            health: health,
            notes: tableProblem.map { problem in Dictionary(configuration.services.map { ($0, problem) }) { first, _ in first } }
                ?? crashLoops.mapValues { loops in loops.map(\.description).joined(separator: "; ") },
            targetSerials: targets,
            hostname: hostname,
            processManager: processManagerName,
            mask: secrets.mask
        )
        report.trustRoot = trustReport.map { status in
            var masked = status
            masked.problem = status.problem.map { ReportText.freeText(secrets.mask.apply($0)) }
            return masked
        }
        return report
    }

    // MARK: - Helpers

    /// The apps of `applied` as they should run now (the instance env file is read again).
    func appSpecs(for applied: AppliedRelease, service: String) throws -> [AppSpec] {
        let env = try InstanceEnvFile.load(service: service, directory: configuration.envDir, applied: applied.envDigest)
        return AppSpec.specs(for: try applied.release(), currentLink: layout.currentLink(service), instanceEnv: env.values)
    }

    /// Removes the files of services no longer configured that no process in `table` runs from (their apps are
    /// orphans, stopped by an earlier pass): their ecosystem file, which holds the instance env file's values, and every
    /// release tree but the applied one. Before, all of it stayed on the disk for good. The applied tree, `current` and
    /// the service's state stay: configured again, the service runs its applied release again (its ecosystem file is
    /// written again from the state), and its replay floor holds.
    private func removeUnconfiguredServices(table: [ManagedProcess]) async {
        let paths = table.flatMap { [$0.cwd, $0.scriptPath] }
        var removable: [(service: String, keep: String?)] = []
        unconfiguredServices = unconfiguredServices.filter { service, directories in
            let inUse = paths.contains { path in directories.contains { path == $0 || path.hasPrefix($0 + "/") } }
            if !inUse { removable.append((service, state.services[service]?.applied?.directoryName)) }
            return inUse
        }
        guard !removable.isEmpty else { return }
        logger.info("removing the files of services no longer configured", metadata: ["ferry.services": "\(removable.map(\.service))"])
        let files = files
        await DedicatedThread.run(cancellation: CancellationFlag()) { [removable] in
            for (service, keep) in removable { files.removeUnconfiguredService(service, keeping: keep) }
        }
    }

    /// Removes releases and artifacts that no service's applied, previous or pending release protects.
    ///
    /// The removals run on a thread of their own: a release tree is tens of thousands of files (`node_modules`), and
    /// on this actor, on one of the cooperative pool's threads (two on a small instance), they held up polls, health
    /// watches and reports for seconds.
    func collectGarbage() async {
        var keepDigests: Set<String> = []
        var releases: [(service: String, protected: Set<String>)] = []
        for service in configuration.services {
            let serviceState = state[service]
            let protected = [serviceState.applied, serviceState.previous, serviceState.pending].compactMap { $0 }
            keepDigests.formUnion(protected.map(\.sha256))
            // And whatever `current` points at: after a rollback whose files could not be put back, the failed release's
            // tree until a later pass puts them back (its processes may still run from it).
            let current = files.currentDirectoryName(service).map { Set([$0]) } ?? []
            releases.append((service, Set(protected.map(\.directoryName)).union(current)))
        }
        let files = self.files
        let keep = configuration.keepReleases
        await DedicatedThread.run(cancellation: CancellationFlag()) { [releases, keepDigests] in
            for (service, protected) in releases { files.collectReleases(service, protected: protected, keep: keep) }
            files.collectArtifacts(keep: keepDigests)
        }
    }
}
