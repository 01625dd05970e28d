import Foundation
import Shared
import Testing

/// A path step into a JSON document.
enum Step: Sendable, CustomStringConvertible {
    case key(String)
    case index(Int)
    var description: String {
        switch self {
        case .key(let k): k
        case .index(let i): "[\(i)]"
        }
    }
}

extension JSONValue {
    /// A copy with the value at `path` replaced (`nil` removes it).
    func setting(_ path: [Step], to newValue: JSONValue?) -> JSONValue {
        guard let first = path.first else { return newValue ?? .null }
        let rest = Array(path.dropFirst())
        switch (self, first) {
        case (.object(var fields), .key(let key)):
            if rest.isEmpty, newValue == nil {
                fields[key] = nil
            } else {
                fields[key] = (fields[key] ?? .object([:])).setting(rest, to: newValue)
            }
            return .object(fields)
        case (.array(var items), .index(let index)):
            items[index] = items[index].setting(rest, to: newValue)
            return .array(items)
        default:
            return self
        }
    }
}

enum Sample {
    static let digest = String(repeating: "ab", count: 32)

    static let release: JSONValue = .object([
        "service": .string("api"),
        "serial": .integer(7),
        "version": .string("1.4.2"),
        "createdAt": .string("2026-11-26T12:00:00Z"),
        "expiresAt": .string("2027-02-24T12:00:00Z"),
        "artifact": .object([
            "url": .string("/v1/artifacts/\(digest)"),
            "sha256": .string(digest),
            "size": .integer(1_234_567),
        ]),
        "env": .object(["NODE_ENV": .string("production")]),
        "pm2": .object([
            "apps": .array([
                .object([
                    "name": .string("api"), "script": .string("server.js"), "instances": .integer(2),
                    "exec_mode": .string("cluster"), "max_memory_restart": .string("300M"),
                    "env": .object(["PORT": .string("3000")]),
                ])
            ])
        ]),
        "health": .object([
            "http": .string("http://127.0.0.1:3000/healthz"), "deadlineSeconds": .integer(60), "stableSeconds": .integer(10),
        ]),
    ])

    static func envelopeJSON(payload: [UInt8], signatures: JSONValue? = nil) throws -> JSONValue {
        let key = try SigningKey.generate()
        let envelope = try Envelope.sign(payload: payload, payloadType: Release.payloadType, with: [key])
        var json = envelope.json
        if let signatures { json = json.setting([.key("signatures")], to: signatures) }
        return json
    }
}

@Suite("Release documents")
struct ReleaseDocumentTests {
    @Test func theDesignExampleDecodesAndRoundTrips() throws {
        let release = try Release.decode(Sample.release.encoded())
        #expect(release.service == "api")
        #expect(release.serial == 7)
        #expect(release.artifact.size == 1_234_567)
        #expect(release.artifact.isRelative)
        #expect(release.pm2.apps[0].options["instances"] == .integer(2))
        #expect(release.pm2.apps[0].options["max_memory_restart"] == .string("300M"))
        #expect(release.health.http == "http://127.0.0.1:3000/healthz")
        let again = try Release.decode(release.payload())
        #expect(again == release)
        // Canonical encoding is stable: encoding twice gives the same bytes.
        #expect(again.payload() == release.payload())
    }

    @Test func pm2TypesAreKeptAsTheOperatorWroteThem() throws {
        let doc = Sample.release
            .setting([.key("pm2"), .key("apps"), .index(0), .key("instances")], to: .string("max"))
            .setting([.key("pm2"), .key("apps"), .index(0), .key("args")], to: .array([.string("--port"), .string("3000")]))
            .setting([.key("pm2"), .key("apps"), .index(0), .key("max_memory_restart")], to: .integer(314_572_800))
        let release = try Release.decode(doc.encoded())
        #expect(release.pm2.apps[0].options["instances"] == .string("max"))
        #expect(release.pm2.apps[0].options["args"] == .array([.string("--port"), .string("3000")]))
        #expect(release.pm2.apps[0].options["max_memory_restart"] == .integer(314_572_800))
    }

    @Test func absoluteHTTPSArtifactURLsAreAccepted() throws {
        let doc = Sample.release.setting([.key("artifact"), .key("url")], to: .string("https://bucket.s3.amazonaws.com/a.tgz?X-Amz=1"))
        #expect(try Release.decode(doc.encoded()).artifact.isRelative == false)
    }

    struct Malformed: Sendable, CustomStringConvertible {
        var description: String
        var document: @Sendable () throws -> [UInt8]
        var expected: DocumentError
        /// Decode as an envelope (true) or as a release payload (false).
        var isEnvelope = false
    }

    static func release(_ path: [Step], _ value: JSONValue?) -> @Sendable () throws -> [UInt8] {
        { Array(Sample.release.setting(path, to: value).encoded()) }
    }

    static let app0: [Step] = [.key("pm2"), .key("apps"), .index(0)]

    static let malformed: [Malformed] = [
        // Envelope level.
        .init(
            description: "malformed JSON",
            document: { Array("{\"payloadType\":".utf8) },
            expected: .malformedJSON(""),
            isEnvelope: true
        ),
        .init(
            description: "payload is not base64",
            document: {
                Array(try Sample.envelopeJSON(payload: [1]).setting([.key("payload")], to: .string("%%%not base64%%%")).encoded())
            },
            expected: .invalidValue(field: "payload", reason: "not valid base64"),
            isEnvelope: true
        ),
        .init(
            description: "empty signatures",
            document: {
                Array(try Sample.envelopeJSON(payload: [1], signatures: .array([])).encoded())
            },
            expected: .invalidValue(field: "signatures", reason: "at least one signature is required"),
            isEnvelope: true
        ),
        .init(
            description: "oversized payload",
            document: {
                let big = [UInt8](repeating: 0x61, count: Limits.releasePayloadBytes + 1)
                return Array(try Sample.envelopeJSON(payload: big).encoded())
            },
            expected: .tooLarge(field: "payload", limit: Limits.releasePayloadBytes, actual: Limits.releasePayloadBytes + 1),
            isEnvelope: true
        ),
        .init(
            description: "unknown envelope field",
            document: {
                Array(try Sample.envelopeJSON(payload: [1]).setting([.key("comment")], to: .string("x")).encoded())
            },
            expected: .unknownField("comment"),
            isEnvelope: true
        ),
        .init(
            description: "missing payloadType",
            document: {
                Array(try Sample.envelopeJSON(payload: [1]).setting([.key("payloadType")], to: nil).encoded())
            },
            expected: .missingField("payloadType"),
            isEnvelope: true
        ),
        .init(
            description: "signature of the wrong length",
            document: {
                Array(
                    try Sample.envelopeJSON(payload: [1], signatures: .array([.object(["keyid": .string("aa"), "sig": .string("AAAA")])])).encoded()
                )
            },
            expected: .invalidValue(field: "signatures[0].sig", reason: "an Ed25519 signature is 64 bytes, got 3"),
            isEnvelope: true
        ),
        .init(
            description: "signatures is not an array",
            document: {
                Array(try Sample.envelopeJSON(payload: [1], signatures: .string("sig")).encoded())
            },
            expected: .wrongType(field: "signatures", expected: "array", got: "string"),
            isEnvelope: true
        ),
        .init(
            description: "too many signatures",
            document: {
                let one: JSONValue = .object(["keyid": .string("aa"), "sig": .string(Data(count: 64).base64EncodedString())])
                return Array(try Sample.envelopeJSON(payload: [1], signatures: .array(Array(repeating: one, count: 17))).encoded())
            },
            expected: .tooMany(field: "signatures", limit: 16, actual: 17),
            isEnvelope: true
        ),
        .init(
            description: "unknown field inside a signature",
            document: {
                let sig: JSONValue = .object(["keyid": .string("aa"), "sig": .string(Data(count: 64).base64EncodedString()), "alg": .string("rsa")])
                return Array(try Sample.envelopeJSON(payload: [1], signatures: .array([sig])).encoded())
            },
            expected: .unknownField("signatures[0].alg"),
            isEnvelope: true
        ),

        // Release level.
        .init(
            description: "release payload over 1 MiB",
            document: {
                [UInt8](repeating: 0x20, count: Limits.releasePayloadBytes + 1)
            },
            expected: .tooLarge(field: "payload", limit: Limits.releasePayloadBytes, actual: Limits.releasePayloadBytes + 1)
        ),
        .init(
            description: "payload is an array",
            document: { Array("[]".utf8) },
            expected: .wrongType(field: "document", expected: "object", got: "array")
        ),
        .init(
            description: "unknown top-level field",
            document: release([.key("servce")], .string("api")),
            expected: .unknownField("servce")
        ),
        .init(description: "missing version", document: release([.key("version")], nil), expected: .missingField("version")),
        .init(
            description: "serial as a string",
            document: release([.key("serial")], .string("7")),
            expected: .wrongType(field: "serial", expected: "integer", got: "string")
        ),
        .init(
            description: "fractional serial",
            document: release([.key("serial")], .number(1.5)),
            expected: .wrongType(field: "serial", expected: "integer", got: "a fractional number")
        ),
        .init(
            description: "serial 0",
            document: release([.key("serial")], .integer(0)),
            expected: .invalidValue(field: "serial", reason: "0 is outside 1...9007199254740992")
        ),
        .init(
            description: "uppercase sha256",
            document: release([.key("artifact"), .key("sha256")], .string(Sample.digest.uppercased())),
            expected: .invalidValue(field: "artifact.sha256", reason: "must be 64 lowercase hex characters")
        ),
        .init(
            description: "short sha256",
            document: release([.key("artifact"), .key("sha256")], .string("abc")),
            expected: .invalidValue(field: "artifact.sha256", reason: "must be 64 lowercase hex characters")
        ),
        .init(
            description: "artifact size 0",
            document: release([.key("artifact"), .key("size")], .integer(0)),
            expected: .invalidValue(field: "artifact.size", reason: "0 is outside 1...1099511627776")
        ),
        .init(
            description: "relative URL for another digest",
            document: release([.key("artifact"), .key("url")], .string("/v1/artifacts/" + String(repeating: "cd", count: 32))),
            expected: .invalidValue(field: "artifact.url", reason: "a relative artifact URL must be /v1/artifacts/<the artifact's sha256>")
        ),
        .init(
            description: "ftp artifact URL",
            document: release([.key("artifact"), .key("url")], .string("ftp://example.com/a.tgz")),
            expected: .invalidValue(field: "artifact.url", reason: "must be /v1/artifacts/<sha256> or an absolute http(s) URL")
        ),
        .init(
            description: "bad service name",
            document: release([.key("service")], .string("API_v2")),
            expected: .invalidValue(field: "service", reason: "\"API_v2\" must match ^[a-z0-9][a-z0-9-]{0,62}$")
        ),
        .init(
            description: "service name too long",
            document: release([.key("service")], .string(String(repeating: "a", count: 64))),
            expected: .tooLarge(field: "service", limit: 63, actual: 64)
        ),
        .init(
            description: "version with a space",
            document: release([.key("version")], .string("1.0 beta")),
            expected: .invalidValue(field: "version", reason: "\"1.0 beta\" must match ^[A-Za-z0-9][A-Za-z0-9._+~-]{0,127}$")
        ),
        .init(
            description: "bad timestamp",
            document: release([.key("createdAt")], .string("yesterday")),
            expected: .invalidValue(
                field: "createdAt",
                reason: "\"yesterday\" is not an RFC 3339 timestamp like 2026-11-26T12:00:00Z between 1970 and 9999"
            )
        ),
        .init(
            description: "expiresAt before createdAt",
            document: release([.key("expiresAt")], .string("2026-01-01T00:00:00Z")),
            expected: .invalidValue(field: "expiresAt", reason: "must be later than createdAt")
        ),
        .init(
            description: "no apps",
            document: release([.key("pm2"), .key("apps")], .array([])),
            expected: .invalidValue(field: "pm2.apps", reason: "at least one app is required")
        ),
        .init(
            description: "../ in script",
            document: release(app0 + [.key("script")], .string("../../bin/sh")),
            expected: .invalidValue(field: "pm2.apps[0].script", reason: "must not contain .. (it would leave the release tree)")
        ),
        .init(
            description: "absolute script",
            document: release(app0 + [.key("script")], .string("/usr/bin/node")),
            expected: .invalidValue(field: "pm2.apps[0].script", reason: "must be relative to the release root, not absolute")
        ),
        .init(
            description: "duplicate app names",
            document: {
                let app = Sample.release.setting(app0, to: nil)
                let apps: JSONValue = .array([
                    .object(["name": .string("web"), "script": .string("a.js")]), .object(["name": .string("web"), "script": .string("b.js")]),
                ])
                return Array(app.setting([.key("pm2"), .key("apps")], to: apps).encoded())
            },
            expected: .duplicateAppName(field: "pm2.apps[1].name", name: "web")
        ),
        .init(
            description: "too many apps",
            document: {
                let apps = (0..<65).map { JSONValue.object(["name": .string("app\($0)"), "script": .string("a.js")]) }
                return Array(Sample.release.setting([.key("pm2"), .key("apps")], to: .array(apps)).encoded())
            },
            expected: .tooMany(field: "pm2.apps", limit: 64, actual: 65)
        ),
        .init(
            description: "non-string env value",
            document: release([.key("env"), .key("PORT")], .integer(3000)),
            expected: .wrongType(field: "env.PORT", expected: "string", got: "number")
        ),
        .init(
            description: "invalid env name",
            document: release(app0 + [.key("env"), .key("1BAD")], .string("x")),
            expected: .invalidValue(
                field: "pm2.apps[0].env.1BAD",
                reason: "environment variable names must match ^[A-Za-z_][A-Za-z0-9_]*$ and be at most 256 characters"
            )
        ),
        .init(
            description: "env value over the limit",
            document: release([.key("env"), .key("BIG")], .string(String(repeating: "x", count: 32 * 1024 + 1))),
            expected: .tooLarge(field: "env.BIG", limit: 32 * 1024, actual: 32 * 1024 + 1)
        ),
        .init(
            description: "absolute cwd (a release's cwd is relative to the release root)",
            document: release(app0 + [.key("cwd")], .string("/srv/api")),
            expected: .invalidValue(field: "pm2.apps[0].cwd", reason: "must be a directory relative to the release root, without ..")
        ),
        .init(
            description: "namespace set by the operator",
            document: release(app0 + [.key("namespace")], .string("prod")),
            expected: .ownedByFerry(field: "pm2.apps[0].namespace")
        ),
        .init(
            description: "log path set by the operator",
            document: release(app0 + [.key("out_file")], .string("/tmp/x.log")),
            expected: .ownedByFerry(field: "pm2.apps[0].out_file")
        ),
        .init(
            description: "misspelt PM2 option",
            document: release(app0 + [.key("instnaces")], .integer(2)),
            expected: .unknownField("pm2.apps[0].instnaces")
        ),
        .init(
            description: "env_production block in a release",
            document: release(app0 + [.key("env_production")], .object([:])),
            expected: .invalidValue(
                field: "pm2.apps[0].env_production",
                reason: "env_<name> blocks are merged at publish time (publish --env-name <name>); a release carries the merged env only"
            )
        ),
        .init(
            description: "unknown exec_mode",
            document: release(app0 + [.key("exec_mode")], .string("threads")),
            expected: .invalidValue(field: "pm2.apps[0].exec_mode", reason: "must be fork, cluster, fork_mode or cluster_mode")
        ),
        .init(
            description: "instances as a word",
            document: release(app0 + [.key("instances")], .string("many")),
            expected: .invalidValue(field: "pm2.apps[0].instances", reason: "must be a number or \"max\"")
        ),
        .init(
            description: "max_memory_restart nonsense",
            document: release(app0 + [.key("max_memory_restart")], .string("lots")),
            expected: .invalidValue(field: "pm2.apps[0].max_memory_restart", reason: "\"lots\" must be a number of bytes or like 300M, 1G, 512K")
        ),
        .init(
            description: "autorestart as a string",
            document: release(app0 + [.key("autorestart")], .string("yes")),
            expected: .wrongType(field: "pm2.apps[0].autorestart", expected: "boolean", got: "string")
        ),
        .init(
            description: "health stable not below deadline",
            document: release([.key("health"), .key("stableSeconds")], .integer(60)),
            expected: .invalidValue(field: "health.stableSeconds", reason: "must be shorter than deadlineSeconds (60)")
        ),
        .init(
            description: "health URL not http",
            document: release([.key("health"), .key("http")], .string("file:///etc/passwd")),
            expected: .invalidValue(field: "health.http", reason: "must be /v1/artifacts/<sha256> or an absolute http(s) URL")
        ),
        .init(
            description: "control character in the app name",
            document: release(app0 + [.key("name")], .string("api\u{7}")),
            expected: .invalidValue(field: "pm2.apps[0].name", reason: "control characters are not allowed")
        ),
    ]

    @Test(arguments: malformed)
    func malformedDocumentsAreRefusedWithTheirSpecificError(_ testCase: Malformed) throws {
        let bytes = try testCase.document()
        let error = #expect(throws: DocumentError.self) {
            if testCase.isEnvelope { _ = try Envelope.decode(bytes) } else { _ = try Release.decode(bytes) }
        }
        if case .malformedJSON = testCase.expected {
            guard case .malformedJSON = error else {
                Issue.record("expected malformedJSON, got \(String(describing: error))")
                return
            }
        } else {
            #expect(error == testCase.expected)
        }
        // Every message names the field it is about.
        #expect(error?.description.isEmpty == false)
    }
}

@Suite("Release admission on an agent")
struct ReleaseAdmissionTests {
    let release: Release

    init() throws {
        release = try Release.decode(Sample.release.encoded())  // expires 2027-02-24T12:00:00Z
    }

    func admission(at text: String) throws -> ReleaseAdmission {
        let instant = try #require(Timestamp.parse(text))
        return ReleaseAdmission(clockSkewGrace: .seconds(300), now: { instant })
    }

    @Test(arguments: [
        ("2027-02-24T11:00:00Z", true),  // before expiry
        ("2027-02-24T12:04:59Z", true),  // expired, inside the 5 minute grace
        ("2027-02-24T12:05:00Z", true),  // exactly at the edge of the grace
        ("2027-02-24T12:05:01Z", false),  // outside the grace
        ("2028-01-01T00:00:00Z", false),
    ])
    func expiryHonoursTheClockSkewGrace(_ now: String, _ accepted: Bool) throws {
        let admission = try admission(at: now)
        if accepted {
            try admission.check(release, lastAcceptedSerial: 6)
        } else {
            let error = #expect(throws: AdmissionError.self) { try admission.check(release, lastAcceptedSerial: 6) }
            guard case .expired(service: "api", serial: 7, _, _) = error else {
                Issue.record("unexpected \(String(describing: error))")
                return
            }
        }
    }

    @Test(arguments: [Int64(7), 8, 100])
    func serialMustBeStrictlyAboveTheLastAccepted(_ last: Int64) throws {
        let admission = try admission(at: "2026-12-01T00:00:00Z")
        #expect(throws: AdmissionError.serialNotIncreasing(service: "api", got: 7, current: last)) {
            try admission.check(release, lastAcceptedSerial: last)
        }
    }

    @Test func aFirstReleaseOrAHigherSerialIsAdmitted() throws {
        let admission = try admission(at: "2026-12-01T00:00:00Z")
        try admission.check(release, lastAcceptedSerial: nil)
        try admission.check(release, lastAcceptedSerial: 6)
    }
}
