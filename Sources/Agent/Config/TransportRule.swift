import Shared

#if canImport(Glibc)
import Glibc
#endif

/// Which controller URLs the agent talks to: `https://` always; plain `http://` only to a loopback host
/// (127.0.0.0/8, ::1, localhost) unless the operator allowed it with `--allow-insecure-http` (config key
/// `allowInsecureHttp`, env `FERRY_ALLOW_INSECURE_HTTP`). Over plain HTTP the agent token, the releases and the status
/// reports cross the network readable and changeable by anyone on the path.
enum TransportRule {
    /// Why a controller URL was refused.
    struct Refusal: Error, CustomStringConvertible, Equatable {
        var url: String
        var reason: String
        var description: String { reason }
    }

    /// Throws unless the agent may talk to `url`.
    /// Its reasons show the URL without user info or credentials in its query (`RedactedURL`): they go to logs.
    static func check(controllerURL rawURL: String, allowInsecureHTTP: Bool) throws(Refusal) {
        let url = RedactedURL.redact(rawURL)
        let lower = rawURL.lowercased()
        if lower.hasPrefix("https://") { return }
        guard lower.hasPrefix("http://") else {
            throw Refusal(url: url, reason: "\"\(url)\" must be an https:// URL (or http:// on loopback)")
        }
        guard let host = host(of: rawURL) else { throw Refusal(url: url, reason: "\"\(url)\" has no host") }
        if allowInsecureHTTP || isLoopback(host) { return }
        throw Refusal(
            url: url,
            reason: """
                \(url) is plain HTTP to \(host), which is not a loopback address: the agent token, the releases and the \
                status reports would cross the network unencrypted. Use an https:// URL (with --ca-file for a private \
                CA), or, on a network you trust (a TLS-terminating proxy on the same host, a private link), allow it \
                explicitly: enroll with --allow-insecure-http, or set allowInsecureHttp: true in the config, or \
                FERRY_ALLOW_INSECURE_HTTP=1
                """
        )
    }

    /// The host of an `http(s)://` URL, lowercased, without brackets, port or user info.
    static func host(of url: String) -> String? {
        guard let schemeEnd = url.firstRange(of: "://") else { return nil }
        let rest = url[schemeEnd.upperBound...]
        let authority = rest.prefix { $0 != "/" && $0 != "?" && $0 != "#" }
        let hostAndPort = authority.lastIndex(of: "@").map { authority[authority.index(after: $0)...] } ?? authority
        let host: Substring
        if hostAndPort.hasPrefix("[") {
            guard let close = hostAndPort.firstIndex(of: "]") else { return nil }
            host = hostAndPort[hostAndPort.index(after: hostAndPort.startIndex)..<close]
        } else {
            host = hostAndPort.prefix { $0 != ":" }
        }
        return host.isEmpty ? nil : host.lowercased()
    }

    /// Whether `host` is `localhost`, an IPv4 address in 127.0.0.0/8, `::1`, or an IPv4-mapped loopback address.
    static func isLoopback(_ host: String) -> Bool {
        if host == "localhost" || host == "localhost." { return true }
        var v4 = in_addr()
        if inet_pton(AF_INET, host, &v4) == 1 {
            return UInt32(bigEndian: v4.s_addr) >> 24 == 127
        }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, host, &v6) == 1 else { return false }
        let bytes = withUnsafeBytes(of: v6) { Array($0) }
        if bytes == Array(repeating: 0, count: 15) + [1] { return true }
        // ::ffff:127.x.y.z
        return bytes.prefix(10).allSatisfy { $0 == 0 } && bytes[10] == 0xFF && bytes[11] == 0xFF && bytes[12] == 127
    }
}
