import Foundation
import Hummingbird
import Shared

/// `POST /v1/artifacts/prune` (operator): artifact retention (`ArtifactStore+Retention.swift`).
///
/// Body (every field optional; an empty body is `{}`): `{"keepReleases": 1...1000 (5), "minAgeSeconds": 0...31536000
/// (86400), "dryRun": Bool (false)}`. Answer: `{dryRun, keepReleases, minAgeSeconds, removed: [{sha256, size}],
/// bytesFreed, kept}`.
extension ArtifactRoutes {
    /// Largest prune request body: three small fields.
    static let pruneBodyLimit = 4096

    func prune(_ request: Request, context: FerryRequestContext) async throws -> Response {
        let principal = try context.authenticated()
        let bytes = try await core.body(of: request, context: context, limit: Self.pruneBodyLimit, what: "the prune request")
        let policy = try Self.retentionPolicy(bytes)
        let outcome = try await core.artifacts.prune(policy, store: core.store, now: core.now())
        core.logger.info(
            policy.dryRun ? "Artifact prune (dry run)" : "Artifacts pruned",
            metadata: [
                "artifact.removed": "\(outcome.removed.count)", "artifact.bytes_freed": "\(outcome.bytesFreed)",
                "artifact.kept": "\(outcome.kept)", "artifact.keep_releases": "\(policy.keepReleases)",
                "artifact.min_age_seconds": "\(policy.minimumAge.components.seconds)", "artifact.dry_run": "\(policy.dryRun)",
                "ferry.token": "\(principal.name)",
            ]
        )
        let body = JSONValue.object([
            "dryRun": .bool(policy.dryRun),
            "keepReleases": .integer(Int64(policy.keepReleases)),
            "minAgeSeconds": .integer(policy.minimumAge.components.seconds),
            "removed": .array(outcome.removed.map { .object(["sha256": .string($0.digest.hex), "size": .integer($0.size)]) }),
            "bytesFreed": .integer(outcome.bytesFreed),
            "kept": .integer(Int64(outcome.kept)),
        ])
        return JSONResponse.make(body)
    }

    /// The policy a prune request body asks for, every field checked.
    /// - Throws: `APIError` 400: `malformed_json`, `wrong_type` (not an object), `unknown_field`,
    ///   `invalid_keep_releases`, `invalid_min_age`, `invalid_dry_run`.
    static func retentionPolicy(_ bytes: [UInt8]) throws -> ArtifactStore.RetentionPolicy {
        var policy = ArtifactStore.RetentionPolicy()
        guard bytes.contains(where: { ![0x20, 0x0A, 0x0D, 0x09].contains($0) }) else { return policy }
        let fields: [String: JSONValue]
        do {
            guard case .object(let object) = try JSONValue.parse(bytes) else {
                throw APIError.badRequest("wrong_type", "the prune request must be a JSON object like {\"keepReleases\": 5}")
            }
            fields = object
        } catch let error as DocumentError {
            throw APIError.document(error, what: "the prune request")
        }
        let known = ["keepReleases", "minAgeSeconds", "dryRun"]
        if let unknown = fields.keys.filter({ !known.contains($0) }).sorted().first {
            throw APIError.badRequest(
                "unknown_field",
                "the prune request has an unknown field \"\(unknown.prefix(80))\"; it takes \(known.joined(separator: ", "))"
            )
        }
        let keep = ArtifactStore.RetentionPolicy.keepReleasesRange
        if let value = fields["keepReleases"] {
            guard case .integer(let count) = value, (Int64(keep.lowerBound)...Int64(keep.upperBound)).contains(count) else {
                throw APIError.badRequest(
                    "invalid_keep_releases",
                    "keepReleases must be a whole number from \(keep.lowerBound) to \(keep.upperBound), got \(Self.shown(value))"
                )
            }
            policy.keepReleases = Int(count)
        }
        let age = ArtifactStore.RetentionPolicy.minimumAgeSecondsRange
        if let value = fields["minAgeSeconds"] {
            guard case .integer(let seconds) = value, age.contains(seconds) else {
                throw APIError.badRequest(
                    "invalid_min_age",
                    "minAgeSeconds must be a whole number of seconds from \(age.lowerBound) to \(age.upperBound) (365 days), "
                        + "got \(Self.shown(value))"
                )
            }
            policy.minimumAge = .seconds(seconds)
        }
        if let value = fields["dryRun"] {
            guard case .bool(let dryRun) = value else {
                throw APIError.badRequest("invalid_dry_run", "dryRun must be true or false, got \(Self.shown(value))")
            }
            policy.dryRun = dryRun
        }
        return policy
    }

    /// A field's value as a message quotes it: short, and its type when that is what is wrong.
    private static func shown(_ value: JSONValue) -> String {
        switch value {
        case .integer(let number): "\(number)"
        case .number(let number): "\(number)"
        case .string(let text): "the string \"\(text.prefix(40))\""
        default: "a \(value.typeName)"
        }
    }
}
