import Foundation
import Shared

/// Builds a strict release from a loose PM2 ecosystem file and the `publish` flags (DESIGN §5).
///
/// PM2 is lenient and the signed release is strict; this bridges the two the way PM2 does: numbers and booleans in
/// `env` become strings, `env_<name>` is merged when `--env-name <name>` is given, options Ferry owns are dropped with a
/// warning. Everything else is kept as written and then validated by `Release(json:)`, the same rules agents apply.
struct ReleaseComposer {
    /// What to publish.
    struct Input {
        var service: String
        var version: String
        var serial: Int64
        var artifact: ArtifactReference
        /// The ecosystem's apps, loose.
        var apps: [JSONValue]
        /// Keep only these apps (all when empty).
        var appNames: [String] = []
        /// Release-wide environment (from `--env-file`, then `--env K=V`).
        var environment: [String: String] = [:]
        /// Merge each app's `env_<name>` block into its `env`.
        var environmentName: String?
        var healthURL: String?
        var createdAt: Date
        var expiresIn: Duration
    }

    /// The release and the warnings to show the operator.
    struct Output {
        var release: Release
        var warnings: [String]
    }

    static func compose(_ input: Input) throws -> Output {
        var warnings: [String] = []
        var apps: [JSONValue] = []
        var namesSeen: Set<String> = []
        var foundEnvironmentBlock = false
        for (index, loose) in input.apps.enumerated() {
            guard case .object(var fields) = loose else {
                throw ComposeError.invalidApp(index: index, reason: "an app must be an object, got \(loose.typeName)")
            }
            guard case .string(let name)? = fields["name"] else {
                throw ComposeError.invalidApp(index: index, reason: "every app needs a string \"name\" (Ferry manages apps by name)")
            }
            namesSeen.insert(name)
            if !input.appNames.isEmpty && !input.appNames.contains(name) { continue }
            for key in fields.keys.sorted() where PM2App.ferryOwned.contains(key) {
                fields[key] = nil
                warnings.append("app \(name): dropped \(key) (Ferry sets it on the instance)")
            }
            var environment = try Self.stringEnvironment(fields["env"], app: name, block: "env")
            if let environmentName = input.environmentName, let block = fields["env_\(environmentName)"] {
                foundEnvironmentBlock = true
                environment.merge(try Self.stringEnvironment(block, app: name, block: "env_\(environmentName)")) { _, new in new }
            }
            // Every env_<name> block is resolved now: a release carries the merged env only.
            for key in fields.keys where key.hasPrefix("env_") { fields[key] = nil }
            if environment.isEmpty {
                fields["env"] = nil
            } else {
                fields["env"] = .object(environment.mapValues { .string($0) })
            }
            apps.append(.object(fields))
        }
        let missing = input.appNames.filter { !namesSeen.contains($0) }
        guard missing.isEmpty else {
            throw ComposeError.unknownApps(missing, available: namesSeen.sorted())
        }
        guard !apps.isEmpty else { throw ComposeError.noApps }
        if let environmentName = input.environmentName, !foundEnvironmentBlock {
            warnings.append("no app has an env_\(environmentName) block; --env-name \(environmentName) changed nothing")
        }
        var document: [String: JSONValue] = [
            "service": .string(input.service),
            "serial": .integer(input.serial),
            "version": .string(input.version),
            "createdAt": .string(Timestamp.format(input.createdAt)),
            "expiresAt": .string(Timestamp.format(input.createdAt.addingTimeInterval(Double(input.expiresIn.components.seconds)))),
            "artifact": .object([
                "url": .string(input.artifact.url), "sha256": .string(input.artifact.sha256.hex), "size": .integer(input.artifact.size),
            ]),
            "pm2": .object(["apps": .array(apps)]),
        ]
        if !input.environment.isEmpty { document["env"] = .object(input.environment.mapValues { .string($0) }) }
        if let url = input.healthURL { document["health"] = .object(["http": .string(url)]) }
        do {
            return Output(release: try Release(json: .object(document)), warnings: warnings)
        } catch {
            throw ComposeError.invalidRelease(error)
        }
    }

    /// An `env` block with PM2's coercions: numbers and booleans become strings, `null` drops the variable.
    private static func stringEnvironment(_ value: JSONValue?, app: String, block: String) throws -> [String: String] {
        guard let value, value != .null else { return [:] }
        guard case .object(let fields) = value else {
            throw ComposeError.invalidApp(index: nil, reason: "app \(app): \(block) must be an object, got \(value.typeName)")
        }
        var result: [String: String] = [:]
        for (key, item) in fields {
            switch item {
            case .string(let text): result[key] = text
            case .integer(let number): result[key] = String(number)
            case .number(let number): result[key] = number.rounded() == number && abs(number) < 1e15 ? String(Int64(number)) : String(number)
            case .bool(let flag): result[key] = flag ? "true" : "false"
            case .null: continue
            case .array, .object:
                throw ComposeError.invalidApp(
                    index: nil,
                    reason: "app \(app): \(block).\(key) is an \(item.typeName); environment values must be strings, numbers or booleans"
                )
            }
        }
        return result
    }
}

/// Why an ecosystem file and the flags do not make a release.
enum ComposeError: Error, CustomStringConvertible {
    case invalidApp(index: Int?, reason: String)
    case unknownApps([String], available: [String])
    case noApps
    case invalidRelease(DocumentError)

    var description: String {
        switch self {
        case .invalidApp(let index, let reason):
            index.map { "apps[\($0)]: \(reason)" } ?? reason
        case .unknownApps(let names, let available):
            "--app \(names.joined(separator: ", ")): not in the ecosystem file (it has \(available.joined(separator: ", ")))"
        case .noApps:
            "the ecosystem file has no apps"
        case .invalidRelease(let error):
            "the release would be invalid: \(error)"
        }
    }
}
