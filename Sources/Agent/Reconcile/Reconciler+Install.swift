import Logging
import Shared

/// Installing one release: accept → unpack → activate → apply and watch → keep, or roll back. Each step is a function;
/// each outcome is an event for the service's state machine, whose action the step then carries out.
extension Reconciler {
    /// How applying a release and watching its health ended.
    enum InstallVerdict: Sendable {
        case healthy
        /// `evidence`: the stage, cause and health answer behind it, for the failure's diagnosis.
        case unhealthy(ServiceState.UnhealthyReason, evidence: FailureDiagnostics.Verdict)
        /// The agent is shutting down: no verdict.
        case interrupted
        /// A newer serial arrived during the health gate: no verdict, the newer one is installed next.
        case superseded(by: Int64)
        /// The process manager's table could not be read when the apps were to be applied, so nothing of them was done:
        /// no verdict (a wedged or restarting daemon is not the release's fault), the install is tried again.
        case processManagerUnavailable(ApplyError)
    }

    /// Installs `release` for `service`. Nothing running is touched until the release is downloaded, verified and
    /// extracted; from activation on, a failure puts the applied release back.
    func install(
        _ release: Release,
        payload: [UInt8],
        service: String,
        env: InstanceEnvFile,
        otherApps: [String: [AppSpec]],
        summary: inout PassSummary
    ) async {
        let metadata: Logger.Metadata = [
            "ferry.service": "\(service)", "ferry.serial": "\(release.serial)", "artifact.sha256": "\(release.artifact.sha256)",
        ]
        if let clash = Self.appNameClash(
            release,
            service: service,
            owned: appNamesOwned(byServicesOtherThan: service),
            byLogName: processManager.logFilesFollowLogNames
        ) {
            summary.problems.append("\(service): \(clash)")
            if transition(service, .installRefused(serial: release.serial, clash), summary: &summary) == .save {
                summary.changed = true
                save(&summary)
            }
            // The planner skipped the service's drift repair and env refresh for the install, at every pass while the
            // release is offered: the running release went unrepaired (a dead daemon, a rotated secret) until a serial
            // without the clash came.
            await keepApplied(service, apps: otherApps[service] ?? [], env: env, summary: &summary)
            return
        }
        summary.changed = true
        let candidate = AppliedRelease(
            serial: release.serial,
            version: release.version,
            sha256: release.artifact.sha256.hex,
            directoryName: AgentLayout.releaseDirectoryName(serial: release.serial, sha256: release.artifact.sha256),
            payload: payload,
            envDigest: env.digest
        )
        guard transition(service, .installStarted(candidate), summary: &summary) != nil else { return }
        failedGateProcesses[service] = nil
        save(&summary)
        // What an install given up left (a superseded serial's partial download, tree or artifact) goes before this one
        // needs the space: it was collected only after an install finished, so on a tight disk the next download was
        // refused for want of the space the agent's own leftovers held, for ever. The new release is pending: kept.
        await collectGarbage()
        logger.info("installing release", metadata: metadata)

        do throws(InstallError) {
            try await unpack(release, directoryName: candidate.directoryName, service: service)
        } catch .superseded(let newer) {
            logger.info(
                "a newer release supersedes the one being downloaded; download cancelled",
                metadata: metadata.merging(["ferry.newer_serial": "\(newer)"]) { $1 }
            )
            if transition(service, .downloadSuperseded(by: newer), summary: &summary) != nil { save(&summary) }
            // Nothing running was touched; the newer serial is installed by the next pass, which runs at once.
            await keepApplied(service, apps: otherApps[service] ?? [], env: env, summary: &summary)
            return
        } catch {
            if case .extraction(.noSpace(let path, let needed, _)) = error, !error.repeatsTheSameWay {
                spaceWaits[service] = SpaceWait(serial: release.serial, path: path, needed: needed)
            }
            // A release that cannot install anywhere is a failure of it, listed once (a rollout counts it: its phase
            // alone does not, since a store that does not answer yet leaves the same phase). Bytes that do not match
            // are its fault only the second time in a row (`mismatchedDownloads`).
            var refused = error.isTheReleasesFault
            var notYetRefused = false
            if error.isTheReleasesFaultOnceRepeated {
                refused = mismatchedDownloads[service] == release.serial
                notYetRefused = !refused
                mismatchedDownloads[service] = release.serial
            } else {
                mismatchedDownloads[service] = nil
            }
            if error.repeatsTheSameWay {
                // Refused, it is still offered (an operator may put the right bytes back under its URL): tried again after
                // `refusedWait`, not within minutes. Every agent offered a release whose object in the store was
                // overwritten downloaded all of it again every 5 minutes, until a new serial came.
                let (inARow, wait) = installBackoff.recordRepair(
                    app: Self.installAttempt(service, release.serial),
                    now: .now,
                    atLeast: refused ? Self.refusedWait : .zero
                )
                summary.problems.append("\(service): \(error) (try \(inARow); tried again in \(wait.components.seconds) s)")
            } else {
                summary.problems.append("\(service): \(error)")
            }
            if notYetRefused {
                summary.problems.append("\(service): serial \(release.serial) is refused if the next download does not match either")
            }
            logger.info("release download or extraction failed", metadata: metadata.merging(["ferry.reason": "\(error)"]) { $1 })
            if transition(service, .downloadFailed(error), summary: &summary) != nil { save(&summary) }
            if refused, transition(service, .installRefused(serial: release.serial, error), summary: &summary) == .save {
                save(&summary)
            }
            // The install did not get as far as touching what runs, and the planner skipped the service's drift repair
            // and env refresh for it: the applied release must not stay down (a dead daemon), nor on an env file the
            // operator changed, while the new one waits for its artifact.
            await keepApplied(service, apps: otherApps[service] ?? [], env: env, summary: &summary)
            return
        }

        installBackoff.forget([Self.installAttempt(service, release.serial)])
        mismatchedDownloads[service] = nil
        spaceWaits[service] = nil
        let apps = AppSpec.specs(for: release, currentLink: layout.currentLink(service), instanceEnv: env.values)
        // The running release's apps as this pass read them (the env file this install uses too): read again here, after
        // a download of minutes, an env file being edited meanwhile made them `nil`, and a failed release was then
        // removed with `current` although a release to roll back to was applied.
        let previousApps = state[service].applied == nil ? nil : otherApps[service]
        // Recorded before the first file is written: a restart from here on puts the applied release back.
        if transition(service, .activating, summary: &summary) != nil { save(&summary) }
        guard !unsaved else {
            // Not on disk: a restart could not tell that files were written, and would leave them (a full disk). Nothing
            // is activated; the install is tried again at the next pass.
            summary.problems.append("\(service): serial \(release.serial) is not activated while the agent state cannot be saved")
            await repairApplied(service, apps: otherApps[service] ?? [], summary: &summary)
            return
        }
        do throws(InstallError) {
            try activate(apps, directoryName: candidate.directoryName, service: service)
        } catch {
            // Tried again after the backoff's wait, not at every pass: each pass hashed the cached artifact, wrote the
            // files that fail again, and repaired the applied release's apps from them.
            let (inARow, wait) = installBackoff.recordRepair(app: Self.applyAttempt(service, release.serial), now: .now)
            summary.problems.append(
                "\(service): cannot activate serial \(release.serial): \(error) (try \(inARow); tried again in \(wait.components.seconds) s)"
            )
            if transition(service, .activationFailed(error), summary: &summary) != nil { save(&summary) }
            // The ecosystem file may be the new release's already (and `current` too, when only the directory's fsync
            // failed): the applied release's files go back first, and its apps are repaired only from them.
            // An ecosystem write that failed left the applied release's file whole (it is atomic): nothing to put back.
            if case .currentLink = error, let applied = state[service].applied, let appliedApps = otherApps[service] {
                _ = restoreFiles(service, to: applied, apps: appliedApps)
            }
            await repairApplied(service, apps: otherApps[service] ?? [], summary: &summary)
            return
        }

        // From here on the install changes what runs. (Before activation, a download failing at every pass forgot the
        // running release's restarts each time: its crash loop went unseen, and its errored apps were restarted at every
        // pass without backoff.)
        repairBackoff.forget(release.pm2.apps.map(\.name))
        // The running release's apps too: an app the new release renames or drops leaves no looks behind.
        restartWatch.forget(release.pm2.apps.map(\.name) + (otherApps[service] ?? []).map(\.name))
        // An install applies the env file to every app: a failed refresh's retry is no longer owed.
        failedRefreshes[service] = nil
        refreshBackoff.forget([service])
        // The running release's crash loop is not the news of an install (the next look judges the new one).
        crashLoops[service] = nil
        let verdict = await applyAndWatch(release, apps: apps, replacing: previousApps ?? [], service: service, env: env)
        if case .processManagerUnavailable = verdict {} else { installBackoff.forget([Self.applyAttempt(service, release.serial)]) }
        await conclude(verdict, service: service, apps: apps, previousApps: previousApps, env: env, metadata: metadata, summary: &summary)
    }

    /// The first app of `release` that another service on this instance already runs or is installing, as a refusal;
    /// or whose PM2 log files would be that service's app's (`api_v1` and `api-v1` both write `api-v1-out.log`, and
    /// a failure's log tail then carried the other service's lines into this one's report).
    /// - Parameter byLogName: whether the process manager names log files after `PM2App.logName` (PM2).
    static func appNameClash(_ release: Release, service: String, owned: [String: Set<String>], byLogName: Bool) -> InstallError? {
        for (other, names) in owned.sorted(by: { $0.key < $1.key }) where other != service {
            if let clash = release.pm2.apps.first(where: { names.contains($0.name) }) {
                return .appNameClash(app: clash.name, service: other)
            }
            guard byLogName else { continue }
            let logNames = Dictionary(names.sorted().map { (PM2App.logName($0), $0) }) { first, _ in first }
            for app in release.pm2.apps {
                if let theirs = logNames[PM2App.logName(app.name)] { return .appNameClash(app: app.name, service: other, logsOf: theirs) }
            }
        }
        return nil
    }

    /// The app names of every other service's applied and pending release, read from the state as it is now: an
    /// install earlier in this pass counts, and so do a service whose env file cannot be read and one whose install is
    /// still pending (its download failing). The apps read at the start of the pass missed all three, and two services
    /// then took the same app from each other on every drift check.
    func appNamesOwned(byServicesOtherThan service: String) -> [String: Set<String>] {
        var owned: [String: Set<String>] = [:]
        for other in configuration.services where other != service {
            let releases = [try? state[other].applied?.release(), try? state[other].pending?.release()].compactMap { $0 }
            let names = Set(releases.flatMap { $0.pm2.apps.map(\.name) })
            if !names.isEmpty { owned[other] = names }
        }
        return owned
    }

    /// Downloads and extracts the release into `releases/<directoryName>`, unless a previous attempt finished that.
    /// `current` and what runs are untouched.
    ///
    /// A newer serial that came meanwhile (during the extraction, or before a resumed install found its directory
    /// extracted already) ends it as `.superseded(by:)` before anything running is touched: activating a release the
    /// operator has already replaced would reload every app for nothing, and run it if its gate passed.
    private func unpack(_ release: Release, directoryName: String, service: String) async throws(InstallError) {
        if !files.releaseExists(service, directoryName: directoryName) {
            let artifact = try await download(release.artifact, service: service)
            do throws(ArchiveError) {
                _ = try await extractor.extract(artifact.path, into: layout.releaseDir(service, directoryName: directoryName))
            } catch {
                throw .extraction(error)
            }
        }
        let accepted = state[service].highestAcceptedSerial ?? Int64.min
        if let newer = supersessions.serial(for: service, above: accepted) { throw .superseded(by: newer) }
    }

    /// How often a download looks whether a newer serial of its service has come (`supersede(with:)`).
    static let supersessionCheckInterval = Duration.milliseconds(200)

    /// Downloads `artifact` for the pending release of `service`, unless a newer serial of the service comes first: a
    /// poll during the pass brought one (`supersede(with:)`), so this artifact — maybe a large one, maybe on a slow link —
    /// would only delay the operator's newer release. The download is then cancelled (its `.part` is kept, as for any
    /// cancelled download) and `.superseded(by:)` thrown. Looks every `supersessionCheckInterval`, only while the
    /// download runs.
    private func download(_ artifact: ArtifactReference, service: String) async throws(InstallError) -> FetchedArtifact {
        enum Outcome: Sendable {
            case fetched(Result<FetchedArtifact, ArtifactFetchError>)
            case superseded(by: Int64)
        }
        let fetcher = fetcher
        let supersessions = supersessions
        // Serials above the pending one (accepted when its install began) supersede it.
        let accepted = state[service].highestAcceptedSerial ?? Int64.min
        let outcome = await withTaskGroup(of: Outcome?.self) { group -> Outcome? in
            group.addTask {
                do throws(ArtifactFetchError) {
                    return .fetched(.success(try await fetcher.fetch(artifact)))
                } catch {
                    return .fetched(.failure(error))
                }
            }
            group.addTask {
                while !Task.isCancelled {
                    if let newer = supersessions.serial(for: service, above: accepted) { return .superseded(by: newer) }
                    try? await Task.sleep(for: Self.supersessionCheckInterval)
                }
                return nil
            }
            // The first answer decides; the other task is cancelled (a cancelled watch answers nil).
            var first: Outcome?
            while first == nil, let next = await group.next() {
                first = next
            }
            group.cancelAll()
            return first
        }
        switch outcome {
        case .fetched(.success(let fetched))?: return fetched
        case .fetched(.failure(let error))?: throw .download(error)
        case .superseded(let newer)?: throw .superseded(by: newer)
        // Unreachable: the download always answers.
        case nil: throw .download(.cancelled(sha256: artifact.sha256))
        }
    }

    /// Writes the release's ecosystem and points `current` at it.
    private func activate(_ apps: [AppSpec], directoryName: String, service: String) throws(InstallError) {
        do throws(AtomicFile.Failure) {
            try writeEcosystem(service, apps: apps)
        } catch {
            throw .ecosystem(error)
        }
        do throws(AtomicFile.Failure) {
            try files.switchCurrent(service, to: directoryName)
        } catch {
            // The ecosystem is the new release's already, `current` still the applied one's: every pass puts the
            // applied release's file back (`resyncFiles`) before its apps are touched.
            if state[service].applied != nil { filesOutOfSync.insert(service) }
            throw .currentLink(error)
        }
        filesOutOfSync.remove(service)
    }

    /// Applies the release's apps (deleting those of `previousApps` it no longer has), then watches its health.
    private func applyAndWatch(
        _ release: Release,
        apps: [AppSpec],
        replacing previousApps: [AppSpec],
        service: String,
        env: InstanceEnvFile
    ) async -> InstallVerdict {
        do throws(ApplyError) {
            try await apply(apps, service: service, needsRefresh: true, previousNames: Set(previousApps.map(\.name)))
        } catch {
            if Task.isCancelled { return .interrupted }
            if case .tableUnreadable = error { return .processManagerUnavailable(error) }
            return .unhealthy(.notApplied(error), evidence: FailureDiagnostics.Verdict(stage: Self.stage(of: error), cause: .commandFailed))
        }
        try? await processManager.save()
        let health = release.health.resolved(against: release, instanceEnv: env.values)
        switch await watchHealth(service, apps: apps, health: health) {
        case .healthy:
            return .healthy
        case .unhealthy(let failure):
            let evidence = FailureDiagnostics.Verdict(
                stage: .healthGate,
                cause: failure.cause,
                deadlineSeconds: failure.deadlineSeconds,
                health: failure.health
            )
            return .unhealthy(.healthGate(failure.reason), evidence: evidence)
        case .interrupted:
            return .interrupted
        case .superseded(let newer):
            return .superseded(by: newer)
        }
    }

    /// The health gate of `service`, which a serial above the ones accepted now ends while it fails
    /// (`supersede(with:)`).
    private func watchHealth(_ service: String, apps: [AppSpec], health: ResolvedHealthCheck) async -> HealthGate.Outcome {
        let supersessions = self.supersessions
        let accepted = state[service].highestAcceptedSerial ?? Int64.min
        return await healthGate.watch(
            apps: apps,
            health: health,
            processManager: processManager,
            mask: secrets.mask,
            superseded: { supersessions.serial(for: service, above: accepted) },
            observed: { table in await self.observeDuringGate(table, gated: service) }
        )
    }

    /// The stage an apply failure happened in: that of the first app action that failed.
    static func stage(of error: ApplyError) -> FailureDiagnosis.Stage {
        guard case .appsFailed(let failures, let removals) = error, let first = (failures + removals).first else { return .install }
        switch first.action {
        case .start, .replace, .restart: return .start
        case .reload: return .reload
        case .delete, .none: return .install
        }
    }

    /// Keeps the release, or takes it out again, as the state machine decides on the verdict.
    private func conclude(
        _ verdict: InstallVerdict,
        service: String,
        apps: [AppSpec],
        previousApps: [AppSpec]?,
        env: InstanceEnvFile,
        metadata: Logger.Metadata,
        summary: inout PassSummary
    ) async {
        switch verdict {
        case .interrupted:
            logger.info("install interrupted by shutdown", metadata: metadata)
            _ = transition(service, .installInterrupted, summary: &summary)
        case .processManagerUnavailable(let error):
            // Before, this was a verdict: the serial failed here for good (never tried again, counted by the rollout)
            // because the daemon did not answer for one table read. Now the applied release's files go back, the serial
            // stays pending, and it is tried again after the install backoff's wait.
            let serial = state[service].pending?.serial ?? 0
            let (inARow, wait) = installBackoff.recordRepair(app: Self.applyAttempt(service, serial), now: .now)
            logger.info(
                "the process manager could not be asked to apply the release; tried again",
                metadata: metadata.merging(["ferry.reason": "\(error)"]) { $1 }
            )
            summary.problems.append(
                "\(service): serial \(serial) not applied yet: \(error) (try \(inARow); tried again in \(wait.components.seconds) s)"
            )
            if transition(service, .activationFailed(.processManager("\(error)")), summary: &summary) != nil { save(&summary) }
            if let applied = state[service].applied, let previousApps { _ = restoreFiles(service, to: applied, apps: previousApps) }
        case .superseded(let newer):
            logger.info(
                "a newer release supersedes the one in its health gate; taking it out",
                metadata: metadata.merging(["ferry.newer_serial": "\(newer)"]) { $1 }
            )
            let restored: Bool
            switch transition(service, .releaseSuperseded(by: newer, canRollBack: previousApps != nil), summary: &summary) {
            case .rollBack(_, let target)?:
                // Stopped mid-way (the agent shutting down): the release stays pending, and the next start restores.
                guard await rollBack(service, to: target, apps: previousApps ?? [], replacing: apps, summary: &summary) || !Task.isCancelled else {
                    return
                }
                restored = true
            case .removeFailedRelease?:
                await remove(apps.map(\.name), service: service)
                restored = false
            default:
                return
            }
            // The next pass installs the newer serial; until then the table judges what runs again.
            health[service] = .unknown
            if transition(service, .supersededReleaseTakenOut(by: newer, restored: restored), summary: &summary) != nil { save(&summary) }
            await collectGarbage()
        case .healthy:
            guard transition(service, .releaseHealthy, summary: &summary) != nil else { return }
            health[service] = .healthy
            save(&summary)
            logger.info("release healthy", metadata: metadata)
            await collectGarbage()
        case .unhealthy(let reason, let evidence):
            logger.info("release unhealthy, rolling back", metadata: metadata.merging(["ferry.reason": "\(reason)"]) { $1 })
            health[service] = .unhealthy
            // Before anything is taken out: the rollback's restarts write to the same logs.
            let diagnosis = await FailureDiagnostics.collect(evidence, apps: apps, processManager: processManager, mask: secrets.mask)
            let event = ServiceState.Event.releaseUnhealthy(reason, canRollBack: previousApps != nil)
            let done: ServiceState.Event
            let decided = transition(service, event, summary: &summary)
            // The verdict is saved before the release is taken out: an agent stopped or killed in the middle comes back
            // to it and finishes the taking out, instead of installing the failed serial again.
            if decided != nil { save(&summary) }
            while configuration.pausesBeforeTakingOut, !Task.isCancelled { try? await Task.sleep(for: .milliseconds(100)) }
            var restoredWhole = true
            switch decided {
            case .rollBack(_, let target)?:
                // Stopped mid-way (the agent shutting down): not rolled back yet. The release stays pending with its
                // verdict, and the next start finishes the rollback (one recorded here would leave the failed code
                // running).
                restoredWhole = await rollBack(service, to: target, apps: previousApps ?? [], replacing: apps, summary: &summary)
                guard restoredWhole || !Task.isCancelled else { return }
                done = .rolledBack(reason, diagnosis: diagnosis)
            case .removeFailedRelease?:
                await remove(apps.map(\.name), service: service)
                done = .failedReleaseRemoved(reason, diagnosis: diagnosis)
            default:
                return
            }
            guard transition(service, done, summary: &summary) != nil else { return }
            summary.problems.append("\(service): \(state[service].message)")
            save(&summary)
            if case .rolledBack = done, let restoredApps = previousApps {
                if restoredWhole {
                    await checkRestored(service, apps: restoredApps, env: env, summary: &summary)
                } else {
                    // Not all of it is back (its files, or the re-apply of its apps): what runs under its apps' names may
                    // still be the failed release's code, which the restored release's check would have judged as its
                    // own ("healthy again"). Unknown until the files are back and the apps re-applied.
                    health[service] = .unknown
                }
            }
            // The failed release's artifact and tree beyond `keepReleases` go now, not at the next healthy install: a
            // run of failed releases filled the disk until the release that fixes them could not be downloaded.
            await collectGarbage()
        }
    }

    /// After a rollback: the rollback is reported at once, then the release that runs again goes through its own
    /// health gate, and the service's message and health say whether it answers again. (Before, "rolled back" was all
    /// the report said, and the health shown was the table's: `online`, whether or not the old release answered.)
    private func checkRestored(_ service: String, apps: [AppSpec], env: InstanceEnvFile, summary: inout PassSummary) async {
        guard let restored = state[service].applied, let release = try? restored.release() else { return }
        reportHook?()
        let verdict = await watchHealth(
            service,
            apps: apps,
            health: release.health.resolved(against: release, instanceEnv: env.values)
        )
        let problem: String?
        switch verdict {
        case .healthy:
            health[service] = .healthy
            failedGateProcesses[service] = nil
            problem = nil
        case .unhealthy(let failure):
            health[service] = .unhealthy
            // The pass's own health look comes next and sees only the table: the verdict stands for these processes.
            failedGateProcesses[service] = (try? await processManager.processes()).map { Self.pids(of: apps, in: $0) }
            problem = failure.reason
            logger.warning(
                "the release restored by a rollback is not healthy either",
                metadata: ["ferry.service": "\(service)", "ferry.serial": "\(restored.serial)", "ferry.reason": "\(failure.reason)"]
            )
        case .interrupted:
            return
        case .superseded(let newer):
            // The newer serial is installed next: no verdict on the restored release.
            logger.info(
                "a newer release ends the health gate of the release a rollback restored",
                metadata: ["ferry.service": "\(service)", "ferry.serial": "\(restored.serial)", "ferry.newer_serial": "\(newer)"]
            )
            return
        }
        if transition(service, .restoredChecked(problem: problem), summary: &summary) == .save { save(&summary) }
    }

    /// Points `current` back at `target`, writes its ecosystem and applies its apps, deleting the failed release's
    /// others. Failures are problems of the pass; the next pass repairs what drifted. Returns whether the apps were
    /// applied.
    ///
    /// An apply that fails (a table that cannot be read, a reload that times out) leaves processes of the same names
    /// running the failed release's code, which drift repair never sees (their script path is `current`'s, now the
    /// restored release's): the service is noted out of sync, so that the next pass puts the files back and reloads
    /// every app from them.
    @discardableResult
    private func rollBack(
        _ service: String,
        to target: AppliedRelease,
        apps: [AppSpec],
        replacing failedApps: [AppSpec],
        summary: inout PassSummary
    ) async -> Bool {
        let failures = restoreFiles(service, to: target, apps: apps)
        guard failures.isEmpty else {
            // Applied from files that still name the failed release, PM2 would run its configuration with this code.
            summary.problems.append(
                "\(service): rollback could not put back serial \(target.serial)'s files (\(failures.joined(separator: "; "))); retried at every pass, the apps are re-applied once they are back"
            )
            return false
        }
        do {
            try await apply(apps, service: service, needsRefresh: true, previousNames: Set(failedApps.map(\.name)))
        } catch {
            summary.problems.append("\(service): re-applying serial \(target.serial) failed: \(error); its apps are reloaded at the next pass")
            filesOutOfSync.insert(service)
            return false
        }
        try? await processManager.save()
        return true
    }

    /// Nothing to go back to: deletes the failed release's apps and removes `current`.
    func remove(_ failedApps: [String], service: String) async {
        for name in failedApps { try? await processManager.delete(appNamed: name) }
        try? await processManager.save()
        files.removeCurrent(service)
    }
}
