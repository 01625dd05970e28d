import Foundation
import Shared
import TestSupport
import Testing

/// The trust root document: strict parsing with field-naming errors, one table of hostile documents.
@Suite("Trust root documents")
struct RootDocumentTests {
    /// Two fixed keys (raw public keys are any 32 bytes for parsing; ids are their SHA-256).
    static let keyA = [UInt8](repeating: 0x11, count: 32)
    static let keyB = [UInt8](repeating: 0x22, count: 32)
    static var idA: String { SHA256.hash(keyA).hex }
    static var idB: String { SHA256.hash(keyB).hex }

    static var sample: JSONValue {
        .object([
            "version": .integer(3),
            "expiresAt": .string("2027-11-26T12:00:00Z"),
            "keys": .object([
                idA: .object(["type": .string("ed25519"), "public": .string(Data(keyA).base64EncodedString())]),
                idB: .object(["type": .string("ed25519"), "public": .string(Data(keyB).base64EncodedString())]),
            ]),
            "roles": .object([
                "root": .object(["keyIds": .array([.string(idA), .string(idB)]), "threshold": .integer(2)]),
                "release": .object(["keyIds": .array([.string(idB)]), "threshold": .integer(1)]),
            ]),
        ])
    }

    @Test func theSampleDecodesAndRoundTrips() throws {
        let root = try Root.decode(Self.sample.encoded())
        #expect(root.version == 3)
        #expect(root.rootRole.keyIDs == [Self.idA, Self.idB].sorted() && root.rootRole.threshold == 2)
        #expect(root.releaseRole.keyIDs == [Self.idB] && root.releaseRole.threshold == 1)
        #expect(root.keys.count == 2)
        #expect(try Root.decode(root.payload()) == root)
        #expect(
            root.json
                == Self.sample.setting([.key("roles"), .key("root"), .key("keyIds")], to: .array([Self.idA, Self.idB].sorted().map { .string($0) }))
        )
    }

    struct Hostile: Sendable, CustomStringConvertible {
        let name: String
        let document: @Sendable () -> JSONValue
        let expected: DocumentError
        var description: String { name }
    }

    static let hostile: [Hostile] = [
        Hostile(name: "unknown top-level field", document: { sample.setting([.key("vesion")], to: .integer(1)) }, expected: .unknownField("vesion")),
        Hostile(name: "missing version", document: { sample.setting([.key("version")], to: nil) }, expected: .missingField("version")),
        Hostile(
            name: "version 0",
            document: { sample.setting([.key("version")], to: .integer(0)) },
            expected: .invalidValue(field: "version", reason: "0 is outside 1...9007199254740992")
        ),
        Hostile(
            name: "version above 2^53",
            document: { sample.setting([.key("version")], to: .integer(Int64.max)) },
            expected: .invalidValue(field: "version", reason: "\(Int64.max) is outside 1...9007199254740992")
        ),
        Hostile(
            name: "version 1e300",
            document: { sample.setting([.key("version")], to: .number(1e300)) },
            expected: .invalidValue(field: "version", reason: "1e+300 is outside 1...9007199254740992")
        ),
        Hostile(
            name: "version as a string",
            document: { sample.setting([.key("version")], to: .string("2")) },
            expected: .wrongType(field: "version", expected: "integer", got: "string")
        ),
        Hostile(
            name: "expiresAt not a timestamp",
            document: { sample.setting([.key("expiresAt")], to: .string("next year")) },
            expected: .invalidValue(
                field: "expiresAt",
                reason: "\"next year\" is not an RFC 3339 timestamp like 2026-11-26T12:00:00Z between 1970 and 9999"
            )
        ),
        Hostile(
            name: "a weak key (the identity point: it accepts one forged signature for every message)",
            document: {
                sample.setting(
                    [.key("keys"), .key(idA), .key("public")],
                    to: .string(Data([1] + [UInt8](repeating: 0, count: 31)).base64EncodedString())
                )
            },
            expected: .invalidValue(field: "keys.\(idA).public", reason: KeyError.weakKey(source: "public key").description)
        ),
        Hostile(
            name: "no keys",
            document: { sample.setting([.key("keys")], to: .object([:])) },
            expected: .invalidValue(field: "keys", reason: "at least one key is required")
        ),
        Hostile(
            name: "key id not hex",
            document: {
                sample.setting([.key("keys"), .key("not-a-key-id")], to: .object(["type": .string("ed25519"), "public": .string("AA==")]))
            },
            expected: .invalidValue(field: "keys.not-a-key-id", reason: "a key id is the 64 lowercase hex characters of the key's SHA-256")
        ),
        Hostile(
            name: "key id that is not the key's hash",
            document: {
                let other = String(repeating: "0", count: 64)
                return sample.setting(
                    [.key("keys"), .key(other)],
                    to: .object(["type": .string("ed25519"), "public": .string(Data(keyA).base64EncodedString())])
                )
            },
            expected: .invalidValue(field: "keys.\(String(repeating: "0", count: 64))", reason: "the key id is not the key's SHA-256 (\(idA))")
        ),
        Hostile(
            name: "key type rsa",
            document: { sample.setting([.key("keys"), .key(idA), .key("type")], to: .string("rsa")) },
            expected: .invalidValue(field: "keys.\(idA).type", reason: "\"rsa\" is not supported; Ferry keys are ed25519")
        ),
        Hostile(
            name: "public key not base64",
            document: { sample.setting([.key("keys"), .key(idA), .key("public")], to: .string("%%%")) },
            expected: .invalidValue(field: "keys.\(idA).public", reason: "not valid base64")
        ),
        Hostile(
            name: "public key of 31 bytes",
            document: {
                sample.setting([.key("keys"), .key(idA), .key("public")], to: .string(Data(repeating: 1, count: 31).base64EncodedString()))
            },
            expected: .invalidValue(field: "keys.\(idA).public", reason: "raw Ed25519 key must be 32 bytes, got 31")
        ),
        Hostile(
            name: "unknown field in a key",
            document: { sample.setting([.key("keys"), .key(idA), .key("scheme")], to: .string("ed25519")) },
            expected: .unknownField("keys.\(idA).scheme")
        ),
        Hostile(
            name: "a key no role uses",
            document: {
                sample.setting([.key("roles"), .key("root"), .key("keyIds")], to: .array([.string(idB)])).setting(
                    [.key("roles"), .key("root"), .key("threshold")],
                    to: .integer(1)
                )
            },
            expected: .invalidValue(field: "keys.\(idA)", reason: "no role uses this key; remove it or add it to roles.root or roles.release")
        ),
        Hostile(
            name: "missing release role",
            document: { sample.setting([.key("roles"), .key("release")], to: nil) },
            expected: .missingField("roles.release")
        ),
        Hostile(
            name: "unknown role",
            document: { sample.setting([.key("roles"), .key("timestamp")], to: .object([:])) },
            expected: .unknownField("roles.timestamp")
        ),
        Hostile(
            name: "role naming a key the root does not list",
            document: { sample.setting([.key("roles"), .key("release"), .key("keyIds")], to: .array([.string(String(repeating: "a", count: 64))])) },
            expected: .invalidValue(
                field: "roles.release.keyIds[0]",
                reason: "\"\(String(repeating: "a", count: 64))\" is not one of the root's keys"
            )
        ),
        Hostile(
            name: "the same key twice in a role",
            document: { sample.setting([.key("roles"), .key("root"), .key("keyIds")], to: .array([.string(idA), .string(idA), .string(idB)])) },
            expected: .invalidValue(field: "roles.root.keyIds[1]", reason: "key \(idA) is listed twice (a key counts once)")
        ),
        Hostile(
            name: "empty role",
            document: { sample.setting([.key("roles"), .key("release"), .key("keyIds")], to: .array([])) },
            expected: .invalidValue(field: "roles.release.keyIds", reason: "at least one key id is required")
        ),
        Hostile(
            name: "threshold above the role's keys",
            document: { sample.setting([.key("roles"), .key("root"), .key("threshold")], to: .integer(3)) },
            expected: .invalidValue(field: "roles.root.threshold", reason: "3 is more than the 2 key(s) of the role: it could never be met")
        ),
        Hostile(
            name: "threshold 0",
            document: { sample.setting([.key("roles"), .key("release"), .key("threshold")], to: .integer(0)) },
            expected: .invalidValue(field: "roles.release.threshold", reason: "0 is outside 1...64")
        ),
        Hostile(
            name: "threshold overflowing Int",
            document: { sample.setting([.key("roles"), .key("release"), .key("threshold")], to: .integer(Int64.min)) },
            expected: .invalidValue(field: "roles.release.threshold", reason: "\(Int64.min) is outside 1...64")
        ),
        Hostile(
            name: "threshold fractional",
            document: { sample.setting([.key("roles"), .key("release"), .key("threshold")], to: .number(1.5)) },
            expected: .wrongType(field: "roles.release.threshold", expected: "integer", got: "a fractional number")
        ),
        Hostile(
            name: "keyIds not a list",
            document: { sample.setting([.key("roles"), .key("release"), .key("keyIds")], to: .string(idB)) },
            expected: .wrongType(field: "roles.release.keyIds", expected: "array", got: "string")
        ),
        Hostile(
            name: "document is an array",
            document: { .array([sample]) },
            expected: .wrongType(field: "document", expected: "object", got: "array")
        ),
    ]

    @Test("hostile root documents are refused naming the field", arguments: hostile)
    func hostileDocument(_ testCase: Hostile) {
        #expect(throws: testCase.expected) { try Root.decode(testCase.document().encoded()) }
    }

    @Test func tooManyKeys() {
        var keys: [String: JSONValue] = [:]
        for index in 0...Root.maximumKeys {
            let raw = [UInt8](repeating: UInt8(index), count: 32)
            keys[SHA256.hash(raw).hex] = .object(["type": .string("ed25519"), "public": .string(Data(raw).base64EncodedString())])
        }
        #expect(throws: DocumentError.tooMany(field: "keys", limit: Root.maximumKeys, actual: Root.maximumKeys + 1)) {
            try Root.decode(Self.sample.setting([.key("keys")], to: .object(keys)).encoded())
        }
    }

    @Test func oversizedPayload() {
        let big = [UInt8](repeating: 0x20, count: Root.maximumPayloadBytes + 1)
        #expect(throws: DocumentError.tooLarge(field: "payload", limit: Root.maximumPayloadBytes, actual: Root.maximumPayloadBytes + 1)) {
            try Root.decode(big)
        }
    }

    @Test("an unsigned root envelope parses only where signatures may be missing")
    func unsignedEnvelope() throws {
        let root = try Root.decode(Self.sample.encoded())
        let bytes = root.unsignedEnvelope().encoded()
        #expect(throws: DocumentError.invalidValue(field: "signatures", reason: "at least one signature is required")) {
            try Envelope.decode(bytes)
        }
        #expect(try Envelope.decode(bytes, requiringSignatures: false).signatures.isEmpty)
    }
}
