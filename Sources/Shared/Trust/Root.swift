#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The trust root: which keys may sign releases, and which may sign the next root (TUF's root role, shaped for
/// Ferry's one role, releases). The signed payload of a root envelope (`application/vnd.ferry.root.v1+json`).
///
/// ```json
/// {
///   "version": 2,
///   "expiresAt": "2027-11-26T12:00:00Z",
///   "keys": { "<key id>": { "type": "ed25519", "public": "<base64 of the raw 32-byte key>" } },
///   "roles": {
///     "root":    { "keyIds": ["<key id>", "..."], "threshold": 2 },
///     "release": { "keyIds": ["<key id>"], "threshold": 1 }
///   }
/// }
/// ```
/// Decoding is strict, like a release's: unknown fields, wrong types, a key id that is not the SHA-256 of its key, a
/// role naming a key the document does not list, a key no role uses, the same key twice in a role, and a threshold
/// outside 1...(the role's keys) are refused with a `DocumentError` naming the field. A `Root` value is always valid:
/// its only initialiser is the validating one.
package struct Root: Sendable {
    /// The DSSE `payloadType` of a root.
    package static let payloadType = "application/vnd.ferry.root.v1+json"
    /// Largest version: 2^53, so every JSON implementation reads it exactly (and `version + 1` never overflows).
    package static let maximumVersion: Int64 = 1 << 53
    /// Most keys one root may list.
    package static let maximumKeys = 64
    /// Largest root payload, in bytes.
    package static let maximumPayloadBytes = 64 * 1024

    /// Starts at 1 and goes up by exactly 1 with each new root.
    package let version: Int64
    /// After this instant (plus the clock-skew grace) the root no longer admits releases.
    package let expiresAt: Date
    /// Every key the roles use, by key id (lowercase hex SHA-256 of the raw key).
    package let keys: [String: PublicKey]
    /// The keys that may sign the next root, and how many of them must.
    package let rootRole: Role
    /// The keys that may sign releases, and how many of them must.
    package let releaseRole: Role

    /// The two roles' verification policies, built once the document is validated.
    private let rootPolicy: TrustPolicy
    private let releasePolicy: TrustPolicy

    /// The roles a root defines.
    package enum RoleName: String, Sendable, CaseIterable, CustomStringConvertible {
        /// May sign the next root.
        case root
        /// May sign releases.
        case release

        package var description: String { rawValue }
    }

    /// A role: key ids (sorted, distinct) and how many distinct ones must sign.
    package struct Role: Sendable, Equatable {
        package let keyIDs: [String]
        package let threshold: Int
    }

    /// The role named `name`.
    package func role(_ name: RoleName) -> Role {
        switch name {
        case .root: rootRole
        case .release: releaseRole
        }
    }

    /// The policy that verifies signatures of role `name`: its keys, its threshold.
    package func policy(for name: RoleName) -> TrustPolicy {
        switch name {
        case .root: rootPolicy
        case .release: releasePolicy
        }
    }

    /// Whether the root expired more than `grace` before `instant`.
    package func isExpired(at instant: Date, grace: Duration = .zero) -> Bool {
        let allowance = Double(grace.components.seconds) + Double(grace.components.attoseconds) / 1e18
        return instant.timeIntervalSince(expiresAt) > allowance
    }
}

extension Root: Equatable {
    package static func == (lhs: Root, rhs: Root) -> Bool {
        lhs.version == rhs.version && lhs.expiresAt == rhs.expiresAt && lhs.keys == rhs.keys && lhs.rootRole == rhs.rootRole
            && lhs.releaseRole == rhs.releaseRole
    }
}

// MARK: - Building

extension Root {
    /// Builds a root from public keys, validated exactly as a received one (it goes through `init(json:)`).
    /// - Throws: `DocumentError` naming the field, for example `roles.root.threshold` when it exceeds the keys.
    package static func make(
        version: Int64,
        expiresAt: Date,
        rootKeys: [PublicKey],
        rootThreshold: Int,
        releaseKeys: [PublicKey],
        releaseThreshold: Int
    ) throws(DocumentError) -> Root {
        var keys: [String: JSONValue] = [:]
        for key in rootKeys + releaseKeys { keys[key.keyID] = Self.json(of: key) }
        func role(_ members: [PublicKey], _ threshold: Int) -> JSONValue {
            // Duplicates are kept here so that validation reports them, rather than silently merging them.
            .object(["keyIds": .array(members.map { .string($0.keyID) }), "threshold": .integer(Int64(threshold))])
        }
        let document: JSONValue = .object([
            "version": .integer(version),
            "expiresAt": .string(Timestamp.format(expiresAt)),
            "keys": .object(keys),
            "roles": .object(["root": role(rootKeys, rootThreshold), "release": role(releaseKeys, releaseThreshold)]),
        ])
        return try Root(json: document)
    }

    /// The keys of role `name`, in the order of its key ids.
    package func keys(of name: RoleName) -> [PublicKey] {
        role(name).keyIDs.compactMap { keys[$0] }
    }

    private static func json(of key: PublicKey) -> JSONValue {
        .object(["type": .string("ed25519"), "public": .string(Data(key.rawRepresentation).base64EncodedString())])
    }
}

// MARK: - Decoding

extension Root {
    /// Decodes and validates a root payload.
    package static func decode<Bytes: Collection>(_ payload: Bytes) throws(DocumentError) -> Root where Bytes.Element == UInt8 {
        guard payload.count <= maximumPayloadBytes else {
            throw .tooLarge(field: "payload", limit: maximumPayloadBytes, actual: payload.count)
        }
        return try Root(json: JSONValue.parse(payload))
    }

    /// Validates an already-parsed root document.
    package init(json: JSONValue) throws(DocumentError) {
        var reader = try ObjectReader(json, path: "")
        let version = try reader.required("version", Field.integer(in: 1...Self.maximumVersion))
        let expiresAt = try reader.required("expiresAt", Timestamp.field)
        let keys = try reader.required("keys", Self.keyTable)
        let roles = try reader.required("roles") { (value, path) throws(DocumentError) -> (root: Role, release: Role) in
            var roles = try ObjectReader(value, path: path)
            let root = try roles.required("root") { (value, path) throws(DocumentError) in try Self.role(value, path, keys: keys) }
            let release = try roles.required("release") { (value, path) throws(DocumentError) in try Self.role(value, path, keys: keys) }
            try roles.rejectUnknownFields()
            return (root, release)
        }
        try reader.rejectUnknownFields()
        let used = Set(roles.root.keyIDs + roles.release.keyIDs)
        if let unused = keys.keys.filter({ !used.contains($0) }).sorted().first {
            throw .invalidValue(field: "keys.\(unused)", reason: "no role uses this key; remove it or add it to roles.root or roles.release")
        }
        self.version = version
        self.expiresAt = expiresAt
        self.keys = keys
        self.rootRole = roles.root
        self.releaseRole = roles.release
        do {
            self.rootPolicy = try TrustPolicy(trustedKeys: roles.root.keyIDs.compactMap { keys[$0] }, threshold: roles.root.threshold)
            self.releasePolicy = try TrustPolicy(
                trustedKeys: roles.release.keyIDs.compactMap { keys[$0] },
                threshold: roles.release.threshold
            )
        } catch {
            // `role` checked the threshold against distinct listed keys already; this only restates it.
            throw .invalidValue(field: "roles", reason: "\(error)")
        }
    }

    /// `keys`: key id → `{"type": "ed25519", "public": "<base64>"}`, each id the SHA-256 of its key.
    private static func keyTable(_ value: JSONValue, _ path: String) throws(DocumentError) -> [String: PublicKey] {
        guard case .object(let fields) = value else { throw .wrongType(field: path, expected: "object", got: value.typeName) }
        guard !fields.isEmpty else { throw .invalidValue(field: path, reason: "at least one key is required") }
        guard fields.count <= maximumKeys else { throw .tooMany(field: path, limit: maximumKeys, actual: fields.count) }
        var keys: [String: PublicKey] = [:]
        for id in fields.keys.sorted() {
            let keyPath = "\(path).\(id)"
            guard isKeyID(id) else {
                throw .invalidValue(field: keyPath, reason: "a key id is the 64 lowercase hex characters of the key's SHA-256")
            }
            var reader = try ObjectReader(fields[id] ?? .null, path: keyPath)
            let type = try reader.required("type", Field.string(maxLength: 32))
            guard type == "ed25519" else {
                throw .invalidValue(field: reader.path(of: "type"), reason: "\"\(type)\" is not supported; Ferry keys are ed25519")
            }
            let text = try reader.required("public", Field.string(maxLength: 128))
            try reader.rejectUnknownFields()
            guard let raw = Data(base64Encoded: text) else {
                throw .invalidValue(field: reader.path(of: "public"), reason: "not valid base64")
            }
            let key: PublicKey
            do {
                key = try PublicKey(rawRepresentation: Array(raw))
            } catch {
                throw .invalidValue(field: reader.path(of: "public"), reason: "\(error)")
            }
            guard key.keyID == id else {
                throw .invalidValue(field: keyPath, reason: "the key id is not the key's SHA-256 (\(key.keyID))")
            }
            keys[id] = key
        }
        return keys
    }

    /// A role: `{"keyIds": [...], "threshold": N}`, every id listed in `keys`, none twice, `1 <= N <= ids`.
    private static func role(_ value: JSONValue, _ path: String, keys: [String: PublicKey]) throws(DocumentError) -> Role {
        var reader = try ObjectReader(value, path: path)
        let idsPath = reader.path(of: "keyIds")
        let ids = try reader.required("keyIds", Field.list(limit: maximumKeys, Field.string(maxLength: 64)))
        let threshold = try reader.required("threshold", Field.integer(in: 1...Int64(maximumKeys)))
        try reader.rejectUnknownFields()
        guard !ids.isEmpty else { throw .invalidValue(field: idsPath, reason: "at least one key id is required") }
        var seen: Set<String> = []
        for (index, id) in ids.enumerated() {
            guard keys[id] != nil else {
                throw .invalidValue(field: "\(idsPath)[\(index)]", reason: "\"\(id)\" is not one of the root's keys")
            }
            guard seen.insert(id).inserted else {
                throw .invalidValue(field: "\(idsPath)[\(index)]", reason: "key \(id) is listed twice (a key counts once)")
            }
        }
        guard threshold <= Int64(ids.count) else {
            throw .invalidValue(
                field: reader.path(of: "threshold"),
                reason: "\(threshold) is more than the \(ids.count) key(s) of the role: it could never be met"
            )
        }
        return Role(keyIDs: ids.sorted(), threshold: Int(threshold))
    }

    /// Whether `text` is 64 lowercase hex characters.
    package static func isKeyID(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        return bytes.count == 64 && bytes.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }
    }
}

// MARK: - Encoding

extension Root {
    /// The root as a JSON value (the inverse of `init(json:)`).
    package var json: JSONValue {
        func role(_ role: Role) -> JSONValue {
            .object(["keyIds": .array(role.keyIDs.map { .string($0) }), "threshold": .integer(Int64(role.threshold))])
        }
        return .object([
            "version": .integer(version),
            "expiresAt": .string(Timestamp.format(expiresAt)),
            "keys": .object(keys.mapValues(Self.json(of:))),
            "roles": .object(["root": role(rootRole), "release": role(releaseRole)]),
        ])
    }

    /// The canonical payload bytes (compact, sorted keys).
    package func payload() -> [UInt8] { Array(json.encoded()) }

    /// An unsigned envelope of this root, to be signed by `root sign`.
    package func unsignedEnvelope() -> Envelope {
        Envelope(payloadType: Self.payloadType, payload: payload(), signatures: [])
    }
}
