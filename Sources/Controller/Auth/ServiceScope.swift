/// Which services an enrollment token may enroll agents for.
///
/// `token create --role enroll` needs either `--service NAME` (repeatable) or an explicit `--any-service`: a token
/// that can enroll for every service is a choice, never a default.
enum ServiceScope: Sendable, Equatable {
    /// Every service (`--any-service`; also enrollment tokens created before scopes existed).
    case anyService
    /// Only these services (sorted, distinct, at least one).
    case services([String])

    /// A scope of `names` (sorted and made distinct), or `nil` when `names` is empty.
    static func only(_ names: [String]) -> ServiceScope? {
        let distinct = Array(Set(names)).sorted()
        return distinct.isEmpty ? nil : .services(distinct)
    }

    /// The services of `requested` this scope does not allow, in the order given.
    func outside(_ requested: [String]) -> [String] {
        switch self {
        case .anyService: []
        case .services(let allowed): requested.filter { !allowed.contains($0) }
        }
    }

    /// `any service` or `api, worker`: for messages and the token table.
    var text: String {
        switch self {
        case .anyService: "any service"
        case .services(let names): names.joined(separator: ", ")
        }
    }
}
