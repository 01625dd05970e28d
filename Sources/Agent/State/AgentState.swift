import Shared

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// What the agent has accepted and applied, per service (`state.json`).
///
/// Written atomically after every change; everything the agent needs to keep running and repairing the applied
/// release without the controller is in here.
struct AgentState: Sendable, Codable, Equatable {
    /// Format version of the file.
    var version = 1
    var services: [String: ServiceState] = [:]

    subscript(service: String) -> ServiceState {
        get { services[service] ?? ServiceState() }
        set { services[service] = newValue }
    }
}

/// One service's state on this instance.
struct ServiceState: Sendable, Codable, Equatable {
    /// The highest serial accepted here (verified and admitted). Nothing at or below it is ever installed again,
    /// except that the release running now keeps running.
    var highestAcceptedSerial: Int64?
    /// The release running now (passed its health gate, or the one rolled back to).
    var applied: AppliedRelease?
    /// The release before `applied`, the rollback target.
    var previous: AppliedRelease?
    /// An install that was started and not finished (kill -9 mid-install): on the next start `current` is switched
    /// back to `applied` before anything else.
    var pending: AppliedRelease?
    /// Serials that failed here (refused or rolled back), newest first, at most 20.
    var failures: [Failure] = []
    var phase: DeployPhase = .waiting
    var message: String = "waiting for the first release"

    /// A serial that failed here.
    struct Failure: Sendable, Codable, Equatable {
        var serial: Int64
        var reason: String
        /// `refused` or `rolled-back`.
        var kind: String
    }

    /// Whether `serial` failed here already (it is not retried until a newer serial arrives).
    func hasFailed(_ serial: Int64) -> Bool { failures.contains { $0.serial == serial && $0.kind == "rolled-back" } }

    /// Records a failure, newest first, keeping the list short.
    mutating func recordFailure(serial: Int64, reason: String, kind: String) {
        failures.removeAll { $0.serial == serial && $0.kind == kind }
        failures.insert(Failure(serial: serial, reason: reason, kind: kind), at: 0)
        if failures.count > 20 { failures.removeLast(failures.count - 20) }
    }
}

/// A release installed on this instance.
struct AppliedRelease: Sendable, Codable, Equatable {
    var serial: Int64
    var version: String
    /// The artifact's digest (hex).
    var sha256: String
    /// `<serial>-<sha12>` under `services/<svc>/releases/`.
    var directoryName: String
    /// The verified release payload, so the apps can be rebuilt without the controller.
    var payload: [UInt8]
    /// Digest of the instance env file when this release was applied (a change triggers a reload).
    var envDigest: String

    /// The release document.
    func release() throws -> Release { try Release.decode(payload) }
}
