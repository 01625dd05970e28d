import Shared

extension TokenRecord {
    /// The token as `GET /v1/tokens` and `token list --json` show it: never the secret or its hash.
    ///
    /// `services` is the enroll scope (`null` for any service and for other roles); `anyService` says which.
    var json: JSONValue {
        var fields: [String: JSONValue] = [
            "id": .string(id), "name": .string(name), "role": .string(role.rawValue),
            "createdAt": .string(Timestamp.format(createdAt)), "uses": .integer(Int64(uses)),
        ]
        switch scope {
        case .anyService?:
            fields["services"] = .null
            fields["anyService"] = .bool(true)
        case .services(let names)?:
            fields["services"] = .array(names.map { .string($0) })
            fields["anyService"] = .bool(false)
        case nil:
            fields["services"] = .null
            fields["anyService"] = .null
        }
        fields["expiresAt"] = expiresAt.map { .string(Timestamp.format($0)) } ?? .null
        fields["maxUses"] = maxUses.map { .integer(Int64($0)) } ?? .null
        fields["lastUsedAt"] = lastUsedAt.map { .string(Timestamp.format($0)) } ?? .null
        fields["revokedAt"] = revokedAt.map { .string(Timestamp.format($0)) } ?? .null
        return .object(fields)
    }
}
