import Foundation
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle
import Shared

/// A stand-in for a compromised controller: it serves whatever desired-state document the test sets (tampered or
/// replayed envelopes) and records the status reports agents send. Real sockets on 127.0.0.1.
final class RogueController: Sendable {
    actor Recorder {
        var desired: [UInt8] = Array("{}".utf8)
        /// What `GET /v1/roots/{version}` answers (404 while `nil`).
        var root: [UInt8]?
        var reports: [StatusReport] = []
        /// The same reports by the agent id of the request path.
        var reportsByAgent: [String: [StatusReport]] = [:]
        func set(_ bytes: [UInt8]) { desired = bytes }
        func setRoot(_ bytes: [UInt8]?) { root = bytes }
        func append(_ report: StatusReport, from agentID: String) {
            reports.append(report)
            reportsByAgent[agentID, default: []].append(report)
        }
    }

    let recorder = Recorder()
    private let group: ServiceGroup
    private let runner: Task<Void, any Error>

    init(port: Int) {
        let recorder = self.recorder
        let router = Router()
        router.get("/v1/agents/:id/desired-state") { _, _ -> Response in
            let body = await recorder.desired
            return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: body)))
        }
        router.get("/v1/roots/:version") { _, _ -> Response in
            guard let body = await recorder.root else { return Response(status: .notFound) }
            return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: body)))
        }
        router.post("/v1/agents/:id/status") { request, context -> HTTPResponse.Status in
            let buffer = try await request.body.collect(upTo: 4 << 20)
            let report = try StatusReport(json: JSONValue.parse(Array(buffer.readableBytesView)))
            await recorder.append(report, from: context.parameters.get("id") ?? "")
            return .noContent
        }
        var logger = Logger(label: "rogue-controller")
        logger.logLevel = .warning
        let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: port)), logger: logger)
        group = ServiceGroup(configuration: .init(services: [app], logger: logger))
        let group = self.group
        runner = Task { try await group.run() }
    }

    /// Serves `releases` as the desired state of `agentId`.
    func serve(_ releases: [Envelope], agentID: String) async {
        await recorder.set(Array(DesiredState(agentID: agentID, pollSeconds: 1, releases: releases).json.encoded()))
    }

    func stop() async {
        await group.triggerGracefulShutdown()
        _ = try? await runner.value
    }
}
