import Shared

/// Reading the `GET /v1/fleet` document loosely for display (the controller produced it; missing fields show as -).
enum FleetDocument {
    static func agents(_ fleet: JSONValue) -> [[String: JSONValue]] {
        array(fleet.object?["agents"]).compactMap(\.object)
    }

    static func array(_ value: JSONValue?) -> [JSONValue] {
        if case .array(let items)? = value { return items }
        return []
    }

    static func text(_ value: JSONValue?) -> String {
        switch value {
        case .string(let text)?: text
        case .integer(let number)?: String(number)
        case .bool(let flag)?: flag ? "yes" : "no"
        default: "-"
        }
    }

    /// At most `limit` characters of `text`, with `…` when cut.
    static func shortened(_ text: String, to limit: Int) -> String {
        text.count <= limit ? text : String(text.prefix(max(0, limit - 1))) + "…"
    }

    static func lastSeen(_ agent: [String: JSONValue]) -> String {
        let seen = text(agent["lastSeen"])
        let shown = seen == "-" ? "never" : seen
        return agent["stale"] == .bool(true) ? "\(shown) (stale)" : shown
    }

    /// The fleet restricted to agents running `service` and to that service.
    static func filter(_ fleet: JSONValue, service: String?) -> JSONValue {
        guard let service, case .object(var fields) = fleet else { return fleet }
        fields["services"] = .array(array(fields["services"]).filter { text($0.object?["name"]) == service })
        fields["agents"] = .array(
            agents(fleet).compactMap { agent -> JSONValue? in
                var agent = agent
                let services = array(agent["services"]).filter { text($0.object?["service"]) == service }
                guard !services.isEmpty else { return nil }
                agent["services"] = .array(services)
                return .object(agent)
            }
        )
        return .object(fields)
    }
}
