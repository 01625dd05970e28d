import Foundation
import HTTPTypes
import Hummingbird
import Shared

/// `POST /v1/artifacts` (operator), `POST /v1/artifacts/prune` (operator: `ArtifactRoutes+Prune.swift`) and `GET`/`HEAD /v1/artifacts/{sha256}` (operator; an agent only for artifacts
/// of its own services' releases).
struct ArtifactRoutes: Sendable {
    let core: ControllerCore

    func register(uploads: RouterGroup<FerryRequestContext>, downloads: RouterGroup<FerryRequestContext>) {
        uploads.post("/v1/artifacts") { request, context in try await upload(request, context: context) }
        uploads.post("/v1/artifacts/prune") { request, context in try await prune(request, context: context) }
        downloads.get("/v1/artifacts/:sha256") { request, context in try await download(request, context: context, head: false) }
        downloads.head("/v1/artifacts/:sha256") { request, context in try await download(request, context: context, head: true) }
    }

    /// The answer while this controller's copy of an artifact is still being checked against its digest (after a
    /// restart, a large copy on a slow disk): neither its bytes nor its presence are vouched for yet. Answered "present"
    /// meanwhile, a publish went ahead (the CLI skipped the upload) and named a copy the check then removed as damaged.
    static func beingChecked(_ digest: SHA256Digest, size: Int64) -> APIError {
        APIError(
            .serviceUnavailable,
            "artifact_being_checked",
            "artifact \(digest.hex) (\(size) bytes) is being checked against its digest; ask again in a moment",
            headers: [.retryAfter: "5"]
        )
    }

    /// The answer to a publish or an upload of an artifact a prune of this controller is removing right now: once it is
    /// gone, the publish is answered 422 `unknown_artifact` and the upload stores it again.
    static func beingRemoved(_ digest: SHA256Digest) -> APIError {
        APIError(
            .serviceUnavailable,
            "artifact_being_removed",
            "artifact \(digest.hex) is being removed by a prune (POST /v1/artifacts/prune); ask again in a moment",
            headers: [.retryAfter: "5"]
        )
    }

    /// The optional header naming the digest an upload must have.
    static let digestHeader = HTTPField.Name("X-Ferry-SHA256")!

    private func upload(_ request: Request, context: FerryRequestContext) async throws -> Response {
        let principal = try context.authenticated()
        var expected: SHA256Digest?
        if let text = request.headers[Self.digestHeader] {
            guard let digest = SHA256Digest(hex: text.lowercased()) else {
                throw APIError.badRequest("invalid_digest", "X-Ferry-SHA256 must be 64 hex characters, got \"\(text.prefix(80))\"")
            }
            expected = digest
        }
        let limit = core.configuration.maximumArtifactBytes
        if let declared = request.headers[.contentLength].flatMap({ Int64($0) }), declared > limit {
            throw APIError.contentTooLarge(limit: limit, what: "the artifact (\(declared) bytes)")
        }
        let stored: ArtifactStore.Stored
        do {
            // An upload may take hours: a token revoked meanwhile must not place the bytes (nor copy them into a shared
            // database), as every other body route checks its token again once the body is in.
            stored = try await core.artifacts.store(
                request.body,
                expected: expected,
                declaredSize: request.headers[.contentLength].flatMap { Int64($0) },
                admit: { try await context.confirm(principal, with: core.authenticator) }
            )
        } catch let error as ArtifactStoreError {
            switch error {
            case .tooLarge(let limit): throw APIError.contentTooLarge(limit: limit, what: "the artifact")
            case .digestMismatch: throw APIError.unprocessable("digest_mismatch", "\(error)")
            case .empty: throw APIError.unprocessable("empty_artifact", "\(error)")
            case .noSpace:
                core.logger.warning("Artifact upload refused: the disk is full", metadata: ["error.message": "\(error)"])
                throw APIError(.insufficientStorage, "insufficient_storage", "\(error)")
            case .beingRemoved(let digest): throw Self.beingRemoved(digest)
            case .io, .diskFull: throw error
            }
        }
        if stored.created {
            core.metrics.artifactsStored.increment()
            core.metrics.artifactBytesStored.increment(by: stored.size)
            core.logger.info(
                "Artifact stored",
                metadata: ["artifact.sha256": "\(stored.digest.hex)", "artifact.size": "\(stored.size)", "ferry.token": "\(principal.name)"]
            )
        }
        let body = JSONValue.object([
            "sha256": .string(stored.digest.hex), "size": .integer(stored.size),
            "url": .string(ArtifactReference.controllerPath(for: stored.digest)),
        ])
        return JSONResponse.make(body, status: stored.created ? .created : .ok)
    }

    private func download(_ request: Request, context: FerryRequestContext, head: Bool) async throws -> Response {
        let principal = try context.authenticated()
        let text = context.parameters.get("sha256") ?? ""
        guard let digest = SHA256Digest(hex: text) else {
            throw APIError.badRequest(
                "invalid_artifact_id",
                "an artifact id is 64 lowercase hex characters (its SHA-256), got \"\(text.prefix(80))\""
            )
        }
        let availability = try await core.artifacts.availability(of: digest)
        let size: Int64
        switch availability {
        case .absent: throw APIError.notFound("unknown_artifact", "no artifact \(digest.hex) is stored here")
        case .checking(let checking): throw Self.beingChecked(digest, size: checking)
        case .local(let local), .shared(let local): size = local
        }
        // An agent token opens only its own door: artifacts of releases of its own services. (Whether a digest is
        // stored at all is no secret: knowing a digest is knowing the content.)
        if principal.role == .agent {
            guard let agentID = principal.agentID, try await core.store.isArtifact(digest.hex, releasedForServicesOf: agentID) else {
                throw APIError.forbidden(
                    "artifact \(digest.hex) is not part of any release of this agent's services; an agent token fetches only those"
                )
            }
        }
        let etag = "\"\(digest.hex)\""
        var headers: HTTPFields = [
            .eTag: etag,
            // Content-addressed: the bytes behind this URL never change. Private because the request was authenticated.
            .cacheControl: "private, max-age=31536000, immutable",
            .acceptRanges: "bytes",
            .contentType: "application/octet-stream",
        ]
        if let ifNoneMatch = request.headers[.ifNoneMatch], IfNoneMatch.header(ifNoneMatch, matches: etag) {
            return Response(status: .notModified, headers: headers)
        }
        var range: ClosedRange<Int64> = 0...(size - 1)
        var status = HTTPResponse.Status.ok
        if let rangeHeader = request.headers[.range] {
            switch ByteRange.parse(rangeHeader, size: size) {
            case .satisfiable(let requested):
                range = requested
                status = .partialContent
                headers[.contentRange] = "bytes \(requested.lowerBound)-\(requested.upperBound)/\(size)"
            case .unsatisfiable:
                throw APIError(
                    .rangeNotSatisfiable,
                    "range_not_satisfiable",
                    "Range \(rangeHeader.prefix(80)) is outside the artifact's \(size) bytes",
                    headers: [.contentRange: "bytes */\(size)"]
                )
            case .ignored:
                break  // malformed or multi-range: RFC 9110 lets a server answer the whole content.
            }
        }
        headers[.contentLength] = String(range.count)
        if head { return Response(status: status, headers: headers, body: ResponseBody()) }
        // Another controller received it: fetched once from the shared database into this one's cache.
        if case .shared = availability, !(try await core.artifacts.ensureLocal(digest)) {
            throw APIError.notFound("unknown_artifact", "no artifact \(digest.hex) is stored here")
        }
        let body = try await FileIO().loadFile(
            path: core.artifacts.path(for: digest),
            range: Int(range.lowerBound)...Int(range.upperBound),
            context: context
        )
        return Response(status: status, headers: headers, body: body)
    }
}
