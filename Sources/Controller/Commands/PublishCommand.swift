import ArgumentParser
import Foundation
import Shared

/// `ferry-controller publish`: upload an artifact, sign a release for it locally, publish it.
struct PublishCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "publish",
        abstract: "Upload an artifact and publish a signed release of a service.",
        discussion: """
            Reads the PM2 ecosystem file (ecosystem.config.js through node, or .json/.yaml), keeps the apps named with \
            --app (all by default), uploads the artifact unless the controller already has it, takes the next serial \
            from the controller, builds the release, validates it exactly as agents will, signs it with every --key \
            (the key never leaves this machine) and publishes it. Prints service, serial and version.

            From the ecosystem file: numbers and booleans in env become strings; env_<name> is merged with \
            --env-name <name>; cwd, namespace and log/pid file options are dropped with a warning (Ferry sets them on \
            the instance). --env KEY=VALUE and --env-file set the release-wide environment (apps' own env wins).
            """
    )

    @OptionGroup var controller: ControllerOptions
    @OptionGroup var signing: SigningKeyOptions

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

    @Option(
        name: .long,
        help: ArgumentHelp("How the release reaches the agents: all, one-at-a-time, waves:10,50,100 or canary:N.", valueName: "STRATEGY")
    )
    var strategy: String = "all"

    @Option(
        name: .long,
        help: ArgumentHelp("How long every agent of a wave must report the release healthy before the next wave (s, m, h).", valueName: "DURATION")
    )
    var waveStable: String = "60s"

    @Option(name: .long, help: "Failed or rolled-back agents tolerated before the controller halts the rollout.")
    var maxFailures: Int = 0

    func validate() throws {
        guard Release.isValidServiceName(service) else { throw ValidationError("--service \(service) must match ^[a-z0-9][a-z0-9-]{0,62}$") }
        guard Release.isValidVersion(version) else { throw ValidationError("--version \(version) must match ^[A-Za-z0-9][A-Za-z0-9._+~-]{0,127}$") }
        _ = try ExpiryText.parse(expiresIn)
        do {
            _ = try RolloutStrategy.parse(strategy)
        } catch {
            throw ValidationError("--strategy: \(error)")
        }
        guard let stable = DurationText.milliseconds(waveStable), stable % 1000 == 0, stable <= 86_400_000 else {
            throw ValidationError("--wave-stable \(waveStable) must be whole seconds like 60s, 5m or 1h (at most 24h)")
        }
        guard (0...100_000).contains(maxFailures) else { throw ValidationError("--max-failures must be between 0 and 100000") }
        for pair in env { _ = try EnvironmentFile.pair(pair, source: "--env") }
    }

    func run() async throws {
        let client = try controller.client()
        let keys = try signing.keyPaths().map { try SigningKey(contentsOf: $0) }
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
        // Validate everything before uploading anything: a typo in the ecosystem file should cost nothing.
        var input = ReleaseComposer.Input(
            service: service,
            version: version,
            serial: 1,
            artifact: ArtifactReference(url: ArtifactReference.controllerPath(for: digest), sha256: digest, size: size),
            apps: apps,
            appNames: app,
            environment: environment,
            environmentName: envName,
            healthURL: healthURL,
            createdAt: Date(),
            expiresIn: expiry
        )
        let draft = try ReleaseComposer.compose(input)
        for warning in draft.warnings { FileHandle.standardError.write(Data("warning: \(warning)\n".utf8)) }

        if try await client.hasArtifact(digest) {
            Console.print("artifact \(digest.hex) is already on the controller")
        } else {
            let progress = UploadProgress(total: size, label: "uploading \((artifact as NSString).lastPathComponent)")
            _ = try await client.uploadArtifact(file: artifact, digest: digest) { progress.update($0) }
            progress.finish()
        }
        let publisher = ReleasePublisher(client: client)
        input.serial = try await publisher.nextSerial(of: service)
        input.createdAt = Date()
        let release = try ReleaseComposer.compose(input).release
        let stableSeconds = (DurationText.milliseconds(waveStable) ?? 60_000) / 1000
        let query = "strategy=\(strategy)&waveStableSeconds=\(stableSeconds)&maxFailures=\(maxFailures)"
        _ = try await publisher.publish(release, keys: keys, query: query)
        Console.print("published service \(release.service) serial \(release.serial) version \(release.version)")
        if strategy != "all" {
            Console.print("rollout \(strategy): waves advance after \(stableSeconds)s healthy; halts after \(maxFailures + 1) failure(s)")
        }
    }
}
