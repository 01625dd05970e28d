import Shared

/// What `ferry-controller rollout wait` concludes from one look at a rollout (`GET /v1/rollouts/{service}/{serial}`).
///
/// Pure, so the rule is tested on its own:
/// - `completed`: done — except for strategy `all`, whose rollout is complete the moment it is published: it is done
///   once every agent of the rollout runs the serial healthy or failed it, with no more failures than `maxFailures`;
/// - `halted`, `aborted`: failed, naming the failed agents and their reasons;
/// - `superseded`: failed (a newer publish replaced it before it completed); so is an `all` rollout not yet on every
///   agent once an agent reports a newer serial (`counts.newer`: such a rollout stays `completed` in the store);
/// - more failed agents than `maxFailures` in any state: failed (the controller halts a staged rollout on its next
///   evaluation anyway; an `all` rollout is never halted);
/// - anything else (`rolling`, `paused`, an `all` rollout still installing): keep waiting.
enum RolloutWaitVerdict: Equatable, Sendable {
    case waiting(String)
    case completed(String)
    case failed(String)

    /// A failed agent of the rollout, as the rollout document lists it.
    struct Failure: Equatable, Sendable {
        var agent: String
        var kind: String
        var reason: String
        /// The agent's failure of the serial with its diagnosis (`{serial, reason, kind, diagnosis}`), when it sent one.
        var failure: JSONValue?
    }

    static func decide(_ rollout: JSONValue) -> RolloutWaitVerdict {
        let fields = rollout.object ?? [:]
        let text = FleetDocument.text
        let state = text(fields["state"])
        let counts = fields["counts"]?.object ?? [:]
        let agents = integer(counts["agents"])
        let healthy = integer(counts["healthy"])
        let failed = integer(counts["failed"])
        let maxFailures = integer(fields["maxFailures"])
        let standing = "\(healthy) of \(agents) agent(s) healthy, \(failed) failed (tolerated: \(maxFailures))"
        switch state {
        case "halted", "aborted":
            let reason = text(fields["reason"])
            return .failed("the rollout was \(state)\(reason.isEmpty || reason == "-" ? "" : ": \(reason)"); \(standing)")
        case "superseded":
            return .failed("the rollout was superseded by a newer publish before it completed; \(standing)")
        default:
            break
        }
        if failed > maxFailures { return .failed("more agents failed than the rollout tolerates; \(standing)") }
        if state == "completed" {
            guard text(fields["strategy"]) == "all" else { return .completed("the rollout completed; \(standing)") }
            if healthy + failed >= agents { return .completed("every agent runs the serial or failed it; \(standing)") }
            let newer = integer(counts["newer"])
            if newer > 0 {
                return .failed("a newer release reached \(newer) agent(s) before every agent ran this serial; \(standing)")
            }
            return .waiting(standing)
        }
        return .waiting("the rollout is \(state), wave \(text(fields["wave"]))/\(text(fields["waveCount"])); \(standing)")
    }

    /// The failed agents of the rollout, with their failure of the serial when the agent document carries it.
    /// The texts are as the controller sent them (the JSON output carries them exactly); the text output escapes them.
    static func failures(_ rollout: JSONValue) -> [Failure] {
        let fields = rollout.object ?? [:]
        func text(_ value: JSONValue?) -> String { FleetDocument.rawText(value) ?? FleetDocument.text(value) }
        let details = FleetDocument.array(fields["agents"]).compactMap(\.object)
        return FleetDocument.array(fields["failures"]).compactMap(\.object).map { failure in
            let id = text(failure["agentId"])
            let name = failure["agentName"].flatMap { $0 == .null ? nil : text($0) } ?? id
            let detail = details.first { text($0["id"]) == id }?["failure"]
            return Failure(
                agent: name,
                kind: text(failure["kind"]),
                reason: text(failure["reason"]),
                failure: detail.flatMap { $0 == .null ? nil : $0 }
            )
        }
    }

    /// A count of the controller's answer, within what a real one sends (0 ... 2^31 - 1): an answer with a count near
    /// `Int64.max` (a hostile or broken controller) made `healthy + failed` trap and crashed the CI step.
    static func integer(_ value: JSONValue?) -> Int64 {
        if case .integer(let number)? = value { return min(max(number, 0), Int64(Int32.max)) }
        return 0
    }
}
