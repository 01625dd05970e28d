import Foundation
import Shared
import TestSupport
import Testing

@Suite("DSSE envelopes and trust policy")
struct EnvelopeTests {
    let keyA: SigningKey
    let keyB: SigningKey
    let payload = Array(#"{"hello":"world"}"#.utf8)
    let type = Release.payloadType

    init() throws {
        keyA = try SigningKey.generate()
        keyB = try SigningKey.generate()
    }

    @Test func paeMatchesTheDSSESpecification() {
        // Example from the DSSE protocol document.
        let pae = Envelope.pae(payloadType: "http://example.com/HelloWorld", payload: Array("hello world".utf8))
        #expect(String(decoding: pae, as: UTF8.self) == "DSSEv1 29 http://example.com/HelloWorld 11 hello world")
        #expect(String(decoding: Envelope.pae(payloadType: "", payload: []), as: UTF8.self) == "DSSEv1 0  0 ")
    }

    @Test func signAndVerifyRoundTripThroughJSON() throws {
        let envelope = try Envelope.sign(payload: payload, payloadType: type, with: [keyA])
        let decoded = try Envelope.decode(envelope.encoded())
        #expect(decoded == envelope)
        let verified = try TrustPolicy(trustedKeys: [keyA.publicKey]).verify(decoded, expecting: type)
        #expect(verified.payload == payload)
        #expect(verified.keyIDs == [keyA.publicKey.keyID])
    }

    enum Tamper: String, CaseIterable, Sendable {
        case payload, payloadType, signature
    }

    @Test(arguments: Tamper.allCases)
    func oneFlippedByteIsRejected(_ tamper: Tamper) throws {
        var envelope = try Envelope.sign(payload: payload, payloadType: type, with: [keyA])
        switch tamper {
        case .payload: envelope.payload[3] ^= 0x01
        case .payloadType:
            var bytes = Array(envelope.payloadType.utf8)
            bytes[bytes.count - 1] ^= 0x01
            envelope.payloadType = String(decoding: bytes, as: UTF8.self)
        case .signature: envelope.signatures[0].sig[10] ^= 0x01
        }
        let policy = try TrustPolicy(trustedKeys: [keyA.publicKey])
        // A changed payloadType is caught by the signature too: check the signature path by expecting that type.
        let error = #expect(throws: TrustError.self) { try policy.verify(envelope, expecting: envelope.payloadType) }
        guard case .thresholdNotMet(1, [], let failures, 0) = error else {
            Issue.record("unexpected error \(String(describing: error))")
            return
        }
        #expect(failures == ["signature 0 by key \(keyA.publicKey.keyID) does not verify"])
    }

    @Test func unexpectedPayloadTypeIsRejected() throws {
        let envelope = try Envelope.sign(payload: payload, payloadType: "application/other", with: [keyA])
        #expect(throws: TrustError.unexpectedPayloadType(expected: type, got: "application/other")) {
            try TrustPolicy(trustedKeys: [keyA.publicKey]).verify(envelope, expecting: type)
        }
    }

    @Test func signatureByAnUntrustedKeyDoesNotCount() throws {
        let envelope = try Envelope.sign(payload: payload, payloadType: type, with: [keyB])
        #expect(throws: TrustError.thresholdNotMet(required: 1, verifiedKeyIDs: [], failures: [], untrustedSignatures: 1)) {
            try TrustPolicy(trustedKeys: [keyA.publicKey]).verify(envelope, expecting: type)
        }
    }

    @Test func wrongKeyUnderATrustedKeyIDIsRejected() throws {
        // keyB signs but claims to be keyA.
        var envelope = try Envelope.sign(payload: payload, payloadType: type, with: [keyB])
        envelope.signatures[0].keyid = keyA.publicKey.keyID
        let error = #expect(throws: TrustError.self) {
            try TrustPolicy(trustedKeys: [keyA.publicKey]).verify(envelope, expecting: type)
        }
        #expect(error?.description.contains("does not verify") == true)
    }

    @Test func thresholdTwoWithOneValidSignatureIsRejected() throws {
        var envelope = try Envelope.sign(payload: payload, payloadType: type, with: [keyA, keyB])
        envelope.signatures[1].sig[0] ^= 0xff
        let policy = try TrustPolicy(trustedKeys: [keyA.publicKey, keyB.publicKey], threshold: 2)
        let error = #expect(throws: TrustError.self) { try policy.verify(envelope, expecting: type) }
        guard case .thresholdNotMet(2, let verified, _, _) = error else {
            Issue.record("unexpected error \(String(describing: error))")
            return
        }
        #expect(verified == [keyA.publicKey.keyID])
    }

    @Test func thresholdTwoWithTwoDistinctKeysPasses() throws {
        let envelope = try Envelope.sign(payload: payload, payloadType: type, with: [keyA, keyB])
        let policy = try TrustPolicy(trustedKeys: [keyA.publicKey, keyB.publicKey], threshold: 2)
        let verified = try policy.verify(envelope, expecting: type)
        #expect(Set(verified.keyIDs) == [keyA.publicKey.keyID, keyB.publicKey.keyID])
    }

    @Test func theSameKeyTwiceCountsOnce() throws {
        let envelope = try Envelope.sign(payload: payload, payloadType: type, with: [keyA, keyA])
        #expect(envelope.signatures.count == 2)
        let policy = try TrustPolicy(trustedKeys: [keyA.publicKey, keyB.publicKey], threshold: 2)
        #expect(throws: TrustError.thresholdNotMet(required: 2, verifiedKeyIDs: [keyA.publicKey.keyID], failures: [], untrustedSignatures: 0)) {
            try policy.verify(envelope, expecting: type)
        }
    }

    @Test func aTrustedKeyListedTwiceCountsOnceTowardsTheThreshold() throws {
        #expect(throws: TrustError.invalidThreshold(threshold: 2, distinctKeys: 1)) {
            try TrustPolicy(trustedKeys: [keyA.publicKey, keyA.publicKey], threshold: 2)
        }
    }

    @Test func unknownKeyIDIsIgnoredNotAnError() throws {
        var envelope = try Envelope.sign(payload: payload, payloadType: type, with: [keyA])
        envelope.signatures.insert(.init(keyid: String(repeating: "ab", count: 32), sig: [UInt8](repeating: 7, count: 64)), at: 0)
        let verified = try TrustPolicy(trustedKeys: [keyA.publicKey]).verify(envelope, expecting: type)
        #expect(verified.keyIDs == [keyA.publicKey.keyID])
    }

    @Test func signatureWithoutKeyIDIsTriedAgainstEveryTrustedKey() throws {
        var envelope = try Envelope.sign(payload: payload, payloadType: type, with: [keyB])
        envelope.signatures[0].keyid = ""
        let verified = try TrustPolicy(trustedKeys: [keyA.publicKey, keyB.publicKey]).verify(envelope, expecting: type)
        #expect(verified.keyIDs == [keyB.publicKey.keyID])
    }

    @Test func thresholdOutOfRangeIsRefused() {
        #expect(throws: TrustError.invalidThreshold(threshold: 0, distinctKeys: 1)) {
            try TrustPolicy(trustedKeys: [keyA.publicKey], threshold: 0)
        }
    }
}
