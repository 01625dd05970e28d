import Logging
import Shared

/// A service's `current` link and generated ecosystem file belong to its applied release. A full disk (or a lost
/// inode, a failed directory fsync) during a rollback, a restore at start or an install's switch can leave them naming
/// the failed release: PM2 then starts and reloads the applied release's apps from a file that describes the other one
/// (its script, instances, env), and a drift repair that replaces an app starts it wrongly again on every pass. Such a
/// service is noted (`filesOutOfSync`) and every pass tries again to put both back, before anything else touches its
/// apps; until it has, its apps are left as they run (no repair, no env reload from the wrong file).
extension Reconciler {
    /// Writes `apps` as `service`'s ecosystem and points `current` at `applied`, each attempted whatever became of the
    /// other. Returns the failures (none: both are written, and the service is in sync); on failure the service is
    /// noted for `resyncFiles`.
    func restoreFiles(_ service: String, to applied: AppliedRelease, apps: [AppSpec]) -> [String] {
        var failures: [String] = []
        do {
            try writeEcosystem(service, apps: apps)
        } catch {
            failures.append("cannot write the ecosystem file: \(error)")
        }
        do {
            try files.switchCurrent(service, to: applied.directoryName)
        } catch {
            failures.append("cannot point current at serial \(applied.serial): \(error)")
        }
        if failures.isEmpty {
            filesOutOfSync.remove(service)
        } else {
            filesOutOfSync.insert(service)
            logger.warning(
                "the files of the applied release could not be put back; retried at every pass",
                metadata: ["ferry.service": "\(service)", "ferry.serial": "\(applied.serial)", "ferry.reason": "\(failures.joined(separator: "; "))"]
            )
        }
        return failures
    }

    /// At start: notes each service whose `current` link or ecosystem file is not its applied release's (a rollback
    /// that could not put them back before the agent stopped). Read once; the passes keep the set afterwards.
    func noteFilesOutOfSync() {
        for service in configuration.services {
            guard let applied = state[service].applied, state[service].pending == nil else { continue }
            var inSync = files.currentDirectoryName(service) == applied.directoryName
            if inSync, let apps = try? appSpecs(for: applied, service: service) {
                // Compared as JSON values, not bytes: an agent upgrade that writes the same settings differently does not
                // reload every app at its start.
                let expected = EcosystemWriter.render(apps: apps, namespace: configuration.namespace)
                let written = (try? SmallFile.read(layout.ecosystemFile(service), limit: 4 * expected.count + 4096)).flatMap {
                    try? JSONValue.parse($0)
                }
                inSync = written != nil && written == (try? JSONValue.parse(expected))
            }
            if !inSync {
                filesOutOfSync.insert(service)
                logger.warning(
                    "current or the ecosystem file is not the applied release's; put back at the first pass",
                    metadata: ["ferry.service": "\(service)", "ferry.serial": "\(applied.serial)"]
                )
            }
        }
    }

    /// Puts back the files of every service noted out of sync, then reloads its apps from them (as after an env change,
    /// which also records the env file the ecosystem was written from). Returns whether any apps were touched.
    func resyncFiles(appliedApps: [String: [AppSpec]], envs: [String: InstanceEnvFile], summary: inout PassSummary) async -> Bool {
        var touched = false
        for service in filesOutOfSync.sorted() {
            guard let applied = state[service].applied else {
                filesOutOfSync.remove(service)
                continue
            }
            // Unreadable env file or release: already a problem of this pass; tried again at the next.
            guard let apps = appliedApps[service], let env = envs[service] else { continue }
            let failures = restoreFiles(service, to: applied, apps: apps)
            guard failures.isEmpty else {
                summary.problems.append(
                    "\(service): serial \(applied.serial)'s files are still not back (\(failures.joined(separator: "; "))); its apps are left as they run until they are"
                )
                continue
            }
            logger.info("put back the files of the applied release", metadata: ["ferry.service": "\(service)", "ferry.serial": "\(applied.serial)"])
            summary.changed = true
            touched = true
            await refreshEnvironment(service, apps: apps, env: env, summary: &summary)
        }
        return touched
    }

    /// Whether `action` touches the apps of a service whose files are out of sync (it waits for them).
    func waitsForFiles(_ action: AgentAction) -> Bool {
        switch action {
        case .repair(let service, _, _), .refreshEnvironment(let service): filesOutOfSync.contains(service)
        case .refuse, .install, .removeOrphan: false
        }
    }
}
