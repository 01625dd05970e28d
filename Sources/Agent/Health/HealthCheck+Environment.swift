import Shared

extension HealthCheck {
    /// The check ready for the health gate: `${NAME}` in its URL filled in from release env < apps' env < instance env
    /// file, so one signed release can name a port or token that differs per instance
    /// (`http://127.0.0.1:${PORT}/healthz`). An unknown name is left as written, and the probe then fails.
    ///
    /// The filled-in URL may carry instance secrets: it lives only inside the `HealthProbeTarget`, which shows the
    /// template wherever it is printed.
    func resolved(against release: Release, instanceEnv: [String: String]) -> ResolvedHealthCheck {
        var env = release.env
        for app in release.pm2.apps {
            if case .object(let fields)? = app.options["env"] {
                for (key, value) in fields { if case .string(let text) = value { env[key] = text } }
            }
        }
        for (key, value) in instanceEnv { env[key] = value }
        return resolved(environment: env)
    }

    /// The check with placeholders filled in from `environment` (already merged).
    func resolved(environment: [String: String]) -> ResolvedHealthCheck {
        ResolvedHealthCheck(
            target: http.map { HealthProbeTarget(template: $0, environment: environment) },
            deadlineSeconds: deadlineSeconds,
            stableSeconds: stableSeconds
        )
    }

    /// `text` with every `${NAME}` that `env` knows replaced by its value, encoded for the part of the URL it is in:
    /// the value is what the app reads from the same variable, so a token with `+`, `&`, `#`, `%` or a space is
    /// percent-encoded in the query (`+` read as a space, `&` cutting the token short, `#` ending the URL), in the path
    /// and in a user's name or password; a host or port that would change where the URL points (`/`, `?`, `#`, `@`, a
    /// space) is not filled in at all, and the probe then fails on the URL as written.
    static func expand(_ text: String, env: [String: String]) -> String {
        var out = ""
        var rest = Substring(text)
        var part = URLPart.scheme
        while let first = rest.first {
            if rest.hasPrefix("${"), let close = rest.dropFirst(2).firstIndex(of: "}") {
                let name = String(rest[rest.index(rest.startIndex, offsetBy: 2)..<close])
                out += env[name].flatMap { part.encoded($0, standsForAValue: out.last == "=") } ?? "${\(name)}"
                rest = rest[rest.index(after: close)...]
                continue
            }
            out.append(first)
            rest = rest.dropFirst()
            switch (part, first) {
            case (.scheme, ":") where rest.hasPrefix("//"):
                out += "//"
                rest = rest.dropFirst(2)
                part = URLPart.hasUserinfo(authorityOf: rest) ? .userinfo : .host
            case (.userinfo, "@"): part = .host
            case (.host, "/"): part = .path
            case (.userinfo, "?"), (.host, "?"), (.path, "?"): part = .query
            case (.userinfo, "#"), (.host, "#"), (.path, "#"), (.query, "#"): part = .query
            default: break
            }
        }
        return out
    }
}

/// Where a placeholder of a health URL stands, and how its value is written there.
private enum URLPart {
    case scheme, userinfo, host, path, query

    /// `value` as it may stand here, or `nil` when it cannot (a host or port that would move the URL's authority).
    /// In the query, a placeholder right after a `=` is a value (every byte but the unreserved ones encoded); one
    /// elsewhere stands for query text of the operator's own (`?${HEALTH_QUERY}` with `token=abc&full=1`): only what
    /// cannot stand in a query (a space, `#`, control and non-ASCII bytes) is encoded.
    func encoded(_ value: String, standsForAValue: Bool) -> String? {
        switch self {
        case .scheme:
            return value.unicodeScalars.allSatisfy { $0.isASCII && $0.properties.isAlphabetic } ? value : nil
        case .host:
            let moving: Set<Unicode.Scalar> = ["/", "?", "#", "@", "\\", "%"]
            return value.unicodeScalars.contains { moving.contains($0) || $0.properties.isWhitespace || $0.value < 0x20 } ? nil : value
        case .path:
            return PercentEncoding.encode(value, keeping: PercentEncoding.pathCharacters)
        case .query where !standsForAValue:
            return PercentEncoding.encode(value, keeping: PercentEncoding.pathCharacters + "?%")
        case .userinfo, .query:
            return PercentEncoding.encode(value, keeping: "")
        }
    }

    /// Whether the template's authority, from `rest` to its first `/`, `?` or `#` (placeholders aside), has an `@`.
    static func hasUserinfo(authorityOf rest: Substring) -> Bool {
        var rest = rest
        while let first = rest.first {
            if rest.hasPrefix("${"), let close = rest.dropFirst(2).firstIndex(of: "}") {
                rest = rest[rest.index(after: close)...]
                continue
            }
            if first == "/" || first == "?" || first == "#" { return false }
            if first == "@" { return true }
            rest = rest.dropFirst()
        }
        return false
    }
}

/// A release's health check as this instance runs it.
struct ResolvedHealthCheck: Sendable, Equatable {
    /// The URL to probe, when the release names one.
    var target: HealthProbeTarget?
    var deadlineSeconds: Int64
    var stableSeconds: Int64
}
