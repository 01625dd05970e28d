import Synchronization

/// Per service, the newest installable serial a poll brought while a pass runs (`Reconciler.supersede(with:)` writes,
/// the health gates read between looks). Shared by reference: the gate runs inside a pass while the poll loop, on
/// another task, learns of the newer release. Only ever rises; a gate compares it with the serials accepted when it
/// began, so an old entry ends nothing.
final class Supersessions: Sendable {
    private let serials = Mutex<[String: Int64]>([:])

    /// Records that `serial` of `service` is offered; whether that is news (higher than recorded).
    @discardableResult
    func record(service: String, serial: Int64) -> Bool {
        serials.withLock { serials in
            guard serial > serials[service] ?? Int64.min else { return false }
            serials[service] = serial
            return true
        }
    }

    /// The serial of `service` that ends a gate begun when `accepted` was the highest serial accepted, if one came.
    func serial(for service: String, above accepted: Int64) -> Int64? {
        serials.withLock { serials in serials[service].flatMap { $0 > accepted ? $0 : nil } }
    }
}
