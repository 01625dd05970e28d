/// How a release reaches the agents of its service, chosen at publish time (`?strategy=`).
///
/// Waves are cumulative: wave k reaches the first `waveSizes(agentCount:)[k]` agents of the rollout's agent order.
enum RolloutStrategy: Sendable, Equatable, CustomStringConvertible {
    /// Every agent at once (the default; no health gate between agents).
    case all
    /// One more agent per wave: 1, 2, ..., n.
    case oneAtATime
    /// Cumulative percentages of the service's agents, strictly increasing in 1...100 and ending at 100.
    case waves([Int])
    /// `count` agents first, then the rest.
    case canary(Int)

    /// Largest `canary:N`.
    static let maximumCanary = 100_000

    /// The canonical text: `all`, `one-at-a-time`, `waves:10,50,100`, `canary:2` (what `parse` reads back).
    var description: String {
        switch self {
        case .all: "all"
        case .oneAtATime: "one-at-a-time"
        case .waves(let percentages): "waves:" + percentages.map(String.init).joined(separator: ",")
        case .canary(let count): "canary:\(count)"
        }
    }

    /// Parses the text of `?strategy=` (and of the stored `strategy` column).
    /// - Throws: `RolloutParameterError.invalidStrategy` naming what is wrong.
    static func parse(_ text: String) throws(RolloutParameterError) -> RolloutStrategy {
        let shown = String(text.prefix(80))
        func invalid(_ reason: String) -> RolloutParameterError { .invalidStrategy(text: shown, reason: reason) }
        guard text.utf8.count <= 400 else { throw invalid("it is longer than 400 characters") }
        switch text {
        case "all": return .all
        case "one-at-a-time": return .oneAtATime
        default: break
        }
        if let rest = text.strippingPrefix("canary:") {
            guard let count = decimal(rest), (1...maximumCanary).contains(count) else {
                throw invalid("canary:N needs a whole number of agents from 1 to \(maximumCanary)")
            }
            return .canary(count)
        }
        if let rest = text.strippingPrefix("waves:") {
            let parts = rest.split(separator: ",", omittingEmptySubsequences: false)
            var percentages: [Int] = []
            for part in parts {
                guard let value = decimal(part) else {
                    throw invalid("waves:P1,P2,...,100 needs whole percentages separated by commas; \"\(part.prefix(20))\" is not one")
                }
                guard (1...100).contains(value) else { throw invalid("percentage \(value) is outside 1...100") }
                if let last = percentages.last, value <= last {
                    throw invalid("percentages must strictly increase (\(value) follows \(last))")
                }
                percentages.append(value)
            }
            guard percentages.last == 100 else { throw invalid("the last wave must be 100 (every agent)") }
            return .waves(percentages)
        }
        throw invalid("expected all, one-at-a-time, waves:P1,P2,...,100 or canary:N")
    }

    /// Cumulative wave sizes over `agentCount` agents: strictly increasing, the last one `agentCount`.
    ///
    /// Wave k of `waves:` reaches max(1, floor(p_k * n / 100)) agents; a wave that would reach no agent beyond the
    /// previous one (small fleets: `waves:10,20,100` over 3 agents) is dropped rather than waited on for nothing.
    /// No agents: no waves (the rollout completes at once).
    func waveSizes(agentCount n: Int) -> [Int] {
        guard n > 0 else { return [] }
        let raw: [Int]
        switch self {
        case .all: raw = [n]
        case .oneAtATime: raw = Array(1...n)
        case .waves(let percentages): raw = percentages.map { max(1, $0 * n / 100) } + [n]
        case .canary(let count): raw = [min(count, n), n]
        }
        var sizes: [Int] = []
        for size in raw.map({ min($0, n) }) where size > (sizes.last ?? 0) { sizes.append(size) }
        return sizes
    }

    /// A non-negative decimal of at most 6 ASCII digits (no sign, no spaces: `Int("+5")` would accept a sign).
    private static func decimal(_ text: Substring) -> Int? {
        guard !text.isEmpty, text.utf8.count <= 6, text.utf8.allSatisfy({ (0x30...0x39).contains($0) }) else { return nil }
        return Int(text)
    }
}

extension String {
    fileprivate func strippingPrefix(_ prefix: String) -> Substring? {
        hasPrefix(prefix) ? self[index(startIndex, offsetBy: prefix.count)...] : nil
    }
}
