import Shared

/// Which agents `GET /v1/fleet` and the dashboard list, and which page of them: `?service=&version=&phase=&health=
/// &stale=&q=&sort=&after=&offset=&limit=`. Agents are listed failures first (failed or rolled back, then unhealthy, then stale,
/// then deploying), then by name; with `sort=name`, by name alone: an order that does not change while the pages are
/// read, for a client that reads them all (the failures-first order moves an agent between pages as its reports or its
/// staleness change, and it was skipped or listed twice).
struct FleetQuery: Sendable, Equatable {
    /// Only agents running this service (and the status filters apply to it).
    var service: String?
    /// Only agents reporting this version, or (empty: `version=`) none. No release has an empty version; a status may
    /// carry a serial without a version or the other way round, and the summary counts it on a row of its own.
    var version: String?
    /// Only agents in this phase (`running`, `deploying`, `failed`, `rolled-back`, `waiting`), or `unreported`: no
    /// status yet, or `failing`: failed or rolled back (what the fleet summary counts as failing).
    var phase: String?
    /// Only agents reporting this serial (`serial=N`), or no serial (`serial=none`: no release installed). A version
    /// published again under a new serial (a roll back to it) is a row of its own in the summary, and its counts are
    /// listed with the serial.
    var serial: SerialFilter?
    /// Only agents reporting this health.
    var health: HealthState?
    /// Only stale agents (`true`) or only fresh ones (`false`).
    var stale: Bool?
    /// Only agents whose name or hostname contains this (case-insensitive).
    var text: String?
    /// List by name alone (`sort=name`), not failures first.
    var byName = false
    /// With `sort=name`: only agents whose name comes after this one (`after=`), so a client reading every page
    /// resumes where it stopped, whatever was enrolled or removed before it.
    var after: String?
    var offset = 0
    var limit = FleetQuery.defaultLimit

    /// Agents per page unless `limit` says otherwise.
    static let defaultLimit = 200
    /// Most agents one page lists.
    static let maximumLimit = 1_000
    /// What `phase` accepts besides the deploy phases.
    static let unreported = "unreported"
    static let failing = "failing"

    /// `serial=`: a serial, or none reported.
    enum SerialFilter: Sendable, Equatable {
        case serial(Int64)
        case none

        var text: String {
            switch self {
            case .serial(let serial): String(serial)
            case .none: "none"
            }
        }
    }

    init() {}

    /// Reads the query parameters (unknown ones are ignored, as everywhere in the API).
    /// - Throws: `FleetQueryError` naming the parameter and what it accepts.
    init(parameters: [(name: String, value: String)]) throws(FleetQueryError) {
        for (name, value) in parameters {
            switch name {
            case "service":
                guard (1...128).contains(value.utf8.count) else { throw .invalid(name, value, "a service name (1 to 128 characters)") }
                service = value
            case "version":
                guard value.utf8.count <= 128 else { throw .invalid(name, value, "a version (up to 128 characters; empty: none reported)") }
                version = value
            case "phase":
                guard value == Self.unreported || value == Self.failing || DeployPhase(rawValue: value) != nil else {
                    throw .invalid(name, value, (DeployPhase.allCases.map(\.rawValue) + [Self.unreported, Self.failing]).joined(separator: ", "))
                }
                phase = value
            case "serial":
                if value == "none" {
                    serial = SerialFilter.none
                } else {
                    guard value.utf8.count <= 19, value.utf8.allSatisfy({ (0x30...0x39).contains($0) }), let number = Int64(value) else {
                        throw .invalid(name, value, "a serial (a whole number) or none")
                    }
                    serial = .serial(number)
                }
            case "health":
                guard let health = HealthState(rawValue: value) else {
                    throw .invalid(name, value, HealthState.allCases.map(\.rawValue).joined(separator: ", "))
                }
                self.health = health
            case "stale":
                guard let stale = Bool(value) else { throw .invalid(name, value, "true or false") }
                self.stale = stale
            case "q":
                guard value.utf8.count <= 128 else { throw .invalid(name, value, "at most 128 characters") }
                text = value.isEmpty ? nil : value
            case "sort":
                guard value == "name" || value == "trouble" else { throw .invalid(name, value, "name or trouble") }
                byName = value == "name"
            case "after":
                guard (1...128).contains(value.utf8.count) else { throw .invalid(name, value, "an agent name (1 to 128 characters)") }
                after = value
            case "offset":
                guard let offset = Int(value), (0...10_000_000).contains(offset) else { throw .invalid(name, value, "a whole number from 0") }
                self.offset = offset
            case "limit":
                guard let limit = Int(value), (1...Self.maximumLimit).contains(limit) else {
                    throw .invalid(name, value, "a whole number from 1 to \(Self.maximumLimit)")
                }
                self.limit = limit
            default:
                continue
            }
        }
        if after != nil, !byName { throw .invalid("after", after ?? "", "a name, with sort=name") }
    }

    /// Whether any filter is set (paging aside).
    var isFiltered: Bool {
        service != nil || version != nil || serial != nil || phase != nil || health != nil || stale != nil || text != nil
    }

    /// The query string of this query at another offset (for paging links), without the `?`.
    func queryString(offset: Int) -> String {
        var items: [(String, String)] = []
        if let service { items.append(("service", service)) }
        if let version { items.append(("version", version)) }
        if let serial { items.append(("serial", serial.text)) }
        if let phase { items.append(("phase", phase)) }
        if let health { items.append(("health", health.rawValue)) }
        if let stale { items.append(("stale", String(stale))) }
        if let text { items.append(("q", text)) }
        if byName { items.append(("sort", "name")) }
        if let after { items.append(("after", after)) }
        if offset > 0 { items.append(("offset", String(offset))) }
        if limit != Self.defaultLimit { items.append(("limit", String(limit))) }
        return items.map { "\($0.0)=\(Self.escape($0.1))" }.joined(separator: "&")
    }

    /// Percent-encodes a query value (everything but unreserved characters).
    static func escape(_ value: String) -> String { PercentEncoding.encode(value) }
}

/// A fleet query parameter that cannot be used.
enum FleetQueryError: Error, CustomStringConvertible, Equatable {
    case invalid(String, String, String)

    var description: String {
        switch self {
        case .invalid(let name, let value, let accepted):
            "query parameter \(name)=\"\(value.prefix(80))\" is not valid: it takes \(accepted)"
        }
    }
}

/// One group of `FleetCounts`: agents of one service with the same reported version, serial, phase and health, and
/// whether they are stale.
struct FleetCountRow: Sendable, Equatable {
    var service: String
    /// `nil` when the agent has not reported the service (and then `phase` is `unreported`).
    var version: String?
    var serial: Int64?
    var phase: String
    var health: String?
    var stale: Bool
    var count: Int
}

/// A page of agents and how many match the query in all.
struct AgentPage: Sendable {
    var total: Int
    var agents: [AgentRecord]
}

/// An agent's id and name (`ControllerStore.agentNames(service:)`).
struct AgentName: Sendable, Equatable {
    var id: String
    var name: String
}

/// How many agents are enrolled, and how many of them are stale (`ControllerStore.agentTotals`).
struct AgentTotals: Sendable, Equatable {
    var enrolled: Int
    var stale: Int
}
