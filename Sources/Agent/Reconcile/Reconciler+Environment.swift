import Shared

/// Variables an app's env no longer names. PM2 keeps them across a reload (it merges the new env into the one it
/// stored), so a secret removed from the instance env file, or a variable a new release drops, would stay in the running
/// process; such an app is started afresh (delete + start) instead of reloaded. What an app last ran with is read from
/// the ecosystem file about to be replaced, which holds exactly the env Ferry gave it.
extension Reconciler {
    /// Writes `apps` as `service`'s ecosystem file, first noting, per app, the variables the file being replaced gave
    /// it and `apps` no longer do (`removedEnvironment`, consumed by `apply`).
    func writeEcosystem(_ service: String, apps: [AppSpec]) throws(AtomicFile.Failure) {
        let previous = Self.environments(inEcosystem: try? SmallFile.read(layout.ecosystemFile(service), limit: Self.ecosystemReadLimit))
        var removed = removedEnvironment[service] ?? [:]
        for app in apps {
            guard let before = previous[app.name] else { continue }
            let gone = before.subtracting(app.env.keys)
            // Still owed from an earlier write whose apply did not happen: kept, less what the new env names again.
            let owed = (removed[app.name] ?? []).subtracting(app.env.keys)
            removed[app.name] = gone.union(owed).isEmpty ? nil : gone.union(owed)
        }
        try files.writeEcosystem(service, bytes: EcosystemWriter.render(apps: apps, namespace: configuration.namespace))
        removedEnvironment[service] = removed.isEmpty ? nil : removed
    }

    /// The variables `app` of `service` must lose, when the process manager keeps them across a reload.
    func variablesToDrop(_ app: String, service: String) -> Set<String> {
        guard processManager.reloadKeepsRemovedEnvironment else { return [] }
        return removedEnvironment[service]?[app] ?? []
    }

    /// `app` was started afresh (or deleted): nothing is owed to it any more.
    func environmentApplied(_ app: String, service: String) {
        removedEnvironment[service]?[app] = nil
        if removedEnvironment[service]?.isEmpty == true { removedEnvironment[service] = nil }
    }

    /// An ecosystem file's apps' env variable names, by app name; empty for a file that is missing or not one.
    static func environments(inEcosystem bytes: [UInt8]?) -> [String: Set<String>] {
        guard let bytes, bytes.count <= ecosystemReadLimit, case .object(let document)? = try? JSONValue.parse(bytes),
            case .array(let apps)? = document["apps"]
        else { return [:] }
        var result: [String: Set<String>] = [:]
        for case .object(let app) in apps {
            guard case .string(let name)? = app["name"], case .object(let env)? = app["env"] else { continue }
            result[name] = Set(env.keys)
        }
        return result
    }

    /// Far above any file the agent writes (a release is at most a few MiB); a larger one is not read.
    static let ecosystemReadLimit = 64 << 20

    /// An env refresh that failed for some of a service's apps.
    struct FailedRefresh: Sendable, Equatable {
        /// The instance env file it was for.
        var digest: String
        /// The apps not yet reloaded with it.
        var apps: Set<String>
    }

    /// The services whose failed env refresh of their current env file waits out its backoff (each a problem of the
    /// pass): the planner plans no refresh for them and drift-repairs their apps meanwhile.
    func refreshesWaiting(envs: [String: InstanceEnvFile], summary: inout PassSummary) -> Set<String> {
        var waiting: Set<String> = []
        for (service, failed) in failedRefreshes.sorted(by: { $0.key < $1.key }) where envs[service]?.digest == failed.digest {
            guard let wait = refreshBackoff.remainingWait(app: service, now: .now) else { continue }
            waiting.insert(service)
            summary.problems.append(
                "\(service): reload after an env change failed for \(failed.apps.sorted().joined(separator: ", ")); "
                    + "tried again in \(max(1, wait.components.seconds)) s"
            )
        }
        return waiting
    }

    /// Carries out a planned env refresh of `service`. A refresh of the same env file that failed for some apps
    /// reloads only those, and is planned no sooner than `refreshBackoff` allows (`refreshesWaiting`): before, each pass reloaded every app of the
    /// service again (the healthy ones too, a restart each in fork mode) for as long as one app failed. A changed env
    /// file starts over with every app. Returns whether the process table may have changed.
    func retryingRefresh(_ service: String, apps: [AppSpec], env: InstanceEnvFile, summary: inout PassSummary) async -> Bool {
        var reloading = apps
        if let failed = failedRefreshes[service], failed.digest == env.digest {
            let retried = apps.filter { failed.apps.contains($0.name) }
            if !retried.isEmpty { reloading = retried }
        } else {
            failedRefreshes[service] = nil
            refreshBackoff.forget([service])
        }
        summary.changed = true
        repairBackoff.forget(reloading.map(\.name))
        restartWatch.forget(reloading.map(\.name))
        await refreshEnvironment(service, apps: apps, reloading: reloading, env: env, summary: &summary)
        return true
    }
}
