import Foundation
import Shared
import TestSupport
import Testing

/// An install that cannot download its artifact, for real: a live controller and `ferry-agent run`, then a controller
/// (on the same address) that offers a genuinely signed release whose artifact an object store on 127.0.0.1 does not
/// have yet.
@Suite("Install retry end to end", .serialized)
struct InstallRetryEndToEndTests {
    @Test(
        "an artifact that cannot be downloaded leaves the applied release running and reported, and installs once it can be",
        .timeLimit(.minutes(5)),
        arguments: Backend.allCases
    )
    func downloadFailureThenRetry(backend: Backend) async throws {
        _ = try backend.pm2Binary()
        try await FleetFixture.with { fleet in
            try await TestFileServer.with { store in try await run(fleet, store: store, backend: backend) }
        }
    }

    private func run(_ fleet: FleetFixture, store: TestFileServer, backend: Backend) async throws {
        try await fleet.startController()
        let port = try freeLoopbackPort()
        try await fleet.publish(serial: 1, version: "1.0.0", port: port)
        let config = try await fleet.enrollAgent(name: "edge-r", backend: backend)
        _ = try fleet.startAgent(config: config, label: "agent", environment: ["FERRY_POLL_SECONDS": "1"])
        try await eventually("v1 serving", timeout: .seconds(60)) { await fleet.appAnswer(port: port)?.hasPrefix("1.0.0") == true ? true : nil }

        // v2's artifact lives in an object store that does not have it yet.
        let archive = try Array(Data(contentsOf: fleet.makeArtifact(version: "2.0.0")))
        let digest = SHA256.hash(archive)
        let artifact = ArtifactReference(url: "http://127.0.0.1:\(store.port)/web-2.tgz", sha256: digest, size: Int64(archive.count))
        let v2 = try fleet.release(serial: 2, version: "2.0.0", artifact: artifact, port: port)

        let controllerPort = fleet.controller.port
        let agentID = try Self.agentID(config: config)
        await fleet.controller.stop()
        let controller = RogueController(port: controllerPort)
        do {
            await controller.serve([v2], agentID: agentID)
            let waiting = try await eventually("the agent reports serial 2 not installed yet", timeout: .seconds(60)) { () -> ServiceStatus? in
                let service = await controller.recorder.reports.last?.services.first { $0.service == "web" }
                return service?.message.hasPrefix("serial 2 (2.0.0) not installed yet: artifact \(digest)") == true ? service : nil
            }
            #expect(waiting.phase == .running, "v1 still runs: \(waiting.message)")
            #expect(waiting.serial == 1)
            #expect(waiting.targetSerial == 2)
            #expect(waiting.failures.isEmpty, "a failed download is no verdict on the release: \(waiting.failures)")
            #expect(await fleet.appAnswer(port: port)?.hasPrefix("1.0.0") == true)

            // The store gets the artifact: the pending serial is tried again and installed.
            store.publish(archive, at: "/web-2.tgz")
            try await eventually("v2 serving", timeout: .seconds(60)) { await fleet.appAnswer(port: port)?.hasPrefix("2.0.0") == true ? true : nil }
            let running = try await eventually("the agent reports serial 2 running", timeout: .seconds(60)) { () -> ServiceStatus? in
                let service = await controller.recorder.reports.last?.services.first { $0.service == "web" }
                return service?.serial == 2 && service?.phase == .running ? service : nil
            }
            #expect(running.message == "serial 2 (2.0.0) is running and healthy")
        }
        await controller.stop()
    }

    private static func agentID(config: String) throws -> String {
        let json = try JSONValue.parse(Array(try Data(contentsOf: URL(fileURLWithPath: config))))
        guard let id = json["agentId"]?.stringValue else { throw HarnessError("no agentID in \(config)") }
        return id
    }
}
