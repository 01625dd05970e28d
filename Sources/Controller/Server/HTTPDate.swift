import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The `Date` header of the answers written before the router (RFC 9110 §6.6.1: an origin server with a clock sends
/// one in every 2xx, 3xx and 4xx answer), in the IMF-fixdate form Hummingbird gives the router's answers:
/// `Thu, 03 Dec 2026 10:44:38 GMT`. Formatted at most once a second and shared: a wake of 10,000 polls formats it once.
enum HTTPDate {
    /// The current second's text.
    static var now: String {
        let second = Int64(time(nil))
        return cache.withLock { cached in
            if cached.second != second { cached = (second, format(epochSeconds: second)) }
            return cached.text
        }
    }

    private static let cache = Mutex<(second: Int64, text: String)>((Int64.min, ""))

    private static let weekdays = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
    private static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    /// `epochSeconds` (UTC) as an IMF-fixdate. A time `gmtime_r` cannot represent gives the epoch's text rather than
    /// a malformed header.
    static func format(epochSeconds: Int64) -> String {
        var parts = tm()
        var seconds = time_t(truncatingIfNeeded: epochSeconds)
        if Int64(seconds) != epochSeconds || gmtime_r(&seconds, &parts) == nil || parts.tm_year + 1900 > 9999 || parts.tm_year + 1900 < 0 {
            seconds = 0
            _ = gmtime_r(&seconds, &parts)
        }
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        let year = String(Int(parts.tm_year) + 1900)
        let paddedYear = String(repeating: "0", count: max(0, 4 - year.count)) + year
        return "\(weekdays[Int(parts.tm_wday)]), \(two(parts.tm_mday)) \(months[Int(parts.tm_mon)]) \(paddedYear) "
            + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) GMT"
    }
}
