import Shared

/// Reading the `GET /v1/fleet` document loosely for display (the controller produced it; missing fields show as -).
enum FleetDocument {
    /// `GET /v1/fleet` with every agent: the controller lists agents a page at a time (`limit` at most 1,000). A fleet
    /// on one page is listed as the controller orders it (failures first). A bigger one is read by name (`sort=name`),
    /// each page after the last name read (`after=`) — failures first moves an agent to another page as its reports or
    /// its staleness change, and an offset moves them all when one is enrolled or removed: an agent was skipped or
    /// listed twice, without a word — and put failures first here.
    /// - Parameter query: filters (`service=api`), without `?`, `offset` or `limit`.
    static func fetchAll(_ client: OperatorClient, query: String = "", pageSize page: Int = 1_000) async throws(ClientError) -> JSONValue {
        let separator = query.isEmpty ? "" : "&"
        let first = try await client.getJSON("/v1/fleet?\(query)\(separator)limit=\(page)")
        guard case .object(var fields) = first else { return first }
        guard case .integer(let matching)? = fields["page"]?.object?["matching"], Int(matching) > agents(first).count else { return first }
        var collected: [[String: JSONValue]] = []
        var seen: Set<String> = []
        var after: String?
        while true {
            let resume = after.map { "&after=\(FleetQuery.escape($0))" } ?? ""
            let next = try await client.getJSON("/v1/fleet?\(query)\(separator)sort=name&limit=\(page)\(resume)")
            let more = agents(next)
            for agent in more where seen.insert(text(agent["id"])).inserted { collected.append(agent) }
            // Each page starts after the last name read (not at an offset, which an agent enrolled or removed before
            // it moves): none is skipped, none listed twice.
            guard more.count == page, let last = more.last.map({ text($0["name"]) }), last != after else { break }
            after = last
        }
        // Each agent's key once, not at every comparison.
        let ordered = collected.map { (key: troubleOrder($0), agent: $0) }.sorted { $0.key < $1.key }
        fields["agents"] = .array(ordered.map { JSONValue.object($0.agent) })
        setWholePage(&fields)
        return .object(fields)
    }

    /// Where the controller's failures-first order puts `agent` (`FleetQuery`): a standing identity conflict first,
    /// then failed or rolled back, unhealthy, stale, deploying, the rest; then by name.
    static func troubleOrder(_ agent: [String: JSONValue]) -> TroubleKey {
        var trouble: Int?
        for service in array(agent["services"]).compactMap(\.object) {
            let rank: Int
            switch (text(service["phase"]), text(service["health"])) {
            case ("failed", _), ("rolled-back", _): rank = 0
            case (_, "unhealthy"): rank = 1
            case ("deploying", _): rank = 3
            default: rank = 4
            }
            trouble = min(trouble ?? rank, rank)
        }
        let stale = agent["stale"] == .bool(true)
        let group = trouble.map { $0 <= 1 ? $0 : (stale ? 2 : $0) } ?? (stale ? 2 : 4)
        return TroubleKey(conflict: agent["identityConflict"] == .bool(true) ? 0 : 1, group: group, name: text(agent["name"]))
    }

    struct TroubleKey: Comparable {
        var conflict: Int
        var group: Int
        var name: String

        static func < (a: TroubleKey, b: TroubleKey) -> Bool {
            if a.conflict != b.conflict { return a.conflict < b.conflict }
            if a.group != b.group { return a.group < b.group }
            return a.name.utf8.lexicographicallyPrecedes(b.name.utf8)
        }
    }

    static func agents(_ fleet: JSONValue) -> [[String: JSONValue]] {
        array(fleet.object?["agents"]).compactMap(\.object)
    }

    static func array(_ value: JSONValue?) -> [JSONValue] {
        if case .array(let items)? = value { return items }
        return []
    }

    /// A field as one line of text: a line feed in it (an agent's message or failure reason, which a compromised
    /// agent token can fill with a line made to look like another event) is shown as `\u000a`, so it never starts a
    /// line of the output of its own.
    static func text(_ value: JSONValue?) -> String {
        TerminalText.safe(unescapedText(value), keepingLineBreaks: false)
    }

    /// A byte count field as a table shows it: whole B, KiB or MiB; `-` for anything else.
    static func size(_ value: JSONValue?) -> String {
        guard case .integer(let bytes)? = value else { return "-" }
        if bytes < 1024 { return "\(bytes) B" }
        if bytes < 1 << 20 { return "\(bytes / 1024) KiB" }
        return "\(bytes / (1 << 20)) MiB"
    }

    /// A string field as it was sent (`nil` for anything else), for code that escapes it itself (a log tail's line,
    /// whose colours are dropped first).
    static func rawText(_ value: JSONValue?) -> String? {
        if case .string(let text)? = value { return text }
        return nil
    }

    /// `text` before the line feeds are escaped: numbers and flags as text, `-` for anything else.
    private static func unescapedText(_ value: JSONValue?) -> String {
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

    /// The fleet restricted to agents running `service` and to that service: its summary, rollouts, events and
    /// approvals, and the page's counts those of the agents listed (they counted the whole fleet, while `agents` held
    /// the service's).
    static func filter(_ fleet: JSONValue, service: String?) -> JSONValue {
        guard let service, case .object(var fields) = fleet else { return fleet }
        fields["services"] = .array(array(fields["services"]).filter { text($0.object?["name"]) == service })
        for key in ["summary", "rollouts", "events", "approvals"] where fields[key] != nil {
            fields[key] = .array(array(fields[key]).filter { text($0.object?["service"]) == service })
        }
        fields["agents"] = .array(
            agents(fleet).compactMap { agent -> JSONValue? in
                var agent = agent
                let services = array(agent["services"]).filter { text($0.object?["service"]) == service }
                guard !services.isEmpty else { return nil }
                agent["services"] = .array(services)
                return .object(agent)
            }
        )
        setWholePage(&fields)
        return .object(fields)
    }

    /// The document's page says it lists every agent it holds: from the start, as many returned as match.
    private static func setWholePage(_ fields: inout [String: JSONValue]) {
        guard case .object(var paging)? = fields["page"] else { return }
        let listed = Int64(array(fields["agents"]).count)
        paging["offset"] = .integer(0)
        paging["returned"] = .integer(listed)
        paging["matching"] = .integer(listed)
        fields["page"] = .object(paging)
    }
}
