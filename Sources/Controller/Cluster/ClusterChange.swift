import Foundation

/// A committed change other controllers on the same database must act on: their cached desired states and principals
/// may be out of date, and agents parked on them may have something new.
///
/// The committing transaction announces it (`ClusterChangeTriggers`), except `agentChanged` for a report that makes a
/// cached state out of date and `resync`, which the controller announces itself (`ClusterChangeFeed`).
enum ClusterChange: Sendable, Equatable {
    /// A release of the service was stored.
    case releasePublished(service: String)
    /// A rollout of the service changed which release some agents receive.
    case rolloutChanged(service: String)
    /// An agent enrolled, re-enrolled, was removed, or reported a serial its cached state does not know.
    case agentChanged(id: String)
    /// A token stopped working (revoked, its agent removed or replaced).
    case tokenRevoked
    /// A trust root was published: every desired state names it.
    case rootPublished
    /// Changes may have been missed (a controller's queue overflowed): forget every cache, wake every agent.
    case resync

    /// The NOTIFY payload: `v1 ORIGIN KIND [ARGUMENT]` (service names and agent ids hold no spaces).
    func payload(origin: String) -> String {
        switch self {
        case .releasePublished(let service): "v1 \(origin) release \(service)"
        case .rolloutChanged(let service): "v1 \(origin) rollout \(service)"
        case .agentChanged(let id): "v1 \(origin) agent \(id)"
        case .tokenRevoked: "v1 \(origin) revoked"
        case .rootPublished: "v1 \(origin) root"
        case .resync: "v1 \(origin) resync"
        }
    }

    /// Reads a payload: the change and the controller that sent it, or `nil` for anything else (a newer Ferry's
    /// notification, or a NOTIFY someone sent by hand), which the caller treats as "something changed".
    static func parse(_ payload: String) -> (origin: String, change: ClusterChange)? {
        let parts = payload.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
        guard parts.count >= 3, parts[0] == "v1", parts[2].utf8.count <= 32 else { return nil }
        let origin = parts[1]
        switch (parts[2], parts.count) {
        case ("release", 4): return (origin, .releasePublished(service: parts[3]))
        case ("rollout", 4): return (origin, .rolloutChanged(service: parts[3]))
        case ("agent", 4): return (origin, .agentChanged(id: parts[3]))
        case ("revoked", 3): return (origin, .tokenRevoked)
        case ("root", 3): return (origin, .rootPublished)
        case ("resync", 3): return (origin, .resync)
        default: return nil
        }
    }
}
