import ArgumentParser
import Foundation
import Shared

/// What a release is made of, as `publish` and `plan` take it from the command line.
struct ReleaseOptions: ParsableArguments {
    @Option(name: .long, help: "The service name (^[a-z0-9][a-z0-9-]{0,62}$).")
    var service: String

    @Option(name: .long, help: "The version to show for this release (free-form, like 1.4.2 or a git sha).")
    var version: String

    @Option(name: .long, help: ArgumentHelp("The artifact: a .tar.gz of the service's files.", valueName: "FILE"))
    var artifact: String

    @Option(name: .long, help: ArgumentHelp("The PM2 ecosystem file (.js, .json, .yaml).", valueName: "FILE"))
    var ecosystem: String

    @Option(name: .long, help: ArgumentHelp("Keep only this app of the ecosystem file. Repeatable.", valueName: "NAME"))
    var app: [String] = []

    @Option(name: .long, help: ArgumentHelp("A release-wide environment variable. Repeatable.", valueName: "KEY=VALUE"))
    var env: [String] = []

    @Option(name: .long, help: ArgumentHelp("A dotenv file of release-wide environment variables.", valueName: "FILE"))
    var envFile: String?

    @Option(name: .long, help: ArgumentHelp("Merge each app's env_<name> block (like pm2 start --env <name>).", valueName: "NAME"))
    var envName: String?

    @Option(name: .long, help: ArgumentHelp("A URL on the instance that must answer 2xx for the release to be kept.", valueName: "URL"))
    var healthURL: String?

    @Option(name: .long, help: ArgumentHelp("How long agents may install this release: d, h or m (default 90d).", valueName: "DURATION"))
    var expiresIn: String = "90d"

    func validate() throws {
        guard Release.isValidServiceName(service) else { throw ValidationError("--service \(service) must match ^[a-z0-9][a-z0-9-]{0,62}$") }
        guard Release.isValidVersion(version) else { throw ValidationError("--version \(version) must match ^[A-Za-z0-9][A-Za-z0-9._+~-]{0,127}$") }
        _ = try ExpiryText.parse(expiresIn)
        for pair in env { _ = try EnvironmentFile.pair(pair, source: "--env") }
    }

    /// Reads the ecosystem, env files and the artifact's digest, and composes the release with a placeholder serial.
    /// Everything is validated here, before anything is uploaded.
    func composeInput() async throws -> ReleaseComposer.Input {
        let expiry = try ExpiryText.parse(expiresIn)
        var environment = try envFile.map { try EnvironmentFile.read($0) } ?? [:]
        for pair in env {
            let (key, value) = try EnvironmentFile.pair(pair, source: "--env")
            environment[key] = value
        }
        let apps = try await EcosystemFile.apps(at: ecosystem)
        guard FileManager.default.fileExists(atPath: artifact) else { throw CLIError("\(artifact): no such file") }
        let (digest, size) = try SHA256.hash(fileAt: artifact)
        guard size > 0 else { throw CLIError("\(artifact): the artifact is empty") }
        return ReleaseComposer.Input(
            service: service, version: version, serial: 1,
            artifact: ArtifactReference(url: ArtifactReference.controllerPath(for: digest), sha256: digest, size: size),
            apps: apps, appNames: app, environment: environment, environmentName: envName, healthURL: healthURL,
            createdAt: Date(), expiresIn: expiry)
    }
}
