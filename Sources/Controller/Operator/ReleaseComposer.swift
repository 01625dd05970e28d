import Foundation
import Shared

/// Builds a strict release from an operator's PM2 ecosystem file and the `publish` flags (DESIGN §5).
///
/// The file is read exactly as PM2 reads it (`EcosystemNormalizer`), checked against the artifact that ships with it,
/// and written down in Ferry's normalised form, which `Release(json:)` then validates with the same rules agents
/// apply. Every problem of the file is reported in one run; nothing is uploaded until there are none.
struct ReleaseComposer {
    /// What to publish.
    struct Input {
        var service: String
        var version: String
        var serial: Int64
        var artifact: ArtifactReference
        /// The evaluated ecosystem file.
        var ecosystem: EcosystemReader.Evaluation
        /// The ecosystem file's directory: the release root.
        var releaseRoot: String
        /// The artifact's files; `nil` checks no script on disk.
        var artifactTree: ArtifactTree?
        /// Keep only these apps (all when empty).
        var appNames: [String] = []
        /// Release-wide environment (from `--env-file`, then `--env K=V`).
        var environment: [String: String] = [:]
        /// Merge each app's `env_<name>` block into its `env` (`pm2 start --env <name>`).
        var environmentName: String?
        /// Variables the operator let the ecosystem file see (`--pass-env`).
        var passedEnvironment: [String] = []
        var healthURL: String?
        /// `health.stableSeconds` (the agents' default when `nil`).
        var stableSeconds: Int64? = nil
        var createdAt: Date
        var expiresIn: Duration
    }

    /// The release and the warnings to show the operator.
    struct Output {
        var release: Release
        var warnings: [String]
    }

    static func compose(_ input: Input, which: @escaping (String) -> String? = { EcosystemNormalizer.which($0) }) throws -> Output {
        var configuration = EcosystemNormalizer.Configuration(
            environmentName: input.environmentName,
            releaseRoot: input.releaseRoot,
            artifact: input.artifactTree,
            which: which
        )
        configuration.selectedNames = Set(input.appNames)
        let normalised = EcosystemNormalizer(configuration: configuration).normalize(input.ecosystem.document)
        var problems = normalised.problems
        var warnings: [String] = []
        if let report = input.ecosystem.readReport { warnings.append(report) }
        let credentials = RedactedURL.credentialParameters(in: input.artifact.url)
        if !credentials.isEmpty {
            warnings.append(
                "the artifact URL carries \(credentials.joined(separator: ", ")): it is signed into the release until the release expires ("
                    + Timestamp.format(input.createdAt.addingTimeInterval(Double(input.expiresIn.components.seconds)))
                    + "), shown to every agent of the service and in the "
                    + "release listings, and a signed URL that expires sooner (an S3 presigned URL lives at most 7 days) leaves agents "
                    + "enrolled later, and a rollback to this release, unable to download it"
            )
        }

        let missing = input.appNames.filter { !normalised.names.contains($0) }
        if !missing.isEmpty {
            problems.append(
                .init(
                    severity: .error,
                    field: "--app",
                    message: "\(missing.joined(separator: ", ")): not in the ecosystem file (it has \(normalised.names.joined(separator: ", ")))"
                )
            )
        }
        var apps: [JSONValue] = []
        for (path, app) in normalised.apps {
            guard case .object(var fields) = app, case .string(let name)? = fields["name"] else { continue }
            if !input.appNames.isEmpty && !input.appNames.contains(name) { continue }
            if case .object(var env)? = fields["env"] {
                // `...process.env` copies the evaluation's own PATH and HOME: they describe the publisher, not the instance.
                for key in ["PATH", "HOME"] where !input.passedEnvironment.contains(key) {
                    if let value = env[key], value == input.ecosystem.environment[key].map(JSONValue.string) {
                        env[key] = nil
                        problems.append(
                            .init(
                                severity: .warning,
                                field: "\(path).env.\(key)",
                                message:
                                    "dropped: it is the publishing machine's own \(key) (the file copies process.env); set it in the file, or pass it with --pass-env \(key)"
                            )
                        )
                    }
                }
                fields["env"] = env.isEmpty ? nil : .object(env)
                for key in env.keys.sorted() {
                    if let problem = PM2App.envKeyProblem(key) {
                        problems.append(.init(severity: .error, field: "\(path).env.\(key)", message: problem))
                    }
                }
            }
            for option in PM2App.injectedVariableOptions {
                if case .string(let variable)? = fields[option], let problem = PM2App.injectedVariableProblem(option: option, variable: variable) {
                    problems.append(.init(severity: .error, field: "\(path).\(option)", message: problem))
                }
            }
            do {
                _ = try PM2App(json: .object(fields), path: path)
                apps.append(.object(fields))
            } catch {
                problems.append(.init(severity: .error, field: "", message: "\(error)"))
            }
        }
        for key in input.environment.keys.sorted() {
            if let problem = PM2App.envKeyProblem(key) { problems.append(.init(severity: .error, field: "--env \(key)", message: problem)) }
        }
        if let name = input.environmentName, !normalised.foundEnvironmentBlock {
            warnings.append("no app has an env_\(name) block, nor the file a deploy.\(name).env; --env-name \(name) changed nothing")
        }
        let errors = problems.filter { $0.severity == .error }
        warnings += problems.filter { $0.severity == .warning }.map(\.description)
        guard errors.isEmpty else { throw ComposeError.problems(errors, warnings: warnings) }
        guard !apps.isEmpty else { throw ComposeError.noApps }

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
        var health: [String: JSONValue] = [:]
        if let url = input.healthURL { health["http"] = .string(url) }
        if let stable = input.stableSeconds {
            health["stableSeconds"] = .integer(stable)
            if stable >= 60 { health["deadlineSeconds"] = .integer(stable + 60) }
        }
        if !health.isEmpty { document["health"] = .object(health) }
        do {
            return Output(release: try Release(json: .object(document)), warnings: warnings)
        } catch {
            throw ComposeError.invalidRelease(error)
        }
    }
}

extension ReleaseComposer {
    /// `compose`, printing every warning to stderr (also when the file has errors, so one run shows everything).
    static func composePrintingWarnings(_ input: Input) throws -> Output {
        do {
            let output = try compose(input)
            for warning in output.warnings { printWarning(warning) }
            return output
        } catch ComposeError.problems(let errors, let warnings) {
            for warning in warnings { printWarning(warning) }
            throw ComposeError.problems(errors, warnings: [])
        }
    }

    /// A warning on standard error, escaped as `Console` escapes (which this file, also built into the ecosystem fuzz
    /// target, cannot use): a warning quotes the ecosystem file's names and values.
    private static func printWarning(_ warning: String) {
        FileHandle.standardError.write(Data((TerminalText.safe("warning: \(warning)") + "\n").utf8))
    }
}

/// Why an ecosystem file and the flags do not make a release.
enum ComposeError: Error, CustomStringConvertible {
    /// Every error of the file, each naming its field; and the warnings found along the way.
    case problems([EcosystemProblem], warnings: [String])
    case noApps
    case invalidRelease(DocumentError)

    var description: String {
        switch self {
        case .problems(let errors, _):
            errors.count == 1
                ? "the ecosystem file cannot be published: \(errors[0])"
                : "the ecosystem file has \(errors.count) problems:\n" + errors.map { "  \($0)" }.joined(separator: "\n")
        case .noApps:
            "the ecosystem file has no apps"
        case .invalidRelease(let error):
            "the release would be invalid: \(error)"
        }
    }
}
