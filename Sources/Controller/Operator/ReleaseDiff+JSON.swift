import Shared

extension ReleaseDiff {
    /// The diff for `plan --json`: names only, never env values.
    var json: JSONValue {
        let strings: ([String]) -> JSONValue = { .array($0.map { .string($0) }) }
        return .object([
            "versionFrom": versionFrom.map { .string($0) } ?? .null, "versionTo": .string(versionTo),
            "artifactSizeFrom": artifactSizeFrom.map { .integer($0) } ?? .null, "artifactSizeTo": .integer(artifactSizeTo),
            "artifactChanged": .bool(artifactChanged), "healthChanged": .bool(healthChanged),
            "envAdded": strings(envAdded), "envRemoved": strings(envRemoved), "envChanged": strings(envChanged),
            "apps": .array(
                apps.map { app in
                    .object([
                        "name": .string(app.name), "kind": .string(app.kind), "options": strings(app.options),
                        "instancesFrom": app.instances.map { .string($0.from) } ?? .null,
                        "instancesTo": app.instances.map { .string($0.to) } ?? .null,
                        "envAdded": strings(app.envAdded), "envRemoved": strings(app.envRemoved), "envChanged": strings(app.envChanged),
                        "restartReason": app.restartReason.map { .string($0) } ?? .null,
                    ])
                }
            ),
        ])
    }
}
