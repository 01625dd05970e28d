import Foundation
import Shared

/// What installing `candidate` changes on an instance that runs `current` — names only, never env values.
struct ReleaseDiff: Equatable {
    /// One app's changes.
    struct AppChange: Equatable {
        var name: String
        /// `added`, `removed` or `changed`.
        var kind: String
        /// PM2 options whose value changes (env excluded; instance count and script reported on their own).
        var options: [String] = []
        var instances: (from: String, to: String)?
        var envAdded: [String] = []
        var envRemoved: [String] = []
        var envChanged: [String] = []
        /// The change needs delete + start (a restart even in cluster mode), as the agent will do.
        var restartReason: String?

        static func == (lhs: AppChange, rhs: AppChange) -> Bool {
            lhs.name == rhs.name && lhs.kind == rhs.kind && lhs.options == rhs.options && lhs.instances?.from == rhs.instances?.from
                && lhs.instances?.to == rhs.instances?.to && lhs.envAdded == rhs.envAdded && lhs.envRemoved == rhs.envRemoved
                && lhs.envChanged == rhs.envChanged && lhs.restartReason == rhs.restartReason
        }
    }

    var versionFrom: String?
    var versionTo: String
    var artifactSizeFrom: Int64?
    var artifactSizeTo: Int64
    var artifactChanged: Bool
    var envAdded: [String] = []
    var envRemoved: [String] = []
    var envChanged: [String] = []
    var healthChanged: Bool
    var apps: [AppChange] = []

    /// Compares two releases of one service. `current` is `nil` for an instance that runs nothing yet.
    init(from current: Release?, to candidate: Release) {
        versionFrom = current?.version
        versionTo = candidate.version
        artifactSizeFrom = current?.artifact.size
        artifactSizeTo = candidate.artifact.size
        artifactChanged = current?.artifact.sha256 != candidate.artifact.sha256
        (envAdded, envRemoved, envChanged) = Self.compare(current?.env ?? [:], candidate.env)
        healthChanged = current.map { $0.health != candidate.health } ?? false
        let old = Dictionary((current?.pm2.apps ?? []).map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        for app in candidate.pm2.apps {
            guard let before = old[app.name] else {
                apps.append(AppChange(name: app.name, kind: "added"))
                continue
            }
            let change = Self.compare(before, app)
            if change != AppChange(name: app.name, kind: "changed") { apps.append(change) }
        }
        for app in current?.pm2.apps ?? [] where !candidate.pm2.apps.contains(where: { $0.name == app.name }) {
            apps.append(AppChange(name: app.name, kind: "removed"))
        }
    }

    private static func compare(_ before: PM2App, _ after: PM2App) -> AppChange {
        var change = AppChange(name: after.name, kind: "changed")
        let keys = Set(before.options.keys).union(after.options.keys).subtracting(["env", "instances"])
        change.options = keys.filter { before.options[$0] != after.options[$0] }.sorted()
        if before.script != after.script { change.options.insert("script", at: 0) }
        let instancesBefore = before.options["instances"].map(describe) ?? "1"
        let instancesAfter = after.options["instances"].map(describe) ?? "1"
        if instancesBefore != instancesAfter { change.instances = (instancesBefore, instancesAfter) }
        (change.envAdded, change.envRemoved, change.envChanged) = compare(env(before), env(after))
        var reasons: [String] = []
        if before.script != after.script { reasons.append("script") }
        if before.cwd != after.cwd { reasons.append("cwd") }
        if before.options["interpreter"] != after.options["interpreter"] { reasons.append("interpreter") }
        if mode(before) != mode(after) { reasons.append("exec mode") }
        if change.instances != nil { reasons.append("instance count") }
        if !reasons.isEmpty { change.restartReason = reasons.joined(separator: ", ") + " changed: delete + start (a restart)" }
        return change
    }

    private static func mode(_ app: PM2App) -> ExecMode {
        if case .string(let text)? = app.options["exec_mode"], let mode = ExecMode(pm2Value: text) { return mode }
        return .fork
    }

    private static func env(_ app: PM2App) -> [String: String] {
        guard case .object(let fields)? = app.options["env"] else { return [:] }
        return fields.compactMapValues { if case .string(let text) = $0 { text } else { nil } }
    }

    private static func compare(_ before: [String: String], _ after: [String: String]) -> ([String], [String], [String]) {
        let added = after.keys.filter { before[$0] == nil }.sorted()
        let removed = before.keys.filter { after[$0] == nil }.sorted()
        let changed = after.keys.filter { before[$0] != nil && before[$0] != after[$0] }.sorted()
        return (added, removed, changed)
    }

    private static func describe(_ value: JSONValue) -> String {
        switch value {
        case .string(let text): text
        case .integer(let n): "\(n)"
        case .number(let d): "\(d)"
        default: "\(value)"
        }
    }

    /// Human lines, indented by `indent`.
    func lines(indent: String = "  ") -> [String] {
        var out: [String] = []
        out.append("\(indent)version: \(versionFrom ?? "(nothing installed)") -> \(versionTo)")
        if artifactChanged {
            let from = artifactSizeFrom.map { Self.size($0) } ?? "-"
            out.append("\(indent)artifact: \(from) -> \(Self.size(artifactSizeTo))")
        } else {
            out.append("\(indent)artifact: unchanged (\(Self.size(artifactSizeTo)))")
        }
        out += envLines(added: envAdded, removed: envRemoved, changed: envChanged, label: "release env", indent: indent)
        if healthChanged { out.append("\(indent)health check: changed") }
        for app in apps {
            switch app.kind {
            case "added": out.append("\(indent)app \(app.name): added (started)")
            case "removed": out.append("\(indent)app \(app.name): removed (deleted)")
            default:
                var parts: [String] = []
                if let instances = app.instances { parts.append("instances \(instances.from) -> \(instances.to)") }
                if !app.options.isEmpty { parts.append("PM2 options changed: \(app.options.joined(separator: ", "))") }
                out.append("\(indent)app \(app.name): \(parts.isEmpty ? "env only" : parts.joined(separator: "; "))")
                out += envLines(added: app.envAdded, removed: app.envRemoved, changed: app.envChanged, label: "env", indent: indent + "  ")
                if let reason = app.restartReason { out.append("\(indent)  \(reason)") }
            }
        }
        if versionFrom != nil, !artifactChanged, apps.isEmpty, envAdded.isEmpty, envRemoved.isEmpty, envChanged.isEmpty, !healthChanged {
            out.append("\(indent)(no change besides the version)")
        }
        return out
    }

    private func envLines(added: [String], removed: [String], changed: [String], label: String, indent: String) -> [String] {
        var out: [String] = []
        if !added.isEmpty { out.append("\(indent)\(label) added: \(added.joined(separator: ", "))") }
        if !removed.isEmpty { out.append("\(indent)\(label) removed: \(removed.joined(separator: ", "))") }
        if !changed.isEmpty { out.append("\(indent)\(label) changed: \(changed.joined(separator: ", "))") }
        return out
    }

    static func size(_ bytes: Int64) -> String {
        if bytes >= 1 << 20 { return String(format: "%.1f MiB", Double(bytes) / Double(1 << 20)) }
        if bytes >= 1 << 10 { return String(format: "%.1f KiB", Double(bytes) / Double(1 << 10)) }
        return "\(bytes) B"
    }
}
