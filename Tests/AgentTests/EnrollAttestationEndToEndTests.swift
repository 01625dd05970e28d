import Foundation
import Hummingbird
import NIOCore
import Shared
import Synchronization
import TestSupport
import Testing

/// The real `ferry-agent enroll` against a live controller set up for enrolment attestation
/// (`--instance-identity-cert`), with a loopback stand-in of the EC2 metadata service serving a signed identity
/// document: the instance enrolls once; its copy (a baked image, or an attacker holding its user data and its
/// document) and an agent without a proof enroll nothing, and nothing is written for them.
@Suite("Enrolment attestation", .serialized)
struct EnrollAttestationEndToEndTests {
    static let account = "123456789012"
    static let instance = "i-0aaaaaaaaaaaaaaaa"
    static let other = "i-0bbbbbbbbbbbbbbbb"

    @Test(.timeLimit(.minutes(3)))
    func anInstanceEnrollsOnceAndNothingElseDoes() async throws {
        try await MetadataStandIn.with(.init(instanceID: Self.instance)) { metadata in
            try await FleetFixture.with { fleet in try await run(fleet, metadata) }
        }
    }

    private func run(_ fleet: FleetFixture, _ metadata: MetadataStandIn) async throws {
        let signers = fleet.root.appendingPathComponent("signers")
        try FileManager.default.createDirectory(at: signers, withIntermediateDirectories: true)
        let aws = try await InstanceIdentitySigner.make(in: signers)
        let forger = try await InstanceIdentitySigner.make(in: signers, name: "forger", subject: "/O=Forger", serial: "0x77")
        func serve(_ instance: String, signer: InstanceIdentitySigner?) async throws {
            let document = InstanceIdentitySigner.document(instanceID: instance, accountID: Self.account)
            metadata.behaviour.instanceID = instance
            metadata.behaviour.identityDocument = document
            metadata.behaviour.identitySignature = try await signer?.sign(document)
        }
        try await fleet.startController(extraArguments: ["--instance-identity-cert", aws.certificate, "--instance-identity-account", Self.account])
        let ec2 = ["--machine-identity", "ec2", "--instance-metadata-url", metadata.baseURL]
        func enroll(_ name: String, _ extra: [String]) async throws -> CommandResult {
            try await fleet.runEnroll(name: name, caFile: nil, extraArguments: extra)
        }
        func configWritten(_ name: String) -> Bool {
            FileManager.default.fileExists(atPath: fleet.root.appendingPathComponent(name).appendingPathComponent("agent.json").path)
        }

        // The instance proves itself and enrolls; the controller shows the instance it proved.
        try await serve(Self.instance, signer: aws)
        let enrolled = try await enroll("web-a", ec2)
        #expect(enrolled.status == 0, "\(enrolled.stdout)\(enrolled.stderr)")
        #expect(configWritten("web-a"))
        let shown = try await fleet.controller.get("/v1/agents/web-a", token: fleet.operatorToken)
        #expect(shown["instanceId"]?.stringValue == Self.instance, "\(shown)")
        let documentRequests = metadata.requests.filter { $0.path.hasPrefix("/latest/dynamic/instance-identity/") }
        #expect(documentRequests.count == 2 && documentRequests.allSatisfy { $0.token == MetadataStandIn.token }, "\(documentRequests)")

        // Each way of enrolling without the instance's own first proof: refused by the controller, nothing written.
        let refusals: [(name: String, instance: String, signer: InstanceIdentitySigner?, arguments: [String], message: String)] = [
            ("web-copy", Self.instance, aws, ec2, "instance \(Self.instance) is already enrolled as agent web-a"),
            ("web-plain", Self.other, aws, ["--machine-identity", "none"], "enrolls only EC2 instances that prove their identity"),
            ("web-unsigned", Self.other, nil, ec2, "enrolls only EC2 instances that prove their identity"),
            ("web-forged", Self.other, forger, ec2, "does not verify against the configured AWS certificates"),
        ]
        for item in refusals {
            try await serve(item.instance, signer: item.signer)
            let result = try await enroll(item.name, item.arguments)
            #expect(result.status != 0, "\(item.name): \(result.stdout)")
            #expect(result.stderr.contains(item.message), "\(item.name): \(result.stderr)")
            #expect(!configWritten(item.name), "\(item.name)")
            if item.signer == nil {
                #expect(result.stderr.contains("the instance identity document could not be read"), "\(item.name): \(result.stderr)")
            }
        }
        let names = try await fleet.controller.fleet(token: fleet.viewerToken)["agents"]?.arrayValue.compactMap { $0["name"]?.stringValue }
        #expect(names == ["web-a"], "\(String(describing: names))")

        // Another instance with its own proof enrolls.
        try await serve(Self.other, signer: aws)
        let second = try await enroll("web-b", ec2)
        #expect(second.status == 0, "\(second.stdout)\(second.stderr)")
    }

    /// A controller older than attestation refuses the unknown `instanceIdentity` field (with the answer such a
    /// controller gives, from a loopback stand-in): the agent enrolls without it, and says so. Older still than agents
    /// choosing their token, it then refuses `tokenSHA256`: the agent enrolls with the token the controller issues.
    @Test(.timeLimit(.minutes(2)))
    func anOlderControllerEnrollsItWithoutAProof() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-enroll-old-controller") { directory in
            let signer = try await InstanceIdentitySigner.make(in: directory)
            let document = InstanceIdentitySigner.document(instanceID: Self.instance, accountID: Self.account)
            var behaviour = MetadataStandIn.Behaviour(instanceID: Self.instance)
            behaviour.identityDocument = document
            behaviour.identitySignature = try await signer.sign(document)
            try await MetadataStandIn.with(behaviour) { metadata in
                let bodies = Mutex<[String]>([])
                let port = Mutex(0)
                let router = Router()
                router.post("/v1/agents") { request, _ -> Response in
                    let body = String(buffer: try await request.body.collect(upTo: 1 << 20))
                    bodies.withLock { $0.append(body) }
                    // As an older controller: each field it does not know is refused, the first in alphabetical order.
                    let (status, answer): (HTTPResponse.Status, String) =
                        if body.contains("instanceIdentity") {
                            (.badRequest, #"{"error":"unknown_field","message":"enrolment: instanceIdentity: unknown field"}"#)
                        } else if body.contains("tokenSHA256") {
                            (.badRequest, #"{"error":"unknown_field","message":"enrolment: tokenSHA256: unknown field"}"#)
                        } else {
                            (.created, #"{"agentId":"agt_old","token":"fa_oldcontrollertoken"}"#)
                        }
                    return Response(
                        status: status,
                        headers: [.contentType: "application/json"],
                        body: ResponseBody(byteBuffer: ByteBuffer(string: answer))
                    )
                }
                try await LoopbackServer.with(
                    router: router,
                    label: "old-controller",
                    started: { value in port.withLock { $0 = value } },
                    closing: {}
                ) {
                    let tokenFile = directory.appendingPathComponent("enroll.token")
                    try "fe_enroll".write(to: tokenFile, atomically: true, encoding: .utf8)
                    let result = try await Command.run(
                        TestPaths.executable("ferry-agent"),
                        [
                            "enroll", "--controller", "http://127.0.0.1:\(port.withLock { $0 })", "--token-file", tokenFile.path,
                            "--config", directory.appendingPathComponent("agent.json").path, "--state-dir",
                            directory.appendingPathComponent("state").path,
                            "--trusted-key", try Self.publicKey(in: directory), "--process-manager", "builtin", "--service", "web",
                            "--machine-identity", "ec2", "--instance-metadata-url", metadata.baseURL,
                        ],
                        environment: ["PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": directory.path]
                    )
                    #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
                    #expect(result.stderr.contains("the controller does not check instance identity documents"), "\(result.stderr)")
                    let sent = bodies.withLock { $0 }
                    #expect(sent.count == 3 && sent[0].contains("instanceIdentity") && !sent[1].contains("instanceIdentity"), "\(sent)")
                    #expect(sent.count == 3 && sent[1].contains("tokenSHA256") && !sent[2].contains("tokenSHA256"), "\(sent)")
                    #expect(result.stderr.contains("the controller issues agent tokens itself"), "\(result.stderr)")
                    #expect(FileManager.default.fileExists(atPath: directory.appendingPathComponent("agent.json").path))
                    let written = try String(contentsOf: directory.appendingPathComponent("state/agent.token"), encoding: .utf8)
                    #expect(written == "fa_oldcontrollertoken\n", "the token the older controller issued")
                }
            }
        }
    }

    /// An operator public key file (the enrolment pins one), made by `ferry-controller keygen`.
    static func publicKey(in directory: URL) throws -> String {
        let prefix = directory.appendingPathComponent("operator").path
        let result = try Command.run(TestPaths.executable("ferry-controller"), ["keygen", "--out", prefix])
        guard result.status == 0 else { throw InstanceIdentitySigner.SignerError(message: "keygen failed: \(result.stderr)") }
        return prefix + ".pub"
    }
}
