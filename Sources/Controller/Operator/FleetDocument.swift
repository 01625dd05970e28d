import Shared

/// Reading the `GET /v1/fleet` document loosely for display (the controller produced it; missing fields show as -).
enum FleetDocument {
    /// `GET /v1/fleet` with every agent: the controller lists agents a page at a time (`limit` at most 1,000), so the
    /// pages are fetched in turn and their agents joined into the first document.
    /// - Parameter query: filters (`service=api`), without `?`, `offset` or `limit`.
    static func fetchAll(_ client: OperatorClient, query: String = "") async throws(ClientError) -> JSONValue {
        let page = 1_000
        let separator = query.isEmpty ? "" : "&"
        var document = try await client.getJSON("/v1/fleet?\(query)\(separator)limit=\(page)")
        guard case .object(var fields) = document else { return document }
        var collected = agents(document).map { JSONValue.object($0) }
        var offset = collected.count
        while case .integer(let matching)? = fields["page"]?.object?["matching"], offset < Int(matching) {
            let next = try await client.getJSON("/v1/fleet?\(query)\(separator)limit=\(page)&offset=\(offset)")
            let more = agents(next)
            guard !more.isEmpty else { break }
            collected += more.map { JSONValue.object($0) }
            offset += more.count
        }
        fields["agents"] = .array(collected)
        if case .object(var paging)? = fields["page"] {
            paging["offset"] = .integer(0)
            paging["returned"] = .integer(Int64(collected.count))
            fields["page"] = .object(paging)
        }
        document = .object(fields)
        return document
    }

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
