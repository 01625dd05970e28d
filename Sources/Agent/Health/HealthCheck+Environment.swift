import Shared

extension HealthCheck {
    /// The check with `${NAME}` in its URL replaced from `env` (release env < apps' env < instance env file), so one
    /// signed release can name a port that differs per instance (`http://127.0.0.1:${PORT}/healthz`). An unknown
    /// name is left as written, and the probe then fails with the URL it tried.
    func resolved(against release: Release, instanceEnv: [String: String]) -> HealthCheck {
        guard let url = http, url.contains("${") else { return self }
        var env = release.env
        for app in release.pm2.apps {
            if case .object(let fields)? = app.options["env"] {
                for (key, value) in fields { if case .string(let text) = value { env[key] = text } }
            }
        }
        for (key, value) in instanceEnv { env[key] = value }
        var copy = self
        copy.http = Self.expand(url, env: env)
        return copy
    }

    static func expand(_ text: String, env: [String: String]) -> String {
        var out = ""
        var rest = Substring(text)
        while let start = rest.firstRange(of: "${") {
            out += rest[..<start.lowerBound]
            let afterOpen = rest[start.upperBound...]
            guard let close = afterOpen.firstIndex(of: "}") else {
                out += rest[start.lowerBound...]
                return out
            }
            let name = String(afterOpen[..<close])
            out += env[name] ?? "${\(name)}"
            rest = afterOpen[afterOpen.index(after: close)...]
        }
        return out + rest
    }
}
