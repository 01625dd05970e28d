import Logging
import Shared

/// The process manager calls of a pass: apply a service's apps, carry out one app action. Errors stay typed up to
/// the service's message or the pass's problems.
extension Reconciler {
    /// Brings every app of `apps` to how it should run (start, reload or replace it; `needsRefresh`: the release or
    /// the env changed) and deletes those of `previousNames` no longer wanted. Every app is tried; throws what failed.
    func apply(_ apps: [AppSpec], service: String, needsRefresh: Bool, previousNames: Set<String>) async throws(ApplyError) {
        let table: [ManagedProcess]
        do {
            table = try await processManager.processes()
        } catch {
            throw .tableUnreadable(error)
        }
        // A daemon that died mid-install (or mid-rollback) left its apps running: they go before anything starts again.
        await settleProcesses(table)
        var failures: [AppActionFailure] = []
        for app in apps {
            let action = AppAction.decide(desired: app, observed: table.filter { $0.name == app.name }, needsRefresh: needsRefresh)
                .startingAfresh(
                    droppedVariables: variablesToDrop(app.name, service: service),
                    droppedOptions: optionsToDrop(app.name, service: service)
                )
            do throws(AppActionFailure) {
                try await perform(action, app: app, service: service)
            } catch {
                failures.append(error)
            }
        }
        var removals: [AppActionFailure] = []
        let wanted = Set(apps.map(\.name))
        for name in previousNames.subtracting(wanted) where table.contains(where: { $0.name == name }) {
            do {
                try await processManager.delete(appNamed: name)
                environmentApplied(name, service: service)
            } catch {
                removals.append(AppActionFailure(app: name, action: .delete, cause: error))
            }
        }
        guard failures.isEmpty, removals.isEmpty else { throw .appsFailed(failures, removals: removals) }
    }

    /// Carries out one app action of `service` through the process manager.
    func perform(_ action: AppAction, app: AppSpec, service: String) async throws(AppActionFailure) {
        if case .replace(let reason) = action {
            logger.info("replacing app (costs a restart)", metadata: ["ferry.app": "\(app.name)", "ferry.reason": "\(reason)"])
        }
        do {
            try await action.carryOut(on: processManager, appNamed: app.name, desired: app, ecosystem: layout.ecosystemFile(service))
            switch action {
            case .start, .replace, .delete: environmentApplied(app.name, service: service)
            default: break
            }
        } catch {
            throw AppActionFailure(app: app.name, action: action, cause: error)
        }
    }
}
