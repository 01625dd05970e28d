import Foundation
import Shared
import TestSupport
import Testing

@testable import Controller

/// Enrolment attestation: with `--instance-identity-cert`, an enrollment token enrolls only an EC2 instance whose
/// identity document AWS signed (here: a signer of the test's own, made with the `openssl` CLI), of an allowed account,
/// and each instance once. An attacker holding one instance's user data (the enrollment token) and even its signed
/// document enrolls nothing more than that one instance, which its own agent already did.
@Suite struct InstanceIdentityTests {
    static let account = "123456789012"
    static let instanceA = "i-0aaaaaaaaaaaaaaaa"
    static let instanceB = "i-0bbbbbbbbbbbbbbbb"

    /// A signer standing in for AWS, a forger with a certificate of its own, and an impostor whose certificate names
    /// itself exactly as AWS's does (same subject, same serial), each in `directory`.
    struct Signers {
        var aws: InstanceIdentitySigner
        var forger: InstanceIdentitySigner
        var impostor: InstanceIdentitySigner

        static func make(in directory: URL) async throws -> Signers {
            Signers(
                aws: try await InstanceIdentitySigner.make(in: directory),
                forger: try await InstanceIdentitySigner.make(in: directory, name: "forger", subject: "/O=Forger", serial: "0x99"),
                impostor: try await InstanceIdentitySigner.make(in: directory, name: "impostor")
            )
        }
    }

    enum Expected: Sendable {
        case instance(String)
        case refused(InstanceIdentityError.Kind, String)
    }

    struct Case: Sendable {
        var name: String
        var proof: @Sendable (Signers) async throws -> InstanceIdentityProof
        var expected: Expected
    }

    static func document(_ instance: String = instanceA, account: String = account) -> String {
        InstanceIdentitySigner.document(instanceID: instance, accountID: account)
    }

    static func signed(
        _ document: String,
        by signer: any KeyPath<Signers, InstanceIdentitySigner> & Sendable = \.aws,
        detached: Bool = false
    )
        -> @Sendable (Signers) async throws -> InstanceIdentityProof
    {
        { signers in InstanceIdentityProof(document: document, pkcs7: try await signers[keyPath: signer].sign(document, detached: detached)) }
    }

    /// Every way a proof can be wrong, and the right ones, against the verifier.
    static let cases: [Case] = [
        Case(name: "a document signed by AWS", proof: signed(document()), expected: .instance(instanceA)),
        Case(name: "a detached signature and its document", proof: signed(document(), detached: true), expected: .instance(instanceA)),
        Case(
            name: "PEM armour around the signature",
            proof: { signers in
                let proof = try await signed(document())(signers)
                return InstanceIdentityProof(document: proof.document, pkcs7: "-----BEGIN PKCS7-----\n\(proof.pkcs7)\n-----END PKCS7-----\n")
            },
            expected: .instance(instanceA)
        ),
        Case(
            name: "another instance's id written beside a signed document: the signed copy counts",
            proof: { signers in
                InstanceIdentityProof(document: document(instanceB), pkcs7: try await signers.aws.sign(document()))
            },
            expected: .instance(instanceA)
        ),
        Case(
            name: "a detached signature over another document",
            proof: { signers in
                InstanceIdentityProof(document: document(instanceB), pkcs7: try await signers.aws.sign(document(), detached: true))
            },
            expected: .refused(.untrusted, "does not verify against the configured AWS certificates")
        ),
        Case(
            name: "a detached signature without its document",
            proof: { signers in InstanceIdentityProof(document: "", pkcs7: try await signers.aws.sign(document(), detached: true)) },
            expected: .refused(.malformed, "detached and no document came with it")
        ),
        Case(
            name: "signed by a forger's own certificate, carried in the signature",
            proof: signed(document(), by: \.forger),
            expected: .refused(.untrusted, "does not verify against the configured AWS certificates")
        ),
        Case(
            name: "signed by an impostor whose certificate names itself as AWS's",
            proof: signed(document(), by: \.impostor),
            expected: .refused(.untrusted, "does not verify against the configured AWS certificates")
        ),
        Case(
            name: "an instance of another account",
            proof: signed(document(account: "210987654321")),
            expected: .refused(.accountNotAllowed, "belongs to AWS account 210987654321, which this controller does not enroll")
        ),
        Case(
            name: "a signature that is not base64",
            proof: { _ in InstanceIdentityProof(document: document(), pkcs7: "%%% not base64 %%%") },
            expected: .refused(.malformed, "is not base64")
        ),
        Case(
            name: "an empty signature",
            proof: { _ in InstanceIdentityProof(document: document(), pkcs7: "") },
            expected: .refused(.malformed, "is not base64")
        ),
        Case(
            name: "base64 of bytes that are not PKCS #7",
            proof: { _ in InstanceIdentityProof(document: document(), pkcs7: Data("not a signature at all".utf8).base64EncodedString()) },
            expected: .refused(.malformed, "is not a DER PKCS #7 structure")
        ),
        Case(
            name: "a truncated signature",
            proof: { signers in
                let der = try #require(InstanceIdentityVerifier.decodeBase64(try await signers.aws.sign(document())))
                return InstanceIdentityProof(document: document(), pkcs7: Data(der.prefix(der.count / 2)).base64EncodedString())
            },
            expected: .refused(.malformed, "is not a DER PKCS #7 structure")
        ),
        Case(
            name: "bytes after the signature",
            proof: { signers in
                let der = try #require(InstanceIdentityVerifier.decodeBase64(try await signers.aws.sign(document())))
                return InstanceIdentityProof(document: document(), pkcs7: Data(der + [0, 1, 2]).base64EncodedString())
            },
            expected: .refused(.malformed, "is not a DER PKCS #7 structure")
        ),
        Case(name: "a signed text that is not JSON", proof: signed("instance i-0aaaaaaaaaaaaaaaa"), expected: .refused(.malformed, "is not JSON")),
        Case(name: "a signed JSON array", proof: signed("[1, 2]"), expected: .refused(.malformed, "is not a JSON object")),
        Case(
            name: "a signed document without an instance id",
            proof: signed(#"{"accountId": "123456789012", "region": "eu-west-1"}"#),
            expected: .refused(.malformed, "has no instanceId")
        ),
        Case(
            name: "a signed document whose instance id is not one",
            proof: signed(document("i-XYZ")),
            expected: .refused(.malformed, "instanceId is not an instance id")
        ),
        Case(
            name: "a signed document whose account is not 12 digits",
            proof: signed(document(account: "12345")),
            expected: .refused(.malformed, "accountId is not 12 digits")
        ),
        Case(
            name: "a signed document without a region",
            proof: signed(#"{"accountId": "123456789012", "instanceId": "i-0aaaaaaaaaaaaaaaa"}"#),
            expected: .refused(.malformed, "has no region")
        ),
    ]

    @Test func everyProofIsJudgedAsItShouldBe() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-instance-identity") { directory in
            let signers = try await Signers.make(in: directory)
            let certificate = try Array(Data(contentsOf: URL(fileURLWithPath: signers.aws.certificate)))
            // A second certificate in the file (AWS publishes one per region or partition) changes nothing.
            let other = try Array(Data(contentsOf: URL(fileURLWithPath: signers.forger.certificate)))
            for certificates in [certificate, certificate + other] {
                let verifier = try InstanceIdentityVerifier(certificates: certificates, accounts: [Self.account])
                for item in Self.cases where !(certificates.count > certificate.count && item.name.contains("forger")) {
                    let proof = try await item.proof(signers)
                    switch item.expected {
                    case .instance(let id):
                        let instance = try verifier.verify(proof)
                        #expect(instance == AttestedInstance(instanceID: id, accountID: Self.account, region: "eu-west-1"), "\(item.name)")
                    case .refused(let kind, let message):
                        do throws(InstanceIdentityError) {
                            let instance = try verifier.verify(proof)
                            Issue.record("\(item.name): accepted as \(instance)")
                        } catch {
                            #expect(error.kind == kind, "\(item.name): \(error)")
                            #expect(error.description.contains(message), "\(item.name): \(error)")
                        }
                    }
                }
            }
            // With the forger's certificate configured too, its signature is AWS's as far as the controller knows:
            // the file is the trust anchor.
            let both = try InstanceIdentityVerifier(certificates: certificate + other, accounts: [Self.account])
            #expect(try both.verify(try await Self.signed(Self.document(), by: \.forger)(signers)).instanceID == Self.instanceA)
        }
    }

    /// A DSA certificate, and a signature with SHA-1 or SHA-256 (the form AWS's pkcs7 signatures long had), verify as
    /// an RSA one does; a document signed with the RSA key does not verify against the DSA certificate.
    @Test func aDSACertificateVerifiesItsSignatures() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-instance-identity-dsa") { directory in
            let dsa = try await InstanceIdentitySigner.make(in: directory, name: "dsa", dsa: true)
            let rsa = try await InstanceIdentitySigner.make(in: directory)
            let verifier = try InstanceIdentityVerifier(
                certificates: Array(try Data(contentsOf: URL(fileURLWithPath: dsa.certificate))),
                accounts: [Self.account]
            )
            for digest in ["sha1", "sha256"] {
                let proof = InstanceIdentityProof(document: Self.document(), pkcs7: try await dsa.sign(Self.document(), digest: digest))
                #expect(try verifier.verify(proof).instanceID == Self.instanceA, "\(digest)")
            }
            let foreign = InstanceIdentityProof(document: Self.document(), pkcs7: try await rsa.sign(Self.document()))
            #expect(throws: InstanceIdentityError.self) { try verifier.verify(foreign) }
        }
    }

    @Test func aVerifierIsNotMadeFromUnusableSettings() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-instance-identity") { directory in
            let signer = try await InstanceIdentitySigner.make(in: directory)
            let certificate = try Array(Data(contentsOf: URL(fileURLWithPath: signer.certificate)))
            let key = try Array(Data(contentsOf: URL(fileURLWithPath: signer.key)))
            let table: [(name: String, certificates: [UInt8], accounts: [String], message: String)] = [
                ("no certificate in the file", Array("hello\n".utf8), [Self.account], "holds no PEM certificate"),
                ("a private key instead of a certificate", key, [Self.account], "holds no PEM certificate"),
                ("no account", certificate, [], "without --instance-identity-account"),
                ("an account that is not 12 digits", certificate, [Self.account, "1234"], "an AWS account id is 12 digits"),
            ]
            for item in table {
                #expect(throws: ConfigurationError.self, "\(item.name)") {
                    try InstanceIdentityVerifier(certificates: item.certificates, accounts: item.accounts)
                }
                do {
                    _ = try InstanceIdentityVerifier(certificates: item.certificates, accounts: item.accounts)
                } catch {
                    #expect("\(error)".contains(item.message), "\(item.name): \(error)")
                }
            }
        }
    }

    /// A live controller set up for attestation: what an enrollment token's holder can and cannot enroll, that a
    /// refusal uses up nothing, and how an operator and `agents remove` undo a binding.
    @Test(.timeLimit(.minutes(3)))
    func aLiveControllerEnrollsEachProvenInstanceOnce() async throws {
        try await TestPaths.withTemporaryDirectory("ferry-instance-identity-live") { directory in
            let signers = try await Signers.make(in: directory)
            let cli = CommandLineEndToEndTests.cli
            let data = directory.appendingPathComponent("data").path
            let keyPrefix = directory.appendingPathComponent("operator").path
            _ = try await cli(["keygen", "--out", keyPrefix], [:], nil)
            let operatorToken = try TerminalSafetyTests.token(
                try await cli(["token", "create", "--data-dir", data, "--role", "operator", "--json"], [:], nil)
            )
            // Two uses: a refusal must not spend one.
            let enrollToken = try TerminalSafetyTests.token(
                try await cli(["token", "create", "--data-dir", data, "--role", "enroll", "--any-service", "--max-uses", "2", "--json"], [:], nil)
            )
            let arguments = [
                "--data-dir", data, "--trusted-key", keyPrefix + ".pub", "--instance-identity-cert", signers.aws.certificate,
                "--instance-identity-account", Self.account,
            ]
            // Settings that cannot work stop `serve` before it listens, saying which.
            for (extra, message) in [
                (["--instance-identity-cert", signers.aws.key], "holds no PEM certificate"),
                (["--instance-identity-account", "12"], "an AWS account id is 12 digits"),
            ] {
                let refused = try await cli(["serve", "--listen", "127.0.0.1:0"] + arguments + extra, [:], nil)
                #expect(refused.status != 0)
                #expect(refused.errors.contains(message), "\(refused.errors)")
            }
            let accountOnly = try await cli(
                [
                    "serve", "--listen", "127.0.0.1:0", "--data-dir", data, "--trusted-key", keyPrefix + ".pub", "--instance-identity-account",
                    Self.account,
                ],
                [:],
                nil
            )
            #expect(accountOnly.status != 0)
            #expect(accountOnly.errors.contains("applies with --instance-identity-cert only"), "\(accountOnly.errors)")

            let server = try await ServerProcess(arguments: arguments, logDirectory: directory)
            defer { server.stop() }
            let http = LiveHTTP()
            func enroll(_ name: String, _ proof: InstanceIdentityProof?, token: String, replace: Bool = false) async throws -> (Int, String) {
                let request = EnrollRequest(name: name, hostname: "\(name).internal", services: ["api"], replace: replace, instanceIdentity: proof)
                let response = try await http.send("POST", server.baseURL + "/v1/agents", token: token, body: Data(request.json.encoded()))
                let body = String(decoding: response.body, as: UTF8.self)
                guard response.status != 201 else { return (201, "") }
                let fields = try JSONValue.parse(response.body).object ?? [:]
                return (response.status, "\(FleetDocument.text(fields["error"])): \(FleetDocument.text(fields["message"]))  [\(body.count) bytes]")
            }
            func agentNames() async throws -> [String] {
                let fleet = try await http.send("GET", server.baseURL + "/v1/fleet", token: operatorToken)
                return FleetDocument.array(try JSONValue.parse(fleet.body).object?["agents"]).compactMap { FleetDocument.text($0.object?["name"]) }
                    .sorted()
            }
            /// Each agent's `instanceId` in `/v1/fleet`, by name.
            func fleetInstances() async throws -> [String: String] {
                let fleet = try await http.send("GET", server.baseURL + "/v1/fleet", token: operatorToken)
                var instances: [String: String] = [:]
                for case .object(let agent) in FleetDocument.array(try JSONValue.parse(fleet.body).object?["agents"]) {
                    instances[FleetDocument.text(agent["name"])] = agent["instanceId"] == .null ? "null" : FleetDocument.text(agent["instanceId"])
                }
                return instances
            }
            let proofA = try await Self.signed(Self.document())(signers)
            let proofB = try await Self.signed(Self.document(Self.instanceB))(signers)

            // What an enrollment token's holder without a valid proof gets: refused, each for its reason.
            let refusals: [(name: String, proof: InstanceIdentityProof?, status: Int, message: String)] = [
                ("no proof", nil, 403, "attestation_required: this controller enrolls only EC2 instances that prove their identity"),
                (
                    "forged", try await Self.signed(Self.document(), by: \.forger)(signers), 403,
                    "attestation_invalid: the instance identity signature does not verify"
                ),
                (
                    "impostor", try await Self.signed(Self.document(), by: \.impostor)(signers), 403,
                    "attestation_invalid: the instance identity signature does not verify"
                ),
                (
                    "other account", try await Self.signed(Self.document(account: "210987654321"))(signers), 403,
                    "account_not_allowed: instance i-0aaaaaaaaaaaaaaaa belongs to AWS account 210987654321"
                ),
                (
                    "garbage", InstanceIdentityProof(document: "{}", pkcs7: "AAAA"), 403,
                    "attestation_invalid: the instance identity signature is not a DER PKCS #7 structure"
                ),
            ]
            for item in refusals {
                let (status, message) = try await enroll("web-\(item.name.replacingOccurrences(of: " ", with: "-"))", item.proof, token: enrollToken)
                #expect(status == item.status, "\(item.name): \(message)")
                #expect(message.hasPrefix(item.message), "\(item.name): \(message)")
            }
            // A document field missing from the proof is a malformed request.
            let missing = try await http.send(
                "POST",
                server.baseURL + "/v1/agents",
                token: enrollToken,
                body: Data(#"{"name":"web-x","hostname":"h","services":["api"],"instanceIdentity":{"document":"{}"}}"#.utf8)
            )
            #expect(missing.status == 400, "\(String(decoding: missing.body, as: UTF8.self))")
            #expect(try await agentNames().isEmpty)

            // Instance A enrolls; its document copied (the attacker on A, or A's image) enrolls nothing more.
            #expect(try await enroll("web-1", proofA, token: enrollToken).0 == 201)
            let again = try await enroll("web-copy", proofA, token: enrollToken)
            #expect(again.0 == 409)
            #expect(again.1.hasPrefix("instance_enrolled: instance i-0aaaaaaaaaaaaaaaa is already enrolled as agent web-1"), "\(again.1)")
            // No refusal spent a use: the token's second use enrolls instance B, and then it is used up.
            #expect(try await enroll("web-2", proofB, token: enrollToken).0 == 201)
            let third = try await enroll("web-3", try await Self.signed(Self.document("i-0cccccccccccccccc"))(signers), token: enrollToken)
            #expect(third.0 == 403 && third.1.hasPrefix("token_used_up"), "\(third.1)")
            #expect(try await agentNames() == ["web-1", "web-2"])
            #expect(try await fleetInstances() == ["web-1": Self.instanceA, "web-2": Self.instanceB])

            // The agent shows the instance it proved.
            let shown = try await http.send("GET", server.baseURL + "/v1/agents/web-1", token: operatorToken)
            #expect(FleetDocument.text(try JSONValue.parse(shown.body).object?["instanceId"]) == Self.instanceA)
            let text = try await cli(["agents", "show", "web-1"], ["FERRY_CONTROLLER_URL": server.baseURL, "FERRY_TOKEN": operatorToken], nil)
            #expect(text.output.contains("on instance \(Self.instanceA) (attested)"), "\(text.output)")
            let page = try await http.send("GET", server.baseURL + "/agents/web-1", token: operatorToken)
            #expect(String(decoding: page.body, as: UTF8.self).contains("instance \(Self.instanceA) (attested)</span>"))
            let otherPage = try await http.send("GET", server.baseURL + "/agents/web-2", token: operatorToken)
            #expect(otherPage.status == 200 && String(decoding: otherPage.body, as: UTF8.self).contains("instance \(Self.instanceB) (attested)"))

            // An operator's enrolment needs no proof; one it gives binds, but never a second agent to one instance.
            #expect(try await enroll("web-1", nil, token: operatorToken, replace: true).0 == 201)
            let stolen = try await enroll("web-2", proofA, token: operatorToken, replace: true)
            #expect(
                stolen.0 == 409 && stolen.1.hasPrefix("instance_enrolled: instance i-0aaaaaaaaaaaaaaaa is already enrolled as agent web-1"),
                "\(stolen.1)"
            )
            let kept = try await http.send("GET", server.baseURL + "/v1/agents/web-1", token: operatorToken)
            #expect(
                FleetDocument.text(try JSONValue.parse(kept.body).object?["instanceId"]) == Self.instanceA,
                "a replace without a proof keeps the binding"
            )

            // Removed (by hand, or swept for its silence once the instance is terminated), the instance enrolls no more
            // with an enrollment token: a copy of its identity document, taken while it ran, enrolled it again under any
            // name. An operator may enroll it.
            let removed = try await cli(["agents", "remove", "web-1"], ["FERRY_CONTROLLER_URL": server.baseURL, "FERRY_TOKEN": operatorToken], nil)
            #expect(removed.status == 0, "\(removed.errors)")
            let fresh = try TerminalSafetyTests.token(
                try await cli(["token", "create", "--data-dir", data, "--role", "enroll", "--any-service", "--json"], [:], nil)
            )
            let replayed = try await enroll("web-1b", proofA, token: fresh)
            #expect(
                replayed.0 == 409
                    && replayed.1.hasPrefix(
                        "instance_enrolled: instance i-0aaaaaaaaaaaaaaaa was enrolled before, as agent web-1, which has been removed"
                    ),
                "\(replayed.1)"
            )
            #expect(try await enroll("web-1b", proofA, token: operatorToken).0 == 201)
            #expect(try await agentNames() == ["web-1b", "web-2"])
            // An operator's enrolment without a proof binds no instance.
            #expect(try await enroll("web-plain", nil, token: operatorToken).0 == 201)
            #expect(try await fleetInstances() == ["web-1b": Self.instanceA, "web-2": Self.instanceB, "web-plain": "null"])

            // Each refusal is counted by its reason, for an alert on someone trying.
            let metrics = String(decoding: try await http.send("GET", server.baseURL + "/metrics").body, as: UTF8.self)
            for (reason, count) in [
                ("attestation_required", 1), ("attestation_invalid", 3), ("account_not_allowed", 1), ("instance_enrolled", 3),
            ] {
                #expect(metrics.contains(#"ferry_enrolments_refused_total{reason="\#(reason)"} \#(count)"#), "\(reason)")
            }
        }
    }
}
