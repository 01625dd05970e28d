#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The checks an agent makes of a verified release against its own state: expiry and serial order.
package struct ReleaseAdmission: Sendable {
    /// How far the agent's clock may lag the signer's before a release counts as expired. Default 5 minutes.
    package var clockSkewGrace: Duration
    /// The wall clock; injected so tests do not depend on the date.
    package var now: @Sendable () -> Date

    package init(clockSkewGrace: Duration = .seconds(300), now: @escaping @Sendable () -> Date = { Date() }) {
        self.clockSkewGrace = clockSkewGrace
        self.now = now
    }

    /// Throws unless `release` may be installed: not expired (with the grace) and with a serial strictly above
    /// `lastAcceptedSerial`.
    package func check(_ release: Release, lastAcceptedSerial: Int64?) throws(AdmissionError) {
        if let current = lastAcceptedSerial, release.serial <= current {
            throw .serialNotIncreasing(service: release.service, got: release.serial, current: current)
        }
        try checkExpiry(release)
    }

    /// Throws `AdmissionError.expired` when `release` expired more than the grace ago.
    package func checkExpiry(_ release: Release) throws(AdmissionError) {
        let instant = now()
        let grace = Double(clockSkewGrace.components.seconds) + Double(clockSkewGrace.components.attoseconds) / 1e18
        if instant.timeIntervalSince(release.expiresAt) > grace {
            throw .expired(service: release.service, serial: release.serial, expiresAt: release.expiresAt, now: instant)
        }
    }
}

/// Why a verified release is not installed here.
package enum AdmissionError: Error, Equatable, CustomStringConvertible {
    case expired(service: String, serial: Int64, expiresAt: Date, now: Date)
    case serialNotIncreasing(service: String, got: Int64, current: Int64)

    package var description: String {
        switch self {
        case .expired(let service, let serial, let expiresAt, _):
            // Not the time of the check: the same refusal must read the same at every pass (news once, not a save, a
            // log line and a report every poll for as long as the controller offers the release).
            "release \(service) serial \(serial) expired at \(Timestamp.format(expiresAt)), which this instance's clock is past"
        case .serialNotIncreasing(let service, let got, let current):
            "release \(service) serial \(got) is not above serial \(current), the last one accepted here (replay or rollback of the signed history refused)"
        }
    }
}
