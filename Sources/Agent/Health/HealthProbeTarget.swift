import Shared

/// A health URL with its `${NAME}` placeholders filled in: what the probe GETs.
///
/// The filled-in URL can carry instance secrets (`http://127.0.0.1:3000/healthz?token=${HEALTH_TOKEN}`), and the
/// instance env file never leaves the host. So it is a type of its own, apart from the template (`HealthCheck.http`):
/// printed, interpolated, dumped or compared it is the template as `reported` shows it; errors about it are scrubbed
/// back to that; and only `HealthProbe` reads the filled-in text, through `withResolvedURL`.
struct HealthProbeTarget: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    /// The URL as the release wrote it, placeholders included.
    let template: String
    /// The template as reports, logs and errors show it: credentials written in it literally (user info, the value of a
    /// `token=`, `key=`, ... parameter: `RedactedURL`) taken out, `${NAME}` placeholders kept. The template was reported
    /// verbatim: `http://ops:hunter2@127.0.0.1/health?token=abc` reached the fleet view, the dashboard's failure page
    /// and the agent's journal (the client's own redaction of the filled-in URL was undone by `scrub`).
    let reported: String
    private let resolved: String

    init(template: String, environment: [String: String]) {
        self.template = template
        self.reported = RedactedURL.redact(template, keepingValue: Self.isPlaceholder)
        self.resolved = HealthCheck.expand(template, env: environment)
    }

    var description: String { reported }
    var debugDescription: String { reported }
    var customMirror: Mirror { Mirror(self, children: ["template": reported]) }

    /// Whether `value` is one `${NAME}` placeholder and nothing else.
    static func isPlaceholder(_ value: Substring) -> Bool {
        guard value.hasPrefix("${"), value.hasSuffix("}"), value.count > 3 else { return false }
        let name = value.dropFirst(2).dropLast()
        return name.allSatisfy { $0 == "_" || ($0.isASCII && ($0.isLetter || $0.isNumber)) }
    }

    /// Two targets are the same check when their templates are.
    static func == (lhs: HealthProbeTarget, rhs: HealthProbeTarget) -> Bool { lhs.template == rhs.template }

    /// Runs `body` with the filled-in URL. Only the probe calls this.
    func withResolvedURL<R>(_ body: (String) async throws -> R) async rethrows -> R {
        try await body(resolved)
    }

    /// `text` (an error about this URL) with the filled-in URL, in full or as `RedactedURL` shows it, and the template
    /// itself, replaced by `reported`. The longest forms first: one may contain another.
    func scrub(_ text: String) -> String {
        var result = text
        for form in Set([resolved, RedactedURL.redact(resolved), template]).sorted(by: { $0.count > $1.count })
        where !form.isEmpty && form != reported {
            result = result.replacing(form, with: reported)
        }
        return result
    }
}

/// Probes a health URL over HTTP.
enum HealthProbe {
    /// How the agent's probes connect:
    /// - straight to the app: a proxy the agent's environment names (`http_proxy` in `/etc/ferry/agent.env`) would
    ///   get the filled-in URL, with any token in it, and answer for the app;
    /// - a body over 64 KiB (a verbose status page) is cut there, not a failure: the status decides.
    static var clientConfiguration: HTTPClient.Configuration {
        var configuration = HTTPClient.Configuration()
        configuration.connectTimeout = .seconds(2)
        configuration.timeout = .seconds(5)
        configuration.maxResponseBytes = 64 * 1024
        configuration.truncatesResponses = true
        configuration.bypassProxy = true
        return configuration
    }

    /// GETs the target with `client` and answers the HTTP status and the start of the body. Its errors name the
    /// template, never the filled-in URL.
    static func http(client: HTTPClient) -> HealthGate.Probe {
        { target in
            do {
                return try await target.withResolvedURL { url in
                    let response = try await client.send(HTTPClient.Request(method: .get, url: url))
                    // The whole body (at most the client's limit): secrets are masked in it before it is cut.
                    return HealthGate.ProbeAnswer(status: response.status, body: response.body)
                }
            } catch {
                throw HealthProbeError(reason: target.scrub("\(error)"))
            }
        }
    }
}

/// Why a health URL did not answer, in words that name the template only.
struct HealthProbeError: Error, CustomStringConvertible {
    var reason: String
    var description: String { reason }
}
