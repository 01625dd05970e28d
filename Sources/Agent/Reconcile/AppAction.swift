import Shared

/// What the agent does to one app so the process manager's table matches the desired state.
///
/// `decide(desired:observed:needsRefresh:)` is pure: the same inputs always give the same action, so the planner
/// and its tests call it directly. The rules follow what real PM2 7 does (Tests/AgentTests/Fixtures/pm2/captures):
/// - a reload (or `startOrReload`, or `restart <file>`) never changes an existing app's script or cwd, so a changed
///   script path, cwd, interpreter, exec mode or instance count needs delete + start (`path-02`…`path-10`);
/// - the `current` symlink is re-resolved at every spawn, so a new release behind an unchanged path only needs a
///   reload (`symlink-03`, `symlink-04`);
/// - a reload of an errored or stopped app starts it again (`symlink-11`, `errored-02`, `reload-stopped`).
enum AppAction: Sendable, Equatable, CustomStringConvertible {
    /// Nothing to do.
    case none
    /// The app is absent: start it from the ecosystem file.
    case start
    /// Same script, interpreter, exec mode and instance count, but a new release or env: reload it (zero-downtime in
    /// cluster mode, a restart in fork mode), refreshing its env from the ecosystem file.
    case reload
    /// Delete + start, because PM2 cannot change `reason` on a running app. This costs a restart (a short outage
    /// even in cluster mode), and the report says so.
    case replace(reason: String)
    /// A Ferry-owned app that is no longer desired.
    case delete
    /// The app is `errored`, or `stopped` while autorestart is on, and nothing else changed. (An `autorestart: false`
    /// app that stopped, or one that exited with a code of its `stop_exit_codes`, is left alone: the operator asked for
    /// it not to be restarted; a new release reloads it.)
    case restart

    /// Decides the action for one app name.
    ///
    /// - Parameters:
    ///   - desired: the app as it should run, or `nil` when this instance should not run it any more.
    ///   - observed: the process manager's elements with that name in Ferry's namespace (one per instance).
    ///   - needsRefresh: the service's release or its instance env changed since the app was last applied.
    static func decide(desired: AppSpec?, observed: [ManagedProcess], needsRefresh: Bool) -> AppAction {
        guard let desired else { return observed.isEmpty ? .none : .delete }
        if observed.isEmpty { return .start }
        let differences = differences(desired: desired, observed: observed)
        if !differences.isEmpty { return .replace(reason: differences.joined(separator: "; ")) }
        // A reload also starts errored and stopped instances again, so a refresh covers them too.
        if needsRefresh { return .reload }
        // An instance that exited with one of its stop_exit_codes was stopped by PM2 on purpose: left alone too.
        let down = observed.contains { process in
            process.status == .errored
                || (process.status == .stopped && desired.autorestart && !ProcessTableCheck.finishedCleanly(process, desired))
        }
        return down ? .restart : .none
    }

    /// This action, or a replace when it is a reload that would keep what the app must lose: env variables its env no
    /// longer names, or PM2 options its ecosystem entry no longer sets. PM2 merges a reload's env and app config into
    /// what it stored and deletes nothing (`Utility.extend`, `Utility.extendMix`), so a dropped `cron_restart`,
    /// `max_memory_restart` or `wait_ready` would stay in force; only a fresh start removes them.
    func startingAfresh(droppedVariables: Set<String>, droppedOptions: Set<String>) -> AppAction {
        guard self == .reload else { return self }
        var reasons: [String] = []
        if !droppedVariables.isEmpty {
            reasons.append("its env no longer names \(droppedVariables.sorted().joined(separator: ", ")), which a reload would keep")
        }
        if !droppedOptions.isEmpty {
            reasons.append("its ecosystem entry no longer sets \(droppedOptions.sorted().joined(separator: ", ")), which a reload would keep")
        }
        return reasons.isEmpty ? self : .replace(reason: reasons.joined(separator: "; "))
    }

    /// Why the running app cannot be reloaded into `desired`, one phrase per difference; empty when a reload fits.
    static func differences(desired: AppSpec, observed: [ManagedProcess]) -> [String] {
        var reasons: [String] = []
        let wantedScript = normalisedPath(desired.script)
        // A program named without a path (`npm`) is stored by PM2 as the file its PATH lookup found: same base name.
        let isBareProgram = !desired.script.contains("/")
        let programNames = programBaseNames(desired.script)
        // Every instance is compared: an instance started from an older path must not hide behind the others.
        if let stale = observed.first(where: { process in
            isBareProgram
                ? !programNames.contains(process.scriptPath.split(separator: "/").last.map(String.init) ?? "")
                : normalisedPath(process.scriptPath) != wantedScript
        }) {
            reasons.append("script changed from \(stale.scriptPath) to \(desired.script)")
        }
        // PM2 keeps an app's cwd across reloads too (`path-02`…`path-04`): a release that moves it needs a fresh start.
        let wantedCwd = normalisedPath(desired.cwd)
        if let stale = observed.first(where: { !$0.cwd.isEmpty && normalisedPath($0.cwd) != wantedCwd }) {
            reasons.append("cwd changed from \(stale.cwd) to \(desired.cwd)")
        }
        let wantedInterpreter = InterpreterKind(desired: desired.interpreter)
        if let stale = observed.first(where: { process in
            process.interpreter.map { InterpreterKind(observed: $0) != wantedInterpreter } ?? false
        }) {
            reasons.append("interpreter changed from \(stale.interpreter ?? "none") to \(desired.interpreter ?? "none")")
        }
        if let stale = observed.first(where: { $0.execMode != desired.execMode }) {
            reasons.append("exec mode changed from \(stale.execMode.rawValue) to \(desired.execMode.rawValue)")
        }
        if observed.count != desired.instances {
            reasons.append("instances changed from \(observed.count) to \(desired.instances)")
        }
        return reasons
    }

    /// The base names of the file PM2 runs for a program named without a path: the one its PATH lookup found (the same
    /// name); `bash` or `sh` for a command line with a space (`npm start`: `Common.verifyConfs` runs it as `bash -c`);
    /// PM2's own static server for `serve` (`API.startApps`: lib/API/Serve.js). Checked on the real PM2 7.0.3. Each of
    /// the last two read as a changed script, and the app was deleted and started again at every drift check.
    static func programBaseNames(_ script: String) -> Set<String> {
        if script.contains(" ") { return ["bash", "sh"] }
        if script == "serve" { return ["serve", "Serve.js"] }
        return [script]
    }

    /// Whether carrying out this action changes the table (and so needs `save()` afterwards).
    var changesTable: Bool { self != .none }

    var description: String {
        switch self {
        case .none: "none"
        case .start: "start"
        case .reload: "reload"
        case .replace(let reason): "replace (delete + start, costs a restart): \(reason)"
        case .delete: "delete"
        case .restart: "restart"
        }
    }

    /// Lexically normalised absolute path, as Node's `path.resolve` stores it: `//` and `.` collapsed, `..` applied.
    /// Symlinks are deliberately not resolved: PM2 keeps `…/current/server.js` as given.
    static func normalisedPath(_ path: String) -> String {
        var parts: [Substring] = []
        for part in path.split(separator: "/", omittingEmptySubsequences: true) {
            switch part {
            case ".": continue
            case "..": _ = parts.popLast()
            default: parts.append(part)
            }
        }
        return "/" + parts.joined(separator: "/")
    }

    /// An interpreter in a form that survives PM2's rewriting (`node`, an absolute node path, `none`).
    enum InterpreterKind: Equatable {
        /// Run the script directly (PM2's `none`).
        case direct
        /// Node.js, by name or by path (PM2 may store `process.execPath`).
        case node
        /// Anything else, by the last path component (`/usr/bin/python3` and `python3` are the same).
        case other(String)

        /// The kind for `AppSpec.interpreter` (`nil` = run directly, which the ecosystem file writes as `none`).
        init(desired: String?) {
            guard let desired else {
                self = .direct
                return
            }
            self.init(observed: desired)
        }

        /// The kind for PM2's `exec_interpreter`.
        init(observed: String) {
            let name = observed.split(separator: "/").last.map(String.init) ?? observed
            switch name {
            case "none", "": self = .direct
            case "node", "nodejs": self = .node
            default: self = .other(name)
            }
        }
    }
}

extension AppAction {
    /// Carries out this action for the app named `name` through `manager`, then reads the table again.
    ///
    /// `pm2 reload` exits 0 even when the new code crashes at boot (`symlink-08`, `symlink-09`), so the returned table
    /// (Ferry's namespace, every app) is what a caller must judge, never the command's success. `.replace` deletes
    /// then starts. The caller runs `manager.save()` once after the last action that `changesTable`.
    ///
    /// - Throws: what `carryOut(on:appNamed:desired:ecosystem:)` throws, and what reading the table throws.
    func perform(
        on manager: some ProcessManager,
        appNamed name: String,
        desired: AppSpec?,
        ecosystem: String
    ) async throws -> [ManagedProcess] {
        try await carryOut(on: manager, appNamed: name, desired: desired, ecosystem: ecosystem)
        return try await manager.processes()
    }

    /// Carries out this action for the app named `name` through `manager`, without reading the table afterwards (the
    /// reconciler reads it once after all of a pass's actions).
    ///
    /// - Throws: what the process manager throws, and `AppActionError.missingDesiredApp` when a start, reload or
    ///   replace comes without the app to run.
    func carryOut(on manager: some ProcessManager, appNamed name: String, desired: AppSpec?, ecosystem: String) async throws {
        switch self {
        case .none:
            break
        case .start:
            try await manager.start(try Self.require(desired, for: name, self), ecosystem: ecosystem)
        case .reload:
            try await manager.reload(try Self.require(desired, for: name, self), ecosystem: ecosystem)
        case .replace:
            let app = try Self.require(desired, for: name, self)
            // Not deleted for a start that would be refused: the app runs on as it was.
            if let refusal = manager.refusal(toRun: app) { throw refusal }
            try await manager.delete(appNamed: name)
            try await manager.start(app, ecosystem: ecosystem)
        case .delete:
            try await manager.delete(appNamed: name)
        case .restart:
            try await manager.restart(appNamed: name)
        }
    }

    private static func require(_ app: AppSpec?, for name: String, _ action: AppAction) throws(AppActionError) -> AppSpec {
        guard let app, app.name == name else { throw .missingDesiredApp(name: name, action: action.description) }
        return app
    }
}

/// A planner bug caught before anything is run.
enum AppActionError: Error, Equatable, CustomStringConvertible {
    /// An action that runs an app was asked for without that app's spec (or with another app's).
    case missingDesiredApp(name: String, action: String)

    var description: String {
        switch self {
        case .missingDesiredApp(let name, let action):
            "cannot \(action) app \"\(name)\": no desired app spec of that name was given"
        }
    }
}
