import Glibc
import Shared

/// Variables an app's env no longer names, and PM2 options its ecosystem entry no longer sets. PM2 keeps both across a
/// reload (it merges the new env into the one it stored, and the new app config into the stored one, deleting nothing),
/// so a secret removed from the instance env file, a variable a new release drops, or a `cron_restart` or
/// `max_memory_restart` a new release (or a rollback) no longer sets would stay in force; such an app is started afresh
/// (delete + start) instead of reloaded. What an app last ran with is read from the ecosystem file about to be
/// replaced, which holds exactly what Ferry gave it.
extension Reconciler {
    /// Writes `apps` as `service`'s ecosystem file, first noting, per app, the variables and options the file being
    /// replaced gave it and `apps` no longer do (`removedEnvironment`, `removedOptions`, consumed by `apply`).
    func writeEcosystem(_ service: String, apps: [AppSpec]) throws(AtomicFile.Failure) {
        let previousApps = Self.apps(inEcosystem: try? SmallFile.read(layout.ecosystemFile(service), limit: Self.ecosystemReadLimit))
        let previous = previousApps.compactMapValues(Self.environment(of:))
        let previousOptions = previousApps.mapValues(Self.options(of:))
        let rendered = EcosystemWriter.render(apps: apps, namespace: configuration.namespace)
        let newOptions = Self.apps(inEcosystem: rendered).mapValues(Self.options(of:))
        var removed = removedEnvironment[service] ?? [:]
        var removedSettings = removedOptions[service] ?? [:]
        for app in apps {
            if let before = previous[app.name] {
                let gone = before.subtracting(app.env.keys)
                // Still owed from an earlier write whose apply did not happen: kept, less what the new env names again.
                let owed = (removed[app.name] ?? []).subtracting(app.env.keys)
                removed[app.name] = gone.union(owed).isEmpty ? nil : gone.union(owed)
            }
            if let before = previousOptions[app.name] {
                let now = newOptions[app.name] ?? []
                let gone = before.subtracting(now).union((removedSettings[app.name] ?? []).subtracting(now))
                removedSettings[app.name] = gone.isEmpty ? nil : gone
            }
        }
        let owedBefore = (removedEnvironment[service], removedOptions[service])
        removedEnvironment[service] = removed.isEmpty ? nil : removed
        removedOptions[service] = removedSettings.isEmpty ? nil : removedSettings
        // Kept on disk before the file that no longer names them replaces the one that did: an agent killed between the
        // two writes read nothing removed from the new file at its restart, reloaded (PM2 merging), and a revoked
        // secret stayed in the app, the state saying the reload worked.
        do {
            try persistOwed(service)
        } catch {
            (removedEnvironment[service], removedOptions[service]) = owedBefore
            throw error
        }
        try files.writeEcosystem(service, bytes: rendered)
        if Self.exitAfterEcosystemWrite { exit(0) }
    }

    /// Test hook (`FERRY_TEST_EXIT_AFTER_ECOSYSTEM_WRITE=1`): the agent ends right after writing an ecosystem file, as
    /// a kill -9 between that write and the apply would end it.
    private static let exitAfterEcosystemWrite = ProcessEnvironment.current["FERRY_TEST_EXIT_AFTER_ECOSYSTEM_WRITE"] == "1"

    /// `services/<svc>/removed.json`: what `removedEnvironment` and `removedOptions` owe `service`'s apps, kept across a
    /// restart of the agent.
    func owedFile(_ service: String) -> String { "\(layout.serviceDir(service))/removed.json" }

    /// Writes what is owed to `service`'s apps (or removes the file when nothing is).
    func persistOwed(_ service: String) throws(AtomicFile.Failure) {
        let environment = removedEnvironment[service] ?? [:]
        let options = removedOptions[service] ?? [:]
        let path = owedFile(service)
        guard !environment.isEmpty || !options.isEmpty else {
            if unlink(path) == 0 { try AtomicFile.syncDirectory(containing: path) }
            return
        }
        func lists(_ owed: [String: Set<String>]) -> JSONValue { .object(owed.mapValues { .array($0.sorted().map(JSONValue.string)) }) }
        try AtomicFile.write(Array(JSONValue.object(["env": lists(environment), "options": lists(options)]).encoded()), to: path, mode: 0o600)
    }

    /// Reads what a previous run of the agent still owed each service's apps (`persistOwed`), at start.
    func loadOwed() {
        func sets(_ value: JSONValue?) -> [String: Set<String>] {
            guard case .object(let apps)? = value else { return [:] }
            return apps.compactMapValues { list -> Set<String>? in
                guard case .array(let items) = list else { return nil }
                let names = Set(items.compactMap { if case .string(let name) = $0 { name } else { nil } })
                return names.isEmpty ? nil : names
            }
        }
        for service in configuration.services {
            guard let bytes = try? SmallFile.read(owedFile(service), limit: 4 << 20), case .object(let document)? = try? JSONValue.parse(bytes)
            else { continue }
            for (app, names) in sets(document["env"]) { removedEnvironment[service, default: [:]][app, default: []].formUnion(names) }
            for (app, names) in sets(document["options"]) { removedOptions[service, default: [:]][app, default: []].formUnion(names) }
        }
    }

    /// The variables `app` of `service` must lose, when the process manager keeps them across a reload.
    func variablesToDrop(_ app: String, service: String) -> Set<String> {
        guard processManager.reloadKeepsRemovedEnvironment else { return [] }
        return removedEnvironment[service]?[app] ?? []
    }

    /// The PM2 options `app` of `service` must lose, when the process manager keeps them across a reload.
    func optionsToDrop(_ app: String, service: String) -> Set<String> {
        guard processManager.reloadKeepsRemovedEnvironment else { return [] }
        return removedOptions[service]?[app] ?? []
    }

    /// `app` was started afresh (or deleted): nothing is owed to it any more.
    func environmentApplied(_ app: String, service: String) {
        guard removedEnvironment[service]?[app] != nil || removedOptions[service]?[app] != nil else { return }
        removedEnvironment[service]?[app] = nil
        if removedEnvironment[service]?.isEmpty == true { removedEnvironment[service] = nil }
        removedOptions[service]?[app] = nil
        if removedOptions[service]?.isEmpty == true { removedOptions[service] = nil }
        // Best effort: what stays on disk is owed once more at most (one more fresh start of the app).
        try? persistOwed(service)
    }

    /// An ecosystem file's apps by name; empty for a file that is missing or not one.
    static func apps(inEcosystem bytes: [UInt8]?) -> [String: [String: JSONValue]] {
        guard let bytes, bytes.count <= ecosystemReadLimit, case .object(let document)? = try? JSONValue.parse(bytes),
            case .array(let apps)? = document["apps"]
        else { return [:] }
        var result: [String: [String: JSONValue]] = [:]
        for case .object(let app) in apps {
            if case .string(let name)? = app["name"] { result[name] = app }
        }
        return result
    }

    /// An app's options as PM2 keeps them from the file (`env`, handled apart, and `name` left out). PM2's
    /// `Config.validateJSON` drops an option whose name has an underscore when its value is falsy (`0`, `false`, `""`,
    /// `null`): it falls back to the camel-case alias, which the file does not set. Such a value never reaches the
    /// daemon, so a reload keeps the older one: it counts as unset.
    static func options(of app: [String: JSONValue]) -> Set<String> {
        Set(app.filter { key, value in key != "env" && key != "name" && !droppedByPM2(key, value) }.keys)
    }

    /// `options(of:)` of each app of an ecosystem file, by app name.
    static func options(inEcosystem bytes: [UInt8]?) -> [String: Set<String>] {
        apps(inEcosystem: bytes).mapValues(options(of:))
    }

    /// Whether PM2 drops `key` from an app config when reading a file (see `options(of:)`).
    static func droppedByPM2(_ key: String, _ value: JSONValue) -> Bool {
        switch value {
        case .null: true
        case .bool(false), .integer(0), .string(""): key.contains("_")
        case .number(let number): number == 0 && key.contains("_")
        default: false
        }
    }

    /// An app's env variable names, or `nil` without an `env` object.
    static func environment(of app: [String: JSONValue]) -> Set<String>? {
        guard case .object(let env)? = app["env"] else { return nil }
        return Set(env.keys)
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

    /// Whether a refresh of `service` with `env` failed for some apps: it is owed again once its backoff is over.
    func refreshOwed(_ service: String, env: InstanceEnvFile) -> Bool { failedRefreshes[service]?.digest == env.digest }

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
