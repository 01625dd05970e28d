/// Why the rollout parameters of a publish (`POST /v1/releases?strategy=...`) were refused.
enum RolloutParameterError: Error, Equatable, CustomStringConvertible {
    /// `strategy` is not one of the known forms.
    case invalidStrategy(text: String, reason: String)
    /// `waveStableSeconds` is not a whole number in range.
    case invalidWaveStable(text: String, maximum: Int)
    /// `maxFailures` is not a whole number in range.
    case invalidMaxFailures(text: String, maximum: Int)
    /// A query parameter publishing does not know (a typo must not silently fall back to a default).
    case unknownParameter(String)
    /// A parameter given twice.
    case repeatedParameter(String)

    /// The query parameter at fault.
    var parameter: String {
        switch self {
        case .invalidStrategy: "strategy"
        case .invalidWaveStable: "waveStableSeconds"
        case .invalidMaxFailures: "maxFailures"
        case .unknownParameter(let name), .repeatedParameter(let name): name
        }
    }

    /// The API error code.
    var code: String {
        switch self {
        case .invalidStrategy: "invalid_strategy"
        case .invalidWaveStable: "invalid_wave_stable_seconds"
        case .invalidMaxFailures: "invalid_max_failures"
        case .unknownParameter: "unknown_parameter"
        case .repeatedParameter: "repeated_parameter"
        }
    }

    var description: String {
        switch self {
        case .invalidStrategy(let text, let reason):
            "strategy \"\(text)\" is invalid: \(reason)"
        case .invalidWaveStable(let text, let maximum):
            "waveStableSeconds must be a whole number of seconds from 0 to \(maximum), got \"\(text)\""
        case .invalidMaxFailures(let text, let maximum):
            "maxFailures must be a whole number from 0 to \(maximum), got \"\(text)\""
        case .unknownParameter(let name):
            "unknown query parameter \"\(name)\"; publishing accepts strategy, waveStableSeconds and maxFailures"
        case .repeatedParameter(let name):
            "query parameter \(name) is given more than once"
        }
    }
}
