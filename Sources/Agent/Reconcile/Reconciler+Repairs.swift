import Logging
import Shared

/// Repairs behind the process manager's back, and what the report says about them: processes a dead daemon left
/// running (`ProcessLedger`), apps missing from the table or down.
extension Reconciler {
    /// Stops the processes the table no longer lists but that still run (a dead daemon's), then records the table's.
    /// Returns what was stopped; each is noted for its service's report.
    @discardableResult
    func settleProcesses(_ table: [ManagedProcess]) async -> [ProcessLedger.Orphan] {
        noteProcessManagerRepairs()
        let found = ProcessLedger.orphans(of: recordedProcesses, in: table)
        noteFreshStarts(table, orphans: found)
        guard !found.isEmpty else {
            recordedProcesses = ledger.record(table, previous: recordedProcesses)
            return []
        }
        let timeouts = killTimeouts()
        let stopped = await ProcessLedger.stop(found) { name in timeouts[name] ?? .milliseconds(1600) }
        let owners = appOwners()
        for orphan in stopped {
            logger.warning(
                "stopped a process the process manager no longer listed",
                metadata: ["ferry.app": "\(orphan.entry.name)", "process.pid": "\(orphan.entry.pid)", "ferry.stopped": "\(orphan.stopped)"]
            )
            if let service = owners[orphan.entry.name] {
                repairs[service, default: []].append(
                    "\(orphan.entry.name) (pid \(orphan.entry.pid)) was still running but no longer in the \(processManagerName) table (its daemon died?): stopped it"
                        + (orphan.stopped ? "" : ", but it has not exited yet")
                )
            }
        }
        recordedProcesses = ledger.record(table, previous: recordedProcesses)
        return stopped
    }

    /// Hands what the process manager repaired on its own (a second daemon stopped) to every service it runs apps of.
    private func noteProcessManagerRepairs() {
        let notes = processManager.takeNotices()
        guard !notes.isEmpty else { return }
        for note in notes { logger.warning("the process manager was repaired", metadata: ["ferry.repair": "\(note)"]) }
        for service in Set(appOwners().values).sorted() { repairs[service, default: []].append(contentsOf: notes) }
    }

    /// Notes apps whose recorded processes are gone and that run again as new processes with no restart counted: the
    /// process manager started them afresh without the agent asking (its daemon was restarted and resurrected them).
    private func noteFreshStarts(_ table: [ManagedProcess], orphans: [ProcessLedger.Entry]) {
        let listed = Set(table.compactMap(\.pid))
        let recordedPids = Set(recordedProcesses.map(\.pid))
        let vanished = recordedProcesses.filter { !listed.contains($0.pid) && !orphans.contains($0) }
        let owners = appOwners()
        for name in Set(vanished.map(\.name)).sorted() {
            let now = table.filter { $0.name == name }
            guard !now.isEmpty, let service = owners[name],
                now.allSatisfy({ process in process.restarts == 0 && process.pid.map { !recordedPids.contains($0) } ?? false })
            else { continue }
            let before = vanished.filter { $0.name == name }.map { String($0.pid) }.joined(separator: ", ")
            let after = now.compactMap(\.pid).map(String.init).joined(separator: ", ")
            repairs[service, default: []].append(
                "\(name) was started afresh by \(processManagerName) (pid \(before) gone, now \(after)): its daemon was restarted"
            )
        }
    }

    /// Repairs one app's drift; returns whether it called the process manager. A restart (an instance errored, or
    /// stopped while autorestart is on) waits out `RepairBackoff`, so a crash loop is restarted after a growing wait and
    /// not on every pass; the first restart, and an app found missing from the table (a daemon restart), are repaired
    /// at once. A restart that failed counts as one too.
    func repairDrift(_ action: AppAction, app: AppSpec, service: String, summary: inout PassSummary) async -> Bool {
        let now = ContinuousClock.now
        let backsOff = action == .restart
        if backsOff, let wait = repairBackoff.remainingWait(app: app.name, now: now) {
            logger.debug(
                "drift repair waits",
                metadata: ["ferry.service": "\(service)", "ferry.app": "\(app.name)", "ferry.action": "\(action)", "ferry.wait": "\(wait)"]
            )
            return false
        }
        summary.changed = true
        logger.info("repairing drift", metadata: ["ferry.service": "\(service)", "ferry.app": "\(app.name)", "ferry.action": "\(action)"])
        do {
            try await perform(action, app: app, service: service)
            let (inARow, nextWait) = backsOff ? repairBackoff.recordRepair(app: app.name, now: now) : (1, .zero)
            noteRepair(action, app: app, service: service, inARow: inARow, nextWait: nextWait)
        } catch {
            if backsOff { repairBackoff.recordRepair(app: app.name, now: now) }
            summary.problems.append("\(service): repairing \(app.name) (\(action)) failed: \(error)")
        }
        return true
    }

    /// Notes a drift repair that worked, for the service's report; from the second in a row, with how long the next
    /// one waits.
    private func noteRepair(_ action: AppAction, app: AppSpec, service: String, inARow: Int, nextWait: Duration) {
        var what: String
        switch action {
        case .none: return
        case .start: what = "\(app.name) was not in the \(processManagerName) table; started it again"
        case .restart: what = "\(app.name) was errored or stopped; restarted it"
        case .reload: what = "\(app.name) reloaded"
        case .replace(let reason): what = "\(app.name) did not run as released (\(reason)); replaced it"
        case .delete: what = "\(app.name) removed"
        }
        if inARow > 1 {
            what += " (repair \(inARow) in a row: the next one waits at least \(nextWait.components.seconds) s)"
        }
        repairs[service, default: []].append(what)
    }

    /// What the planner would have done for the applied release of `service`, which it left to an install that then
    /// stopped before touching what runs (a download that failed or waits out its backoff): an env refresh when the
    /// instance env file changed, or a failed one is owed and its backoff is over; else drift repair. Before, only drift
    /// was repaired: an operator's env change (a rotated password) never reached the apps while an artifact could not be
    /// downloaded, for as long as that lasted.
    func keepApplied(_ service: String, apps: [AppSpec], env: InstanceEnvFile?, summary: inout PassSummary) async {
        if let env, let applied = state[service].applied, !apps.isEmpty, !filesOutOfSync.contains(service) {
            let owed = refreshOwed(service, env: env)
            let waiting = owed && refreshBackoff.remainingWait(app: service, now: .now) != nil
            if !waiting, Planner.refreshIsDue(applied: applied, envDigest: env.digest, owed: owed) {
                _ = await retryingRefresh(service, apps: apps, env: env, summary: &summary)
                return
            }
        }
        await repairApplied(service, apps: apps, summary: &summary)
    }

    /// Brings the apps of the applied release of `service` back where they drifted (used when an install stopped before
    /// touching them: the planner leaves a service being installed to its install).
    /// Not while its files are out of sync: PM2 would start them from an ecosystem file that describes another release.
    func repairApplied(_ service: String, apps: [AppSpec], summary: inout PassSummary) async {
        guard !apps.isEmpty, !filesOutOfSync.contains(service), let table = try? await processManager.processes() else { return }
        await settleProcesses(table)
        for app in apps {
            let action = AppAction.decide(desired: app, observed: table.filter { $0.name == app.name }, needsRefresh: false)
            guard action != .none else { continue }
            _ = await repairDrift(action, app: app, service: service, summary: &summary)
        }
    }

    /// Hands each service's repairs of the pass to its state machine (which makes them the service's message), once.
    func reportRepairs(summary: inout PassSummary) {
        for (service, notes) in repairs.sorted(by: { $0.key < $1.key }) where !notes.isEmpty {
            summary.changed = true
            if transition(service, .appsRepaired(notes.joined(separator: "; ")), summary: &summary) == .save { save(&summary) }
        }
        repairs = [:]
    }

    /// The service each app name of an applied or pending release belongs to.
    private func appOwners() -> [String: String] {
        var owners: [String: String] = [:]
        for (service, serviceState) in state.services {
            for release in [serviceState.applied, serviceState.pending].compactMap({ try? $0?.release() }) {
                for app in release.pm2.apps { owners[app.name] = service }
            }
        }
        return owners
    }

    /// Each app's `kill_timeout`, from the applied and pending releases (the process is stopped as its app would be).
    private func killTimeouts() -> [String: Duration] {
        var timeouts: [String: Duration] = [:]
        for (service, serviceState) in state.services {
            for release in [serviceState.applied, serviceState.pending].compactMap({ try? $0?.release() }) {
                for app in AppSpec.specs(for: release, currentLink: layout.currentLink(service), instanceEnv: [:]) {
                    timeouts[app.name] = .milliseconds(app.killTimeoutMilliseconds)
                }
            }
        }
        return timeouts
    }
}
