import Foundation
import Shared
import TestSupport
import Testing

/// `ferry-controller publish --artifact-url`, the built binaries end to end: the artifact is hosted elsewhere (a
/// loopback file server standing in for S3), the CLI hashes the local copy and signs the URL with its digest and size,
/// the controller stores no bytes, and a real agent downloads from that host without its agent token and runs it.
@Suite("publish --artifact-url end to end", .serialized)
struct ArtifactURLEndToEndTests {
    @Test(.timeLimit(.minutes(3)))
    func agentsFetchAnArtifactHostedElsewhereWithoutTheirToken() async throws {
        try await FleetFixture.with { fleet in
            try await TestFileServer.with { bucket in try await run(fleet, bucket) }
        }
    }

    private func run(_ fleet: FleetFixture, _ bucket: TestFileServer) async throws {
        try await fleet.startController()
        let port = try freeLoopbackPort()
        let config = try await fleet.enrollAgent(name: "fetcher", instanceEnv: ["PORT": "\(port)"])
        _ = try fleet.startAgent(config: config, label: "fetcher")

        let archive = try fleet.makeArtifact(version: "1.0.0")
        let bytes = try [UInt8](Data(contentsOf: archive))
        let digest = SHA256.hash(bytes)
        bucket.publish(bytes, at: "/bucket/web-1.0.0.tgz")
        let artifactURL = "\(bucket.baseURL)/bucket/web-1.0.0.tgz"
        let ecosystem = fleet.root.appendingPathComponent("ecosystem.json")
        try Data(#"{"apps": [{"name": "web-app", "script": "server.js"}]}"#.utf8).write(to: ecosystem)

        let publish = try await Command.run(
            TestPaths.executable("ferry-controller"),
            [
                "publish", "--controller", fleet.controller.url, "--token", fleet.operatorToken, "--key", fleet.operatorKeyPath,
                "--service", "web", "--version", "1.0.0", "--artifact", archive.path, "--artifact-url", artifactURL,
                "--ecosystem", ecosystem.path, "--health-url", "http://127.0.0.1:${PORT}/",
            ],
            environment: ["PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": fleet.root.path]
        )
        #expect(publish.status == 0, "\(publish.stdout)\(publish.stderr)")
        #expect(publish.stdout.contains("is fetched by agents from \(artifactURL)"), "\(publish.stdout)")
        #expect(!publish.stdout.contains("uploading"), "nothing is uploaded to the controller: \(publish.stdout)")

        // The signed release pins the URL with the local file's digest and size.
        let releases = try await fleet.controller.get("/v1/services/web/releases", token: fleet.operatorToken)
        let envelopeJSON = try #require(releases["releases"]?.arrayValue.first?["envelope"])
        let envelope = try Envelope(json: envelopeJSON, path: "envelope")
        let release = try Release.decode(envelope.payload)
        #expect(release.artifact == ArtifactReference(url: artifactURL, sha256: digest, size: Int64(bytes.count)))

        try await eventually("the agent runs 1.0.0 from the bucket", timeout: .seconds(120)) {
            await fleet.appAnswer(port: port)?.hasPrefix("1.0.0") == true ? true : nil
        }
        let downloads = bucket.requests.filter { $0.path == "/bucket/web-1.0.0.tgz" }
        #expect(!downloads.isEmpty, "the agent downloaded from the bucket")
        #expect(bucket.requests.allSatisfy { $0.authorization == nil }, "no agent token leaves for another host")

        // The controller holds no bytes of it: it answers 404 for the digest, and its artifact directory is empty.
        let stored = fleet.root.appendingPathComponent("controller/artifacts/\(digest.hex)").path
        #expect(!FileManager.default.fileExists(atPath: stored))
        let http = HTTPClient()
        let head = try await http.send(
            HTTPClient.Request(
                method: .head,
                url: "\(fleet.controller.url)/v1/artifacts/\(digest.hex)",
                headers: ["Authorization": "Bearer \(fleet.operatorToken)"]
            )
        )
        #expect(head.status == 404)
    }
}
