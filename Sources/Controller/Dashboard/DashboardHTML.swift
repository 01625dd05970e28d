import Mustache
import Shared

/// How the dashboard's templates escape every `{{variable}}`: `<`, `>`, `&`, `"` and `'` as HTML entities (as
/// Mustache's own HTML escaping does), after `TerminalText.safe`. Hostnames, messages, failure reasons and log lines
/// come from agents and apps; in a browser a right-to-left override in a hostname shows another name, so control and
/// bidirectional formatting characters are shown as `\uXXXX` here too, as the command line shows them.
struct DashboardHTML: MustacheContentType {
    static let name = "FERRY_HTML"

    /// The pragma that selects this escaping, for the start of each template; registers it first (once).
    static let pragma: String = {
        MustacheContentTypes.register(DashboardHTML(), named: name)
        return "{{% CONTENT_TYPE: \(name)}}"
    }()

    func escapeText(_ text: String) -> String {
        let safe = TerminalText.safe(text)
        guard
            safe.utf8.contains(where: {
                $0 == UInt8(ascii: "<") || $0 == UInt8(ascii: ">") || $0 == UInt8(ascii: "&") || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "'")
            })
        else {
            return safe
        }
        var escaped = ""
        escaped.reserveCapacity(safe.utf8.count + 16)
        for scalar in safe.unicodeScalars {
            switch scalar {
            case "<": escaped += "&lt;"
            case ">": escaped += "&gt;"
            case "&": escaped += "&amp;"
            case "\"": escaped += "&quot;"
            case "'": escaped += "&#39;"
            default: escaped.unicodeScalars.append(scalar)
            }
        }
        return escaped
    }
}
