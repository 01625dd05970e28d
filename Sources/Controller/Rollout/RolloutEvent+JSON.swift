import Shared

extension RolloutEvent {
    /// One element of `GET /v1/events`.
    var json: JSONValue {
        .object([
            "id": .integer(id), "at": .string(Timestamp.format(at)), "service": .string(service),
            "serial": serial.map { .integer($0) } ?? .null, "kind": .string(kind.rawValue), "message": .string(message),
            "agentId": agentID.map { .string($0) } ?? .null,
        ])
    }
}
