import Foundation
import Hummingbird
import Shared

/// The trust root chain: `POST /v1/roots` (operator: publish the next root, signed on operators' machines),
/// `GET /v1/roots` (operator, viewer, agent: the chain as summaries) and `GET /v1/roots/{version}` (the same readers: one
/// root's envelope, what an agent that is behind fetches and verifies step by step).
///
/// A root is stored only when it follows TUF's rules from the controller's newest accepted root (`ControllerTrust`); the
/// controller never signs one. Publishing wakes every parked long-poll: each agent's desired state names the newest
/// version (`rootVersion`).
struct RootRoutes: Sendable {
    let core: ControllerCore

    func register(operators: RouterGroup<FerryRequestContext>, readers: RouterGroup<FerryRequestContext>) {
        operators.post("/v1/roots") { request, context in try await publish(request, context: context) }
        readers.get("/v1/roots") { _, _ in try await list() }
        readers.get("/v1/roots/:version") { _, context in try await root(context: context) }
    }

    private func publish(_ request: Request, context: FerryRequestContext) async throws -> Response {
        let principal = try context.authenticated()
        let bytes = try await core.body(
            of: request,
            context: context,
            limit: core.configuration.maximumBodyBytes,
            what: "the root envelope"
        )
        let envelope: Envelope
        do {
            envelope = try Envelope.decode(bytes)
        } catch {
            throw APIError.document(error, what: "root envelope")
        }
        let chain = try await core.store.trustRoots()
        let admission: ControllerTrust.Admission
        do {
            admission = try core.trust.admit(envelope, chain: chain, now: core.now())
        } catch {
            throw Self.apiError(error)
        }
        switch admission {
        case .alreadyStored(let version):
            guard let stored = chain.first(where: { $0.version == version }) else {
                throw APIError(.internalServerError, "internal_error", "root version \(version) vanished")
            }
            return JSONResponse.make(Self.summary(stored, now: core.now()))
        case .store(let accepted):
            let record = TrustRootRecord(
                version: accepted.version,
                envelope: envelope,
                sha256: SHA256.hash(envelope.payload).hex,
                expiresAt: accepted.root.expiresAt,
                publishedBy: principal.name,
                publishedAt: core.now()
            )
            do {
                try await core.store.insertTrustRoot(record)
            } catch let error as StoreError {
                guard case .staleRootVersion = error else { throw error }
                throw APIError(.conflict, "root_not_newer", "\(error)")
            }
            core.desiredStates.rootPublished()
            core.logger.info(
                "Trust root published",
                metadata: [
                    "ferry.root.version": "\(accepted.version)", "ferry.root.sha256": "\(record.sha256)",
                    "ferry.published_by": "\(principal.name)",
                    "ferry.root.release_keys": "\(RolloutStateMachine.keyList(accepted.root.releaseRole.keyIDs))",
                ]
            )
            return JSONResponse.make(Self.summary(record, now: core.now()), status: .created)
        }
    }

    private func list() async throws -> Response {
        let chain = try await core.store.trustRoots()
        let now = core.now()
        var body: [String: JSONValue] = [
            "pinned": Self.rootJSON(core.trust.pinned.root, now: now).merging(["fromTrustedKeys": .bool(core.trust.pinned.isFromTrustedKeys)]),
            "roots": .array(chain.map { Self.summary($0, now: now) }),
        ]
        do {
            let current = try core.trust.follow(chain)
            body["current"] = Self.rootJSON(current.root, now: now)
        } catch {
            body["current"] = .null
            body["problem"] = .string("\(error)")
        }
        return JSONResponse.make(.object(body))
    }

    private func root(context: FerryRequestContext) async throws -> Response {
        let text = context.parameters.get("version") ?? ""
        guard let version = Int64(text), (1...Root.maximumVersion).contains(version) else {
            throw APIError.badRequest("invalid_version", "\"\(text.prefix(40))\" is not a root version (an integer from 1 to 2^53)")
        }
        // The chain is a few rows: read it whole rather than add a lookup to every store.
        guard let record = try await core.store.trustRoots().first(where: { $0.version == version }) else {
            throw APIError.notFound("unknown_root", "this controller stores no trust root version \(version)")
        }
        return JSONResponse.make(record.envelope.json)
    }

    /// A stored root as listings show it.
    static func summary(_ record: TrustRootRecord, now: Date) -> JSONValue {
        var fields: [String: JSONValue] = [
            "sha256": .string(record.sha256), "publishedBy": .string(record.publishedBy),
            "publishedAt": .string(Timestamp.format(record.publishedAt)),
            "signatures": .array(record.envelope.signatures.map { .string($0.keyid) }),
        ]
        if let root = try? TrustedRoot.decode(record.envelope), case .object(let described) = rootJSON(root, now: now) {
            fields.merge(described) { _, new in new }
        } else {
            fields["version"] = .integer(record.version)
        }
        return .object(fields)
    }

    /// A root's version, expiry and roles.
    static func rootJSON(_ root: Root, now: Date) -> JSONValue {
        func role(_ role: Root.Role) -> JSONValue {
            .object(["keyIds": .array(role.keyIDs.map { .string($0) }), "threshold": .integer(Int64(role.threshold))])
        }
        return .object([
            "version": .integer(root.version), "expiresAt": .string(Timestamp.format(root.expiresAt)),
            "expired": .bool(root.isExpired(at: now)),
            "roles": .object(["root": role(root.rootRole), "release": role(root.releaseRole)]),
        ])
    }

    /// A refused root as an API error: a rollback or a version already taken is a conflict, the rest refused content.
    static func apiError(_ error: ControllerTrustError) -> APIError {
        switch error {
        case .refused(let rootError):
            switch rootError {
            case .notNewer: return APIError(.conflict, rootError.code, "\(error)")
            default: return .unprocessable(rootError.code, "\(error)")
            }
        case .expired: return .unprocessable("root_expired", "\(error)")
        case .doesNotMatchPin: return .unprocessable("root_does_not_match_pin", "\(error)")
        case .needsEveryFlagKey: return .unprocessable("root_needs_every_flag_key", "\(error)")
        case .chainBroken: return APIError(.internalServerError, "trust_chain_broken", "\(error)")
        }
    }
}

extension JSONValue {
    /// An object with `other`'s fields added (replacing same-named ones); any other value unchanged.
    fileprivate func merging(_ other: [String: JSONValue]) -> JSONValue {
        guard case .object(var fields) = self else { return self }
        fields.merge(other) { _, new in new }
        return .object(fields)
    }
}
