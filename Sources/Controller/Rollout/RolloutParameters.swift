/// The rollout settings of one publish: the query parameters of `POST /v1/releases`.
struct RolloutParameters: Sendable, Equatable {
    /// Default `all`.
    var strategy: RolloutStrategy = .all
    /// How long every agent of a wave must report the new serial healthy before the next wave. Default 60 s.
    var waveStable: Duration = .seconds(60)
    /// Failed or rolled-back agents tolerated; one more halts the rollout. Default 0.
    var maxFailures: Int = 0

    /// Longest `waveStableSeconds` (one day).
    static let maximumWaveStableSeconds = 86_400
    /// Largest `maxFailures`.
    static let maximumMaxFailures = 100_000

    /// The names publishing accepts.
    static let parameterNames: Set<String> = ["strategy", "waveStableSeconds", "maxFailures"]

    init(strategy: RolloutStrategy = .all, waveStable: Duration = .seconds(60), maxFailures: Int = 0) {
        self.strategy = strategy
        self.waveStable = waveStable
        self.maxFailures = maxFailures
    }

    /// Reads `strategy`, `waveStableSeconds` and `maxFailures` from query parameters (name, value pairs in order).
    /// Missing ones keep their defaults; unknown or repeated names are refused.
    /// - Throws: `RolloutParameterError` naming the parameter.
    init(query: [(name: String, value: String)]) throws(RolloutParameterError) {
        var seen: Set<String> = []
        for (name, _) in query {
            guard Self.parameterNames.contains(name) else { throw .unknownParameter(String(name.prefix(80))) }
            guard seen.insert(name).inserted else { throw .repeatedParameter(name) }
        }
        self.init()
        for (name, value) in query {
            let shown = String(value.prefix(40))
            switch name {
            case "strategy":
                strategy = try RolloutStrategy.parse(value)
            case "waveStableSeconds":
                guard let seconds = Self.wholeNumber(value, maximum: Self.maximumWaveStableSeconds) else {
                    throw .invalidWaveStable(text: shown, maximum: Self.maximumWaveStableSeconds)
                }
                waveStable = .seconds(seconds)
            default:
                guard let count = Self.wholeNumber(value, maximum: Self.maximumMaxFailures) else {
                    throw .invalidMaxFailures(text: shown, maximum: Self.maximumMaxFailures)
                }
                maxFailures = count
            }
        }
    }

    private static func wholeNumber(_ text: String, maximum: Int) -> Int? {
        guard !text.isEmpty, text.utf8.count <= 9, text.utf8.allSatisfy({ (0x30...0x39).contains($0) }), let value = Int(text),
            value <= maximum
        else { return nil }
        return value
    }
}
