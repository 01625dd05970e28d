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

    /// `text` with every `${NAME}` that `env` knows replaced by its value.
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

/// A release's health check as this instance runs it.
struct ResolvedHealthCheck: Sendable, Equatable {
    /// The URL to probe, when the release names one.
    var target: HealthProbeTarget?
    var deadlineSeconds: Int64
    var stableSeconds: Int64
}
