/// Parses durations like `--expires-in` and `token create --expires`: a whole number with `d`, `h` or `m` (`90d`,
/// `12h`, `30m`).
enum ExpiryText {
    /// Longest accepted: ten years.
    static let maximum = Duration.seconds(10 * 366 * 86_400)

    /// - Parameter name: the option named in errors.
    static func parse(_ text: String, name: String = "--expires-in") throws(ConfigurationError) -> Duration {
        let units: [Character: Int64] = ["d": 86_400, "h": 3_600, "m": 60]
        guard let unit = text.last, let factor = units[unit], let number = Int64(text.dropLast()), number > 0 else {
            throw .invalidSetting(name: name, value: text, reason: "expected a whole number with d, h or m, like 90d, 12h or 30m")
        }
        let (seconds, overflow) = number.multipliedReportingOverflow(by: factor)
        guard !overflow, Duration.seconds(seconds) <= maximum else {
            throw .invalidSetting(name: name, value: text, reason: "longer than ten years")
        }
        return .seconds(seconds)
    }
}
