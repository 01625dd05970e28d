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
    /// The last failed contact with the controller (network, TLS, refusal), or `nil` once a poll succeeds again; shown
    /// by `ferry-agent status`, which does not contact the controller itself.
    var controllerProblem: ControllerProblem?

    subscript(service: String) -> ServiceState {
        get { services[service] ?? ServiceState() }
        set { services[service] = newValue }
    }
}

/// Why the agent cannot reach its controller, and since when.
struct ControllerProblem: Sendable, Codable, Equatable {
    var message: String
    var since: Date
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
    /// The verified release payload, so the apps can be rebuilt without the controller (base64 in the file).
    var payload: [UInt8]
    /// Digest of the instance env file when this release was applied (a change triggers a reload).
    var envDigest: String

    /// The release document.
    func release() throws -> Release { try Release.decode(payload) }

    private enum CodingKeys: String, CodingKey {
        case serial, version, sha256, directoryName, payload, envDigest
    }

    init(serial: Int64, version: String, sha256: String, directoryName: String, payload: [UInt8], envDigest: String) {
        self.serial = serial
        self.version = version
        self.sha256 = sha256
        self.directoryName = directoryName
        self.payload = payload
        self.envDigest = envDigest
    }

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        serial = try container.decode(Int64.self, forKey: .serial)
        version = try container.decode(String.self, forKey: .version)
        sha256 = try container.decode(String.self, forKey: .sha256)
        directoryName = try container.decode(String.self, forKey: .directoryName)
        envDigest = try container.decode(String.self, forKey: .envDigest)
        let text = try container.decode(String.self, forKey: .payload)
        guard let data = Data(base64Encoded: text) else {
            throw DecodingError.dataCorruptedError(forKey: .payload, in: container, debugDescription: "payload is not base64")
        }
        payload = Array(data)
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(serial, forKey: .serial)
        try container.encode(version, forKey: .version)
        try container.encode(sha256, forKey: .sha256)
        try container.encode(directoryName, forKey: .directoryName)
        try container.encode(envDigest, forKey: .envDigest)
        try container.encode(Data(payload).base64EncodedString(), forKey: .payload)
    }
}
