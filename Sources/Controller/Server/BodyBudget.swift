import Synchronization

/// The request bytes every connection together may hold in memory while their bodies arrive (`RequestBodyReader`, the
/// status reports `DesiredStatePollHandler` takes before the router), and what one token may hold of them.
///
/// Each body has its own limit (a status report 1 MiB), and each connection's body its idle timeout; neither bounds
/// them together. One agent's token, taken from a compromised instance, held a report body of just under the limit open
/// on every connection the controller keeps (16,384 × 1 MiB), sending a byte a minute: memory enough to end the
/// controller of the whole fleet. Past the budget, or past one token's share of it, a body is refused with a 503
/// instead: one token alone can no longer keep every other client's bodies out either. A fleet's reports are a few
/// kilobytes each, so 10,000 of them arriving at once use a small part of it.
final class BodyBudget: Sendable {
    /// Bytes held at most, by everyone.
    let limit: Int
    /// Bytes held at most for one token (`holder`).
    let limitPerHolder: Int
    private let state = Mutex<(total: Int, byHolder: [String: Int])>((0, [:]))

    init(limit: Int = 256 << 20, limitPerHolder: Int = 4 << 20) {
        self.limit = limit
        self.limitPerHolder = min(limitPerHolder, limit)
    }

    /// The budget for bodies of at most `largestBody` bytes each: `limit` for everyone together (`nil`: 256 MiB, or 64 of
    /// the largest body if that is more), of which one token may hold two of the largest.
    convenience init(limit: Int?, largestBody: Int) {
        let perHolder = largestBody > Int.max / 2 ? Int.max : 2 * largestBody
        let total = limit ?? max(256 << 20, largestBody > Int.max / 64 ? Int.max : 64 * largestBody)
        self.init(limit: total, limitPerHolder: perHolder)
    }

    /// Bytes held now, by everyone.
    var bytesHeld: Int { state.withLock { $0.total } }

    /// Takes `bytes` from the budget for `holder` (a token's principal; `nil`: counted in the total only): `false`
    /// (nothing taken) when that would pass the total or the holder's share.
    func reserve(_ bytes: Int, for holder: String?) -> Bool {
        guard bytes > 0 else { return true }
        return state.withLock { state in
            guard bytes <= limit, state.total <= limit - bytes else { return false }
            if let holder {
                let held = state.byHolder[holder, default: 0]
                guard bytes <= limitPerHolder, held <= limitPerHolder - bytes else { return false }
                state.byHolder[holder] = held + bytes
            }
            state.total += bytes
            return true
        }
    }

    /// Gives back `bytes` taken with `reserve` for the same `holder`.
    func release(_ bytes: Int, for holder: String?) {
        guard bytes > 0 else { return }
        state.withLock { state in
            state.total -= bytes
            if let holder {
                let left = state.byHolder[holder, default: 0] - bytes
                state.byHolder[holder] = left > 0 ? left : nil
            }
        }
    }

    /// The answer to a body that does not fit: the controller is not refusing the request, only delaying it.
    static func exhausted(what: String) -> APIError {
        APIError(
            .serviceUnavailable,
            "busy",
            "\(what) cannot be held now: request bodies in flight use all of the controller's budget, or this token's share "
                + "of it; retry shortly",
            headers: [.retryAfter: "5"]
        )
    }
}

extension Principal {
    /// Whose share of the `BodyBudget` this principal's bodies take: its agent, or its token.
    var budgetHolder: String { agentID.map { "agent:\($0)" } ?? tokenID.map { "token:\($0)" } ?? "name:\(name)" }
}
