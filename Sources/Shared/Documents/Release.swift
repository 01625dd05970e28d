#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// What one service should run: the signed payload of a release envelope (DESIGN §2).
///
/// Decoding is strict: unknown fields, wrong types and out-of-range values are refused with a `DocumentError`
/// naming the field.
package struct Release: Sendable, Equatable {
    /// The DSSE `payloadType` of a release.
    package static let payloadType = "application/vnd.ferry.release.v1+json"

    package var service: String
    /// Strictly increasing per service; an agent never goes below a serial it accepted.
    package var serial: Int64
    package var version: String
    package var createdAt: Date
    /// After this instant (plus a clock-skew grace) agents refuse to install the release.
    package var expiresAt: Date
    package var artifact: ArtifactReference
    /// Environment for every app of the release (apps' own `env` wins).
    package var env: [String: String]
    package var pm2: PM2Config
    package var health: HealthCheck

    package init(
        service: String,
        serial: Int64,
        version: String,
        createdAt: Date,
        expiresAt: Date,
        artifact: ArtifactReference,
        env: [String: String] = [:],
        pm2: PM2Config,
        health: HealthCheck = HealthCheck()
    ) {
        self.service = service
        self.serial = serial
        self.version = version
        self.createdAt = createdAt
        self.expiresAt = expiresAt
        self.artifact = artifact
        self.env = env
        self.pm2 = pm2
        self.health = health
    }
}

/// Where the release's artifact is and what it must hash to.
package struct ArtifactReference: Sendable, Equatable {
    /// `/v1/artifacts/<sha256>` (resolved against the controller) or an absolute http(s) URL.
    package var url: String
    package var sha256: SHA256Digest
    /// Exact size in bytes; downloads stop here.
    package var size: Int64

    /// The sizes a release may name: 1 byte to 1 TiB.
    package static let sizes: ClosedRange<Int64> = 1...(1 << 40)

    package init(url: String, sha256: SHA256Digest, size: Int64) {
        self.url = url
        self.sha256 = sha256
        self.size = size
    }

    /// The controller-relative URL of an artifact.
    package static func controllerPath(for digest: SHA256Digest) -> String { "/v1/artifacts/\(digest.hex)" }

    /// Whether `url` is relative to the controller.
    package var isRelative: Bool { url.hasPrefix("/") }
}

/// The PM2 part of a release: apps in PM2's own ecosystem vocabulary.
package struct PM2Config: Sendable, Equatable {
    package var apps: [PM2App]
    package init(apps: [PM2App]) { self.apps = apps }
}

/// When a release counts as healthy.
package struct HealthCheck: Sendable, Equatable {
    /// An optional URL that must answer 2xx (on the instance, usually loopback).
    package var http: String?
    /// How long the agent waits for health before rolling back.
    package var deadlineSeconds: Int64
    /// How long every check must keep passing before the release is kept.
    package var stableSeconds: Int64

    package init(http: String? = nil, deadlineSeconds: Int64 = 60, stableSeconds: Int64 = 10) {
        self.http = http
        self.deadlineSeconds = deadlineSeconds
        self.stableSeconds = stableSeconds
    }
}

// MARK: - Decoding

extension Release {
    /// Decodes and validates a release payload.
    package static func decode<Bytes: Collection>(_ payload: Bytes) throws(DocumentError) -> Release where Bytes.Element == UInt8 {
        guard payload.count <= Limits.releasePayloadBytes else {
            throw .tooLarge(field: "payload", limit: Limits.releasePayloadBytes, actual: payload.count)
        }
        return try Release(json: JSONValue.parse(payload))
    }

    /// Validates an already-parsed release document.
    package init(json: JSONValue) throws(DocumentError) {
        var reader = try ObjectReader(json, path: "")
        self.service = try reader.required("service", Self.serviceName)
        self.serial = try reader.required("serial", Field.integer(in: 1...Self.maximumSerial))
        self.version = try reader.required("version", Self.versionString)
        self.createdAt = try reader.required("createdAt", Timestamp.field)
        self.expiresAt = try reader.required("expiresAt", Timestamp.field)
        self.artifact = try reader.required("artifact", ArtifactReference.init(json:path:))
        self.env = try reader.optional("env", Field.environment) ?? [:]
        self.pm2 = try reader.required("pm2", PM2Config.init(json:path:))
        self.health = try reader.optional("health", HealthCheck.init(json:path:)) ?? HealthCheck()
        try reader.rejectUnknownFields()
        guard expiresAt > createdAt else {
            throw .invalidValue(field: "expiresAt", reason: "must be later than createdAt")
        }
    }

    /// Largest serial: 2^53, so every JSON implementation reads it exactly.
    package static let maximumSerial: Int64 = 1 << 53

    /// Validates a service name: `^[a-z0-9][a-z0-9-]{0,62}$`.
    package static func serviceName(_ value: JSONValue, _ path: String) throws(DocumentError) -> String {
        let name = try Field.string(maxLength: 63)(value, path)
        guard isValidServiceName(name) else {
            throw .invalidValue(field: path, reason: "\"\(name)\" must match ^[a-z0-9][a-z0-9-]{0,62}$")
        }
        return name
    }

    /// Whether `name` matches `^[a-z0-9][a-z0-9-]{0,62}$`.
    package static func isValidServiceName(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        func ok(_ c: UInt8) -> Bool { (0x61...0x7a).contains(c) || (0x30...0x39).contains(c) }
        guard let first = bytes.first, ok(first), bytes.count <= 63 else { return false }
        return bytes.dropFirst().allSatisfy { ok($0) || $0 == 0x2d }
    }

    private static func versionString(_ value: JSONValue, _ path: String) throws(DocumentError) -> String {
        let version = try Field.string(maxLength: 128)(value, path)
        guard isValidVersion(version) else {
            throw .invalidValue(field: path, reason: "\"\(version)\" must match ^[A-Za-z0-9][A-Za-z0-9._+~-]{0,127}$")
        }
        return version
    }

    /// Whether `version` matches `^[A-Za-z0-9][A-Za-z0-9._+~-]{0,127}$`.
    package static func isValidVersion(_ version: String) -> Bool {
        let bytes = Array(version.utf8)
        func alnum(_ c: UInt8) -> Bool {
            (0x61...0x7a).contains(c) || (0x41...0x5a).contains(c) || (0x30...0x39).contains(c)
        }
        guard let first = bytes.first, alnum(first), bytes.count <= 128 else { return false }
        return bytes.dropFirst().allSatisfy { alnum($0) || Array("._+~-".utf8).contains($0) }
    }
}

extension ArtifactReference {
    init(json: JSONValue, path: String) throws(DocumentError) {
        var reader = try ObjectReader(json, path: path)
        let url = try reader.required("url", Field.string(maxLength: Limits.urlLength))
        let digestText = try reader.required("sha256", Field.string(maxLength: 64))
        guard let digest = SHA256Digest(hex: digestText) else {
            throw .invalidValue(field: reader.path(of: "sha256"), reason: "must be 64 lowercase hex characters")
        }
        self.sha256 = digest
        self.size = try reader.required("size", Field.integer(in: ArtifactReference.sizes))
        try reader.rejectUnknownFields()
        if url.hasPrefix("/") {
            guard url == Self.controllerPath(for: digest) else {
                throw .invalidValue(field: reader.path(of: "url"), reason: "a relative artifact URL must be /v1/artifacts/<the artifact's sha256>")
            }
        } else {
            try URLCheck.httpURL(url, path: reader.path(of: "url"))
        }
        self.url = url
    }
}

extension PM2Config {
    init(json: JSONValue, path: String) throws(DocumentError) {
        var reader = try ObjectReader(json, path: path)
        let appsPath = reader.path(of: "apps")
        let values = try reader.required("apps") { (value, path) throws(DocumentError) -> [JSONValue] in
            guard case .array(let items) = value else { throw .wrongType(field: path, expected: "array", got: value.typeName) }
            return items
        }
        try reader.rejectUnknownFields()
        guard !values.isEmpty else { throw .invalidValue(field: appsPath, reason: "at least one app is required") }
        guard values.count <= Limits.apps else { throw .tooMany(field: appsPath, limit: Limits.apps, actual: values.count) }
        var apps: [PM2App] = []
        var names: Set<String> = []
        for (index, value) in values.enumerated() {
            let app = try PM2App(json: value, path: "\(appsPath)[\(index)]")
            guard names.insert(app.name).inserted else {
                throw .duplicateAppName(field: "\(appsPath)[\(index)].name", name: app.name)
            }
            apps.append(app)
        }
        self.apps = apps
    }
}

extension HealthCheck {
    init(json: JSONValue, path: String) throws(DocumentError) {
        var reader = try ObjectReader(json, path: path)
        let url = try reader.optional("http", Field.string(maxLength: Limits.urlLength))
        if let url { try URLCheck.httpURL(url, path: reader.path(of: "http")) }
        self.http = url
        self.deadlineSeconds = try reader.optional("deadlineSeconds", Field.integer(in: 1...3600)) ?? 60
        self.stableSeconds = try reader.optional("stableSeconds", Field.integer(in: 0...3600)) ?? 10
        try reader.rejectUnknownFields()
        guard stableSeconds < deadlineSeconds else {
            throw .invalidValue(field: reader.path(of: "stableSeconds"), reason: "must be shorter than deadlineSeconds (\(deadlineSeconds))")
        }
    }
}

// MARK: - Encoding

extension Release {
    /// The release as a JSON value (the inverse of `init(json:)`).
    package var json: JSONValue {
        var health: [String: JSONValue] = [
            "deadlineSeconds": .integer(self.health.deadlineSeconds),
            "stableSeconds": .integer(self.health.stableSeconds),
        ]
        if let url = self.health.http { health["http"] = .string(url) }
        var fields: [String: JSONValue] = [
            "service": .string(service),
            "serial": .integer(serial),
            "version": .string(version),
            "createdAt": .string(Timestamp.format(createdAt)),
            "expiresAt": .string(Timestamp.format(expiresAt)),
            "artifact": .object([
                "url": .string(artifact.url),
                "sha256": .string(artifact.sha256.hex),
                "size": .integer(artifact.size),
            ]),
            "pm2": .object(["apps": .array(pm2.apps.map(\.json))]),
            "health": .object(health),
        ]
        if !env.isEmpty { fields["env"] = .object(env.mapValues { .string($0) }) }
        return .object(fields)
    }

    /// The canonical payload bytes (compact, sorted keys).
    package func payload() -> [UInt8] { Array(json.encoded()) }
}

/// Checks absolute http(s) URLs.
package enum URLCheck {
    /// Throws unless `url` is an absolute `http://` or `https://` URL with a host and no whitespace.
    package static func httpURL(_ url: String, path: String) throws(DocumentError) {
        let lower = url.lowercased()
        guard lower.hasPrefix("http://") || lower.hasPrefix("https://") else {
            throw .invalidValue(field: path, reason: "must be /v1/artifacts/<sha256> or an absolute http(s) URL")
        }
        let rest = url.drop(while: { $0 != ":" }).dropFirst(3)
        guard let first = rest.first, first != "/", first != "?", first != "#" else {
            throw .invalidValue(field: path, reason: "URL has no host")
        }
        if url.unicodeScalars.contains(where: { $0.properties.isWhitespace }) {
            throw .invalidValue(field: path, reason: "URL contains whitespace")
        }
    }
}
