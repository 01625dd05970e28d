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

    @Option(
        name: .customLong("artifact-url"),
        help: ArgumentHelp(
            "Where agents download the artifact instead of the controller (an S3 or HTTPS URL); --artifact is the same file, hashed here and pinned with its size in the signed release.",
            valueName: "URL"
        )
    )
    var artifactURL: String?

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

    @Option(
        name: .long,
        help: ArgumentHelp(
            "Let the ecosystem file see this variable of the environment (it sees only PATH and HOME otherwise). Repeatable.",
            valueName: "NAME"
        )
    )
    var passEnv: [String] = []

    @Option(name: .long, help: ArgumentHelp("A URL on the instance that must answer 2xx for the release to be kept.", valueName: "URL"))
    var healthURL: String?

    @Option(
        name: .long,
        help: ArgumentHelp("How long the release must stay healthy on an agent before the agent keeps it (default 10).", valueName: "SECONDS")
    )
    var stableSeconds: Int64?

    @Option(name: .long, help: ArgumentHelp("How long agents may install this release: d, h or m (default 90d).", valueName: "DURATION"))
    var expiresIn: String = "90d"

    func validate() throws {
        guard Release.isValidServiceName(service) else { throw ValidationError("--service \(service) must match ^[a-z0-9][a-z0-9-]{0,62}$") }
        guard Release.isValidVersion(version) else { throw ValidationError("--version \(version) must match ^[A-Za-z0-9][A-Za-z0-9._+~-]{0,127}$") }
        _ = try ExpiryText.parse(expiresIn)
        for pair in env { _ = try ReleaseEnvironment.pair(pair, source: "--env") }
        if let stableSeconds, !(0...3540).contains(stableSeconds) {
            throw ValidationError(
                "--stable-seconds must be between 0 and 3540 (the health deadline is 60 s, or the stable time plus 60 s from 60 on, and at most 3600), got \(stableSeconds)"
            )
        }
        for name in passEnv where !Field.isEnvironmentName(name) {
            throw ValidationError("--pass-env \(name) must be a variable name like API_URL")
        }
        if let artifactURL { try Self.validateArtifactURL(artifactURL) }
    }

    /// An artifact hosted elsewhere: an absolute `https://` URL (plain `http://` on loopback only, for tests and demos),
    /// with a host, without user info (credentials would be signed into the release for every agent to read).
    static func validateArtifactURL(_ text: String) throws(ValidationError) {
        guard text.utf8.count <= 2048, let components = URLComponents(string: text), let scheme = components.scheme?.lowercased(),
            let host = components.host, !host.isEmpty
        else {
            throw ValidationError(
                "--artifact-url \(RedactedURL.redact(text).prefix(200)) must be an absolute URL like https://bucket.s3.amazonaws.com/api/1.4.2.tgz"
            )
        }
        guard components.user == nil, components.password == nil else {
            throw ValidationError("--artifact-url must not carry user:password: every agent can read the signed release")
        }
        let loopback = host == "localhost" || host == "::1" || host.hasPrefix("127.")
        guard scheme == "https" || (scheme == "http" && loopback) else {
            throw ValidationError(
                "--artifact-url must be https:// (plain http:// only on loopback): agents check the digest, but the URL may also be private"
            )
        }
    }

    /// Reads the ecosystem, env files and the artifact's digest, and composes the release with a placeholder serial.
    /// Everything is validated here, before anything is uploaded.
    func composeInput() async throws -> ReleaseComposer.Input {
        let expiry = try ExpiryText.parse(expiresIn)
        var environment = try envFile.map { try ReleaseEnvironment.read(envFile: $0) } ?? [:]
        for pair in env {
            let (key, value) = try ReleaseEnvironment.pair(pair, source: "--env")
            environment[key] = value
        }
        let evaluation = try await EcosystemReader.evaluate(at: ecosystem, passEnvironment: passEnv)
        guard FileManager.default.fileExists(atPath: artifact) else { throw CLIError("\(artifact): no such file") }
        let (digest, size) = try SHA256.hash(fileAt: artifact)
        guard size > 0 else { throw CLIError("\(artifact): the artifact is empty") }
        let tree = try ArtifactTree(archiveAt: artifact)
        let root = (URL(fileURLWithPath: ecosystem).standardizedFileURL.resolvingSymlinksInPath().path as NSString).deletingLastPathComponent
        return ReleaseComposer.Input(
            service: service,
            version: version,
            serial: 1,
            artifact: ArtifactReference(url: artifactURL ?? ArtifactReference.controllerPath(for: digest), sha256: digest, size: size),
            ecosystem: evaluation,
            releaseRoot: root,
            artifactTree: tree,
            appNames: app,
            environment: environment,
            environmentName: envName,
            passedEnvironment: passEnv,
            healthURL: healthURL,
            stableSeconds: stableSeconds,
            createdAt: Date(),
            expiresIn: expiry
        )
    }
}
