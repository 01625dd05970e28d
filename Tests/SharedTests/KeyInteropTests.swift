import Foundation
import Shared
import TestSupport
import Testing

/// Ferry's keys and signatures against the real `openssl` command-line tool.
@Suite("Ed25519 keys and OpenSSL interoperability")
struct KeyInteropTests {
    @Test func pemRoundTripKeepsTheKey() throws {
        let key = try SigningKey.generate()
        let again = try SigningKey(pem: try key.pemRepresentation())
        #expect(again.publicKey == key.publicKey)
        let publicAgain = try PublicKey(pem: try key.publicKey.pemRepresentation())
        #expect(publicAgain == key.publicKey)
        #expect(try key.pemRepresentation().hasPrefix("-----BEGIN PRIVATE KEY-----"))
        #expect(try key.publicKey.pemRepresentation().hasPrefix("-----BEGIN PUBLIC KEY-----"))
    }

    @Test func keyIDIsTheSHA256OfTheRawPublicKey() throws {
        // Not 32 zero bytes, which the test used before: that is a point of order 4, a weak key (WeakKeyTests).
        let key = try PublicKey(rawRepresentation: [UInt8](repeating: 0x11, count: 32))
        // sha256 of 32 bytes 0x11.
        #expect(key.keyID == "02d449a31fbb267c8f352e9968a79e3e5fc95c1bbeaa502fd6454ebde5a4bedc")
    }

    @Test func privateKeyFileIsWrittenWithMode0600AndNeverOverwritten() async throws {
        try await TestPaths.withTemporaryDirectory { dir in
            let path = dir.appendingPathComponent("op.key").path
            let key = try SigningKey.generate()
            try KeyFile.create(path, contents: try key.pemRepresentation(), mode: 0o600)
            let attributes = try FileManager.default.attributesOfItem(atPath: path)
            #expect((attributes[.posixPermissions] as? NSNumber)?.intValue == 0o600)
            #expect(throws: KeyError.alreadyExists(path: path)) {
                try KeyFile.create(path, contents: "x", mode: 0o600)
            }
            #expect(try SigningKey(contentsOf: path).publicKey == key.publicKey)
            // Written under a temporary name and linked: nothing of it is left beside the key.
            #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["op.key"])
        }
    }

    @Test func aKeyGeneratedByTheOpenSSLCLISignsAndFerryVerifies() async throws {
        try await TestPaths.withTemporaryDirectory { dir in
            let keyPath = dir.appendingPathComponent("ossl.key").path
            let pubPath = dir.appendingPathComponent("ossl.pub").path
            try #require(try await Command.run("openssl", ["genpkey", "-algorithm", "ed25519", "-out", keyPath]).status == 0)
            try #require(try await Command.run("openssl", ["pkey", "-in", keyPath, "-pubout", "-out", pubPath]).status == 0)
            let signer = try SigningKey(contentsOf: keyPath)
            let trusted = try PublicKey(contentsOf: pubPath)
            #expect(signer.publicKey == trusted)

            // 1. Ferry signs with the OpenSSL-made key.
            let payload = Array(#"{"a":1}"#.utf8)
            let envelope = try Envelope.sign(payload: payload, payloadType: Release.payloadType, with: [signer])
            _ = try TrustPolicy(trustedKeys: [trusted]).verify(envelope, expecting: Release.payloadType)

            // 2. OpenSSL itself signs the PAE bytes; Ferry verifies the result.
            let paePath = dir.appendingPathComponent("pae.bin").path
            let sigPath = dir.appendingPathComponent("pae.sig").path
            try Data(Envelope.pae(payloadType: Release.payloadType, payload: payload)).write(to: URL(fileURLWithPath: paePath))
            let sign = try await Command.run("openssl", ["pkeyutl", "-sign", "-rawin", "-inkey", keyPath, "-in", paePath, "-out", sigPath])
            try #require(sign.status == 0, "openssl pkeyutl -sign failed: \(sign.stderr)")
            let opensslSignature = try Array(Data(contentsOf: URL(fileURLWithPath: sigPath)))
            let external = Envelope(
                payloadType: Release.payloadType,
                payload: payload,
                signatures: [.init(keyid: trusted.keyID, sig: opensslSignature)]
            )
            let verified = try TrustPolicy(trustedKeys: [trusted]).verify(Envelope.decode(external.encoded()), expecting: Release.payloadType)
            #expect(verified.keyIDs == [trusted.keyID])
        }
    }

    @Test func opensslVerifiesAFerrySignatureOverThePAE() async throws {
        try await TestPaths.withTemporaryDirectory { dir in
            let key = try SigningKey.generate()
            let pubPath = dir.appendingPathComponent("ferry.pub").path
            try KeyFile.create(pubPath, contents: try key.publicKey.pemRepresentation(), mode: 0o644)
            let payload = Array(#"{"service":"api"}"#.utf8)
            let envelope = try Envelope.sign(payload: payload, payloadType: Release.payloadType, with: [key])
            let paePath = dir.appendingPathComponent("pae.bin").path
            let sigPath = dir.appendingPathComponent("pae.sig").path
            try Data(Envelope.pae(payloadType: Release.payloadType, payload: payload)).write(to: URL(fileURLWithPath: paePath))
            try Data(envelope.signatures[0].sig).write(to: URL(fileURLWithPath: sigPath))
            let verify = try await Command.run(
                "openssl",
                ["pkeyutl", "-verify", "-rawin", "-pubin", "-inkey", pubPath, "-in", paePath, "-sigfile", sigPath]
            )
            #expect(verify.status == 0, "openssl rejected Ferry's signature: \(verify.stdout) \(verify.stderr)")
            #expect(verify.stdout.contains("Signature Verified Successfully"))

            // And the negative: a different payload does not verify under OpenSSL either.
            try Data(Envelope.pae(payloadType: Release.payloadType, payload: Array("other".utf8))).write(to: URL(fileURLWithPath: paePath))
            let mismatch = try await Command.run(
                "openssl",
                ["pkeyutl", "-verify", "-rawin", "-pubin", "-inkey", pubPath, "-in", paePath, "-sigfile", sigPath]
            )
            #expect(mismatch.status != 0)
        }
    }

    @Test func ferryPublicKeyPEMIsReadableByOpenSSL() async throws {
        try await TestPaths.withTemporaryDirectory { dir in
            let key = try SigningKey.generate()
            let keyPath = dir.appendingPathComponent("ferry.key").path
            try KeyFile.create(keyPath, contents: try key.pemRepresentation(), mode: 0o600)
            let result = try await Command.run("openssl", ["pkey", "-in", keyPath, "-pubout"])
            try #require(result.status == 0, "\(result.stderr)")
            #expect(try PublicKey(pem: result.stdout) == key.publicKey)
        }
    }

    struct BadKeyCase: Sendable, CustomStringConvertible {
        var description: String
        var pem: String
        var expectPrivate: Bool
        var expected: KeyError
    }

    static let badKeys: [BadKeyCase] = [
        .init(
            description: "not PEM at all",
            pem: "hello",
            expectPrivate: true,
            expected: .notPEM(source: "k", expected: "private key (PKCS#8, unencrypted)")
        ),
        .init(
            description: "public key where a private key is expected",
            pem: "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n",
            expectPrivate: true,
            expected: .notPEM(source: "k", expected: "private key (PKCS#8, unencrypted)")
        ),
        .init(
            description: "empty public key",
            pem: "",
            expectPrivate: false,
            expected: .notPEM(source: "k", expected: "public key (SubjectPublicKeyInfo)")
        ),
        .init(
            description: "truncated base64 body",
            pem: "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9E\n-----END PUBLIC KEY-----\n",
            expectPrivate: false,
            expected: .notPEM(source: "k", expected: "public key (SubjectPublicKeyInfo)")
        ),
    ]

    @Test(arguments: badKeys)
    func badKeyFilesAreRefusedWithAReason(_ testCase: BadKeyCase) {
        let error = #expect(throws: KeyError.self) {
            if testCase.expectPrivate {
                _ = try SigningKey(pem: testCase.pem, source: "k")
            } else {
                _ = try PublicKey(pem: testCase.pem, source: "k")
            }
        }
        #expect(error == testCase.expected)
    }

    @Test func anRSAKeyIsRefusedAsNotEd25519() async throws {
        try await TestPaths.withTemporaryDirectory { dir in
            let path = dir.appendingPathComponent("rsa.key").path
            try #require(
                try await Command.run("openssl", ["genpkey", "-algorithm", "rsa", "-pkeyopt", "rsa_keygen_bits:1024", "-out", path]).status == 0
            )
            #expect(throws: KeyError.wrongAlgorithm(source: path)) { try SigningKey(contentsOf: path) }
        }
    }
}
