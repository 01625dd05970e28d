import ArgumentParser
import Logging
import Shared

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// `ferry-agent fetch`: download, verify and extract one artifact exactly as the daemon does.
struct FetchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fetch",
        abstract: "Download, verify and extract one artifact (a debugging tool; the agent does this for every release).",
        discussion: """
            The artifact is downloaded into the agent's cache (<state-dir>/artifacts/<sha256>, streaming into \
            <sha256>.part while hashing, resuming a .part left by an interrupted run), checked against --size and \
            --sha256 (a mismatch deletes the download), then extracted into --out, which must not exist. An artifact \
            already in the cache is verified and reused without network.

            Formats are recognised by content: tar, tar.gz, tar.zst, zip. Archives with absolute paths, ".." \
            components, links leaving the tree, devices or FIFOs are refused; setuid/setgid bits are dropped.

            A relative --url (/v1/artifacts/<sha256>) is fetched from --controller with the agent token read from \
            --token-file; absolute URLs (for example presigned object-store URLs) never get the token.

            Example (an artifact the controller stores, fetched with this instance's agent token):
              ferry-agent fetch --url /v1/artifacts/9f86...08 --controller https://ferry.example.com \\
                --token-file /var/lib/ferry/agent.token \\
                --sha256 9f86...08 --size 1234567 --out /tmp/release --state-dir /tmp/ferry-state
            """
    )

    @Option(help: ArgumentHelp("The artifact URL: absolute http(s), or /v1/artifacts/<sha256> with --controller.", valueName: "URL"))
    var url: String

    @Option(help: ArgumentHelp("The expected SHA-256 of the artifact (64 lowercase hex characters).", valueName: "HEX"))
    var sha256: String

    @Option(help: ArgumentHelp("The expected size of the artifact in bytes; the download never goes beyond it.", valueName: "N"))
    var size: Int64

    @Option(help: ArgumentHelp("Directory to extract into; must not exist (its parent must).", valueName: "DIR"))
    var out: String

    @Option(help: ArgumentHelp("The agent state directory holding the artifact cache.", valueName: "DIR"))
    var stateDir: String = "/var/lib/ferry"

    @Option(help: ArgumentHelp("Controller base URL for relative artifact URLs.", valueName: "URL"))
    var controller: String?

    @Option(help: ArgumentHelp("File holding the agent's bearer token (sent to the controller only).", valueName: "FILE"))
    var tokenFile: String?

    @Option(help: ArgumentHelp("PEM bundle of CA certificates to trust instead of the system store.", valueName: "FILE"))
    var caFile: String?

    @Flag(
        name: .long,
        help: "Allow a plain http:// --controller whose host is not loopback (the token would travel unencrypted)."
    )
    var allowInsecureHttp = false

    @Flag(help: "Log each step (debug level).")
    var verbose = false

    func validate() throws {
        guard SHA256Digest(hex: sha256) != nil else { throw ValidationError("--sha256 must be 64 lowercase hex characters") }
        guard ArtifactReference.sizes.contains(size) else {
            throw ValidationError("--size must be 1 to \(ArtifactReference.sizes.upperBound) bytes (what a release may name), not \(size)")
        }
        if url.hasPrefix("/"), controller == nil { throw ValidationError("a relative --url needs --controller") }
        // The token goes to --controller (relative URLs only): the same rule as enroll and run.
        if url.hasPrefix("/"), tokenFile != nil, let controller {
            do throws(TransportRule.Refusal) {
                try TransportRule.check(controllerURL: controller, allowInsecureHTTP: allowInsecureHttp)
            } catch {
                throw ValidationError("--controller: \(error)")
            }
        }
    }

    func run() async throws {
        var logger = Logger(label: "ferry-agent")
        logger.logLevel = verbose ? .debug : .info
        guard let digest = SHA256Digest(hex: sha256) else { throw ValidationError("--sha256 must be 64 lowercase hex characters") }
        var token: String?
        if let tokenFile {
            let text: String
            do {
                text = try KeyFile.read(tokenFile)
            } catch {
                throw ValidationError("the token file: \(error)")
            }
            token = text.split(whereSeparator: \.isWhitespace).first.map(String.init)
        }
        var httpConfiguration = HTTPClient.Configuration()
        httpConfiguration.caFile = caFile
        try Self.makeDirectory(stateDir)
        let fetcher = ArtifactFetcher(
            configuration: .init(stateDirectory: stateDir),
            client: HTTPClient(configuration: httpConfiguration),
            controllerURL: controller,
            token: token,
            logger: logger
        )
        let extractor = ArchiveExtractor(logger: logger)

        let clock = ContinuousClock()
        let fetchStart = clock.now
        let artifact = try await fetcher.fetch(ArtifactReference(url: url, sha256: digest, size: size))
        let fetchTime = clock.now - fetchStart
        let extractStart = clock.now
        let summary = try await extractor.extract(artifact.path, into: out)
        let extractTime = clock.now - extractStart

        let how: String
        switch artifact.source {
        case .cache: how = "from the cache"
        case .download(let bytes, let resumedFrom):
            how = resumedFrom > 0 ? "downloaded \(bytes) bytes, resumed at \(resumedFrom)" : "downloaded \(bytes) bytes"
        }
        print("artifact \(digest.hex): \(size) bytes verified (\(how)) in \(Self.format(fetchTime))")
        print("extracted \(summary.entries) entries (\(summary.bytes) bytes) into \(summary.path) in \(Self.format(extractTime))")
    }

    private static func makeDirectory(_ path: String) throws {
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw ValidationError("\(path): cannot create the state directory: \(error)")
        }
    }

    private static func format(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        let milliseconds = seconds * 1000 + attoseconds / 1_000_000_000_000_000
        return "\(milliseconds / 1000).\(String(1000 + milliseconds % 1000).dropFirst()) s"
    }
}
