import Synchronization

/// The request bytes every connection together may hold in memory while their bodies arrive (`RequestBodyReader`, the
/// status reports `DesiredStatePollHandler` takes before the router).
///
/// Each body has its own limit (a status report 1 MiB), and each connection's body its idle timeout; neither bounds
/// them together. One agent's token, taken from a compromised instance, held a report body of just under the limit open
/// on every connection the controller keeps (16,384 × 1 MiB), sending a byte a minute: memory enough to end the
/// controller of the whole fleet. Past the budget a body is refused with a 503 instead; a fleet's reports are a few
/// kilobytes each, so 10,000 of them arriving at once use a small part of it.
final class BodyBudget: Sendable {
    /// Bytes held at most. Default 256 MiB.
    let limit: Int
    private let held = Atomic<Int>(0)

    init(limit: Int = 256 << 20) {
        self.limit = limit
    }

    /// Bytes held now.
    var bytesHeld: Int { held.load(ordering: .relaxed) }

    /// Takes `bytes` from the budget: `false` (nothing taken) when that would pass the limit.
    func reserve(_ bytes: Int) -> Bool {
        guard bytes > 0 else { return true }
        guard bytes <= limit else { return false }
        var current = held.load(ordering: .relaxed)
        while true {
            guard current <= limit - bytes else { return false }
            let (exchanged, original) = held.compareExchange(expected: current, desired: current + bytes, ordering: .relaxed)
            if exchanged { return true }
            current = original
        }
    }

    /// Gives back `bytes` taken with `reserve`.
    func release(_ bytes: Int) {
        guard bytes > 0 else { return }
        held.subtract(bytes, ordering: .relaxed)
    }

    /// The answer to a body that does not fit: the controller is not refusing the request, only delaying it.
    static func exhausted(what: String) -> APIError {
        APIError(
            .serviceUnavailable,
            "busy",
            "\(what) cannot be held now: request bodies in flight use all of the controller's budget; retry shortly",
            headers: [.retryAfter: "5"]
        )
    }
}
