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

    /// The policy a prune request body asks for, every field checked (`ObjectReader`, as other documents are read; a
    /// field given as `null` is refused, not read as absent).
    /// - Throws: `APIError` 400: `malformed_json`, `wrong_type` (not an object), `unknown_field`,
    ///   `invalid_keep_releases`, `invalid_min_age`, `invalid_dry_run`.
    static func retentionPolicy(_ bytes: [UInt8]) throws -> ArtifactStore.RetentionPolicy {
        var policy = ArtifactStore.RetentionPolicy()
        guard bytes.contains(where: { ![0x20, 0x0A, 0x0D, 0x09].contains($0) }) else { return policy }
        var reader: ObjectReader
        do {
            reader = try ObjectReader(try JSONValue.parse(bytes), path: "")
        } catch {
            throw APIError.document(error, what: "the prune request")
        }
        /// The field `key` converted by `parse`, `nil` when absent; any other problem is `code`, saying what it `must` be.
        func field<T>(_ key: String, code: String, must: String, _ parse: (JSONValue, String) throws(DocumentError) -> T) throws -> T? {
            reader.consume(key)
            guard let value = reader.fields[key] else { return nil }
            do {
                return try parse(value, key)
            } catch {
                throw APIError.badRequest(code, "\(key) must be \(must): \(error)")
            }
        }
        let keep = ArtifactStore.RetentionPolicy.keepReleasesRange
        if let count = try field(
            "keepReleases",
            code: "invalid_keep_releases",
            must: "a whole number from \(keep.lowerBound) to \(keep.upperBound)",
            Field.integer(in: Int64(keep.lowerBound)...Int64(keep.upperBound))
        ) {
            policy.keepReleases = Int(count)
        }
        let age = ArtifactStore.RetentionPolicy.minimumAgeSecondsRange
        if let seconds = try field(
            "minAgeSeconds",
            code: "invalid_min_age",
            must: "a whole number of seconds from \(age.lowerBound) to \(age.upperBound) (365 days)",
            Field.integer(in: age)
        ) {
            policy.minimumAge = .seconds(seconds)
        }
        if let dryRun = try field("dryRun", code: "invalid_dry_run", must: "true or false", Field.bool) { policy.dryRun = dryRun }
        do {
            try reader.rejectUnknownFields()
        } catch {
            throw APIError.document(error, what: "the prune request (it takes keepReleases, minAgeSeconds, dryRun)")
        }
        return policy
    }
}
