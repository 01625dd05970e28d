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
            --app (all by default), uploads the artifact unless the controller already has it (or, with --artifact-url, \
            pins that URL with the local file's SHA-256 and size and uploads nothing), takes the next serial \
            from the controller, builds the release, validates it exactly as agents will, signs it with every --key \
            (the key never leaves this machine) and publishes it. Prints service, serial and version.

            The ecosystem file means what it means to `pm2 start`: PM2 7's aliases, coercions and defaults (cluster mode \
            for a node app that sets instances, the interpreter from the extension or the file's content), a script \
            found on PATH when it is not a file of the release, a command with spaces run through bash -c, cwd \
            relative to the release root (the ecosystem file's directory). Every script is checked in the artifact: \
            present, a regular file, runnable by its interpreter. Namespace, log and pid files and watch are Ferry's \
            on the instance: dropped with a warning each. Every problem of the file is reported in one run.

            JavaScript (and .json, which PM2 reads as JavaScript) is evaluated by node in a child process that sees \
            only PATH, HOME and the variables named with --pass-env; publish says which variables the file read. \
            env_<name> is merged with --env-name <name>. --env KEY=VALUE and --env-file set the release-wide \
            environment (apps' own env wins).
            """
    )

    @OptionGroup var controller: ControllerOptions
    @OptionGroup var signing: SigningKeyOptions
    @OptionGroup var release: ReleaseOptions

    @Option(
        name: .long,
        help: ArgumentHelp("How the release reaches the agents: all, one-at-a-time, waves:10,50,100 or canary:N.", valueName: "STRATEGY")
    )
    var strategy: String = "all"

    @Option(
        name: .long,
        help: ArgumentHelp(
            "How long every agent of a wave must report the release healthy before the next wave (60s, 5m; a bare number is seconds).",
            valueName: "DURATION"
        )
    )
    var waveStable: String = "60s"

    @Option(name: .long, help: "Failed or rolled-back agents tolerated before the controller halts the rollout.")
    var maxFailures: Int = 0

    @Flag(name: .long, help: "Print the controller's answer as JSON (progress and warnings go to standard error).")
    var json = false

    func validate() throws {
        do {
            _ = try RolloutStrategy.parse(strategy)
        } catch {
            throw ValidationError("--strategy: \(error)")
        }
        guard let stable = CommandLineDuration.milliseconds(waveStable), stable % 1000 == 0, stable <= 86_400_000 else {
            throw ValidationError("--wave-stable \(waveStable) must be whole seconds like 60s, 5m or 1h (at most 24h)")
        }
        guard (0...100_000).contains(maxFailures) else { throw ValidationError("--max-failures must be between 0 and 100000") }
    }

    func run() async throws {
        let client = try controller.client()
        let keys = try signing.keys()
        // Validate everything before uploading anything: a typo in the ecosystem file should cost nothing.
        var input = try await release.composeInput()
        let draft = try ReleaseComposer.composePrintingWarnings(input)

        let digest = input.artifact.sha256
        let uploaded: Bool
        // The controller's copy, by its size: one that is not this size is damaged (truncated by a partial restore), and
        // the upload replaces it. It was skipped, and every publish then failed on `artifact_size_mismatch`, with no way
        // to repair the copy but a hand-made upload.
        let stored = release.artifactURL == nil ? try await client.storedArtifactSize(digest, publishing: input.service) : nil
        if let url = release.artifactURL {
            // Hosted elsewhere: the controller stores no bytes; agents fetch from there and check the pinned digest.
            note("artifact \(digest.hex) (\(input.artifact.size) bytes) is fetched by agents from \(RedactedURL.redact(url))")
            uploaded = false
        } else if let stored, stored < 0 || stored == input.artifact.size {
            note("artifact \(digest.hex) is already on the controller")
            uploaded = false
        } else {
            if let stored {
                note("the controller's copy of artifact \(digest.hex) has \(stored) bytes, not \(input.artifact.size): uploading it again")
            }
            let progress = UploadProgress(
                total: input.artifact.size,
                label: "uploading \((release.artifact as NSString).lastPathComponent)",
                toStandardError: json
            )
            do {
                _ = try await client.uploadArtifact(file: release.artifact, digest: digest, size: input.artifact.size) { progress.update($0) }
            } catch {
                // Every byte may have arrived and the answer been lost (a load balancer's idle timeout while the
                // controller fsyncs a large artifact, or copies it into PostgreSQL): what the controller holds decides.
                guard let held = try? await client.storedArtifactSize(digest, publishing: input.service), held < 0 || held == input.artifact.size
                else {
                    throw error
                }
                note("the upload's answer was lost (\(error)), but the controller holds artifact \(digest.hex) whole: publishing")
            }
            progress.finish()
            uploaded = true
        }
        let publisher = ReleasePublisher(client: client)
        input.serial = try await publisher.nextSerial(of: input.service)
        input.createdAt = Date()
        let signed = try ReleaseComposer.compose(input).release
        let stableSeconds = (CommandLineDuration.milliseconds(waveStable) ?? 60_000) / 1000
        let query = "strategy=\(strategy)&waveStableSeconds=\(stableSeconds)&maxFailures=\(maxFailures)"
        let answer = try await publisher.publish(signed, keys: keys, query: query)
        if json {
            var fields = answer.object ?? [:]
            fields["artifactUploaded"] = .bool(uploaded)
            Console.print(String(decoding: JSONValue.object(fields).encoded(), as: UTF8.self))
            return
        }
        Console.print("published service \(signed.service) serial \(signed.serial) version \(signed.version)")
        if answer.object?["repeated"] == .bool(true) {
            Console.print("(the controller had stored it at the first attempt, whose answer was lost)")
        }
        if let note = ReleasePublisher.approvalNote(answer, service: signed.service, serial: signed.serial) {
            Console.print(note)
        } else if strategy != "all" {
            Console.print("rollout \(strategy): waves advance after \(stableSeconds)s healthy; halts after \(maxFailures + 1) failure(s)")
        }
    }

    /// A progress line: on standard output, or standard error when standard output carries JSON.
    private func note(_ line: String) {
        if json {
            Console.error(line)
        } else {
            Console.print(line)
        }
    }
}
