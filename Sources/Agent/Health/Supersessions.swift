import Synchronization

/// Per service, the newer serial that ends the health gate watching an older one (`Reconciler.supersede(with:)`
/// writes, the gate reads between looks). Shared by reference: the gate runs inside a pass while the poll loop, on
/// another task, learns of the newer release.
final class Supersessions: Sendable {
    private let serials = Mutex<[String: Int64]>([:])

    /// Records that `serial` supersedes the gate of `service`; whether that is news (a higher serial than recorded).
    @discardableResult
    func record(service: String, serial: Int64) -> Bool {
        serials.withLock { serials in
            guard serial > serials[service] ?? Int64.min else { return false }
            serials[service] = serial
            return true
        }
    }

    /// The serial that supersedes the gate of `service`, if one arrived.
    func serial(for service: String) -> Int64? { serials.withLock { $0[service] } }

    /// Forgets `service`'s: a gate begins or ended.
    func clear(service: String) { _ = serials.withLock { $0.removeValue(forKey: service) } }
}
