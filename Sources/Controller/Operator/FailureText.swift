import Shared

/// A release failure (`{serial, reason, kind, diagnosis}` as the controller serves it) as terminal lines: the
/// reason, the gate's verdict, the failing instances with their exit codes and signals, and the log tails.
/// Read loosely: a missing field shows as `-`, never as an error.
enum FailureText {
    /// The lines for `failure`, each starting with `indent`; at most `logLines` lines of each log tail (the last ones).
    static func lines(_ failure: JSONValue, indent: String = "  ", logLines: Int = FailureDiagnosis.maximumLines) -> [String] {
        let fields = failure.object ?? [:]
        var lines = ["\(indent)serial \(text(fields["serial"])) \(text(fields["kind"])): \(text(fields["reason"]))"]
        guard let diagnosis = fields["diagnosis"]?.object else { return lines }
        var verdict = "\(indent)  \(text(diagnosis["stage"])) failed: \(text(diagnosis["cause"]))"
        if let deadline = diagnosis["deadlineSeconds"], deadline != .null { verdict += " after \(text(deadline)) s" }
        verdict += " (seen \(text(diagnosis["at"])))"
        lines.append(verdict)
        if let health = diagnosis["health"]?.object {
            var probe = "\(indent)  health \(text(health["url"]))"
            if let status = health["status"], status != .null { probe += " answered HTTP \(text(status))" }
            if let error = health["error"], error != .null { probe += " did not answer: \(text(error))" }
            if let body = health["body"], body != .null { probe += ": \(text(body))" }
            lines.append(probe)
        }
        for case .object(let instance) in FleetDocument.array(diagnosis["instances"]) {
            var line = "\(indent)  \(text(instance["app"])) pm_id \(text(instance["pmId"])) \(text(instance["status"]))"
            line += ", \(text(instance["restarts"])) restarts"
            if let code = instance["exitCode"], code != .null { line += ", exit code \(text(code))" }
            if let signal = instance["signal"], signal != .null { line += ", signal \(text(signal))" }
            lines.append(line)
        }
        for case .object(let tail) in FleetDocument.array(diagnosis["logs"]) {
            let ids = FleetDocument.array(tail["pmIds"]).map { text($0) }.joined(separator: ",")
            let all = FleetDocument.array(tail["lines"]).map { FleetDocument.rawText($0) ?? "-" }
            let shown = all.suffix(max(0, logLines))
            let more = tail["truncated"] == .bool(true) || shown.count < all.count
            lines.append(
                "\(indent)  \(text(tail["stream"])) of \(text(tail["app"])) (pm_id \(ids)), last \(shown.count) lines\(more ? " (more in the log on the instance)" : ""):"
            )
            // An app's colours are dropped; any other control sequence in its log is escaped, line by line.
            lines += shown.map { "\(indent)  | \(TerminalText.safe(TerminalText.droppingColors($0), keepingLineBreaks: false))" }
        }
        return lines
    }

    static func text(_ value: JSONValue?) -> String { FleetDocument.text(value) }
}
