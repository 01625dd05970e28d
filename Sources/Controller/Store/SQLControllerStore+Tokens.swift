import Foundation
import SQLKit
import Shared

/// Operator, enroll and viewer tokens: created, listed, revoked, looked up by hash, their use recorded.
extension SQLControllerStore {
    static let tokenColumns = "id, name, role, services, created_at, expires_at, max_uses, use_count, last_used_at, revoked_at"

    func createToken(_ token: TokenRecord, hash: String) async throws {
        switch token.role {
        case .agent:
            throw StoreError.invalidToken("agent tokens are minted by enrolment only")
        case .enroll:
            guard let scope = token.scope else { throw StoreError.invalidToken("an enroll token needs a service scope") }
            if case .services(let names) = scope, names.isEmpty { throw StoreError.invalidToken("an enroll token's scope names no service") }
        case .operator, .viewer:
            guard token.scope == nil, token.maxUses == nil else {
                throw StoreError.invalidToken("only enroll tokens have a service scope and a use limit")
            }
        }
        if let maxUses = token.maxUses, maxUses < 1 { throw StoreError.invalidToken("the use limit must be at least 1") }
        guard Token.isWellFormedID(token.id) else { throw StoreError.invalidToken("\(token.id) is not a token id (tok_ and 16 hex)") }
        let services = Self.servicesText(token.scope)
        try await transaction { db in
            try await db.raw(
                """
                INSERT INTO tokens (id, hash, name, role, services, created_at, expires_at, max_uses)
                VALUES (\(bind: token.id), \(bind: hash), \(bind: token.name), \(bind: token.role.rawValue), \(bind: services),
                        \(bind: StoredTime.milliseconds(token.createdAt)), \(bind: token.expiresAt.map(StoredTime.milliseconds)),
                        \(bind: token.maxUses))
                """
            ).run()
        }
    }

    func tokens() async throws -> [TokenRecord] {
        try await readDB.raw("SELECT \(unsafeRaw: Self.tokenColumns) FROM tokens ORDER BY created_at, id").all().map(Self.token(from:))
    }

    func revokeToken(id: String, at date: Date) async throws -> TokenRecord? {
        try await transaction { db in
            try await db.raw(
                """
                UPDATE tokens SET revoked_at = COALESCE(revoked_at, \(bind: StoredTime.milliseconds(date)))
                WHERE id = \(bind: id) RETURNING \(unsafeRaw: Self.tokenColumns)
                """
            ).first().map(Self.token(from:))
        }
    }

    func credential(forTokenHash hash: String) async throws -> StoredCredential? {
        if let row = try await readDB.raw("SELECT \(unsafeRaw: Self.tokenColumns) FROM tokens WHERE hash = \(bind: hash)").first() {
            let token = try Self.token(from: row)
            return StoredCredential(
                principal: Principal(role: token.role, name: token.name, tokenID: token.id, scope: token.scope, expiresAt: token.expiresAt),
                revokedAt: token.revokedAt
            )
        }
        if let row = try await readDB.raw("SELECT id, name FROM agents WHERE token_hash = \(bind: hash)").first() {
            let principal = Principal(
                role: .agent,
                name: try row.decode(column: "name", as: String.self),
                agentID: try row.decode(column: "id", as: String.self)
            )
            return StoredCredential(principal: principal, revokedAt: nil)
        }
        return nil
    }

    func recordTokenUse(_ lastUsed: [String: Date]) async throws {
        guard !lastUsed.isEmpty else { return }
        try await transaction { db in
            for (id, date) in lastUsed.sorted(by: { $0.key < $1.key }) {
                let time = StoredTime.milliseconds(date)
                try await db.raw(
                    """
                    UPDATE tokens SET last_used_at = \(bind: time)
                    WHERE id = \(bind: id) AND (last_used_at IS NULL OR last_used_at < \(bind: time))
                    """
                ).run()
            }
        }
    }

    private static func servicesText(_ scope: ServiceScope?) -> String? {
        guard case .services(let names) = scope else { return nil }
        return String(decoding: JSONValue.array(names.map { .string($0) }).encoded(), as: UTF8.self)
    }

    private static func token(from row: any SQLRow) throws -> TokenRecord {
        let roleText = try row.decode(column: "role", as: String.self)
        guard let role = TokenRole(rawValue: roleText), role != .agent else {
            throw StoreError.corruptRow(table: "tokens", reason: "unknown role \(roleText)")
        }
        var scope: ServiceScope?
        if role == .enroll {
            if let text = try row.decode(column: "services", as: String?.self) {
                guard case .array(let items)? = try? JSONValue.parse(Array(text.utf8)) else {
                    throw StoreError.corruptRow(table: "tokens", reason: "services is not a JSON array")
                }
                let names = items.compactMap { item -> String? in
                    if case .string(let name) = item { return name }
                    return nil
                }
                guard let only = ServiceScope.only(names) else {
                    throw StoreError.corruptRow(table: "tokens", reason: "an enroll token's scope names no service")
                }
                scope = only
            } else {
                scope = .anyService
            }
        }
        return TokenRecord(
            id: try row.decode(column: "id", as: String.self),
            name: try row.decode(column: "name", as: String.self),
            role: role,
            scope: scope,
            createdAt: StoredTime.date(try row.decode(column: "created_at", as: Int64.self)),
            expiresAt: try row.decode(column: "expires_at", as: Int64?.self).map(StoredTime.date),
            maxUses: try row.decode(column: "max_uses", as: Int?.self),
            uses: try row.decode(column: "use_count", as: Int.self),
            lastUsedAt: try row.decode(column: "last_used_at", as: Int64?.self).map(StoredTime.date),
            revokedAt: try row.decode(column: "revoked_at", as: Int64?.self).map(StoredTime.date)
        )
    }
}
