import Shared
import Synchronization

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
    /// Each service's state; it changes only through its state machine (`ServiceState.handle(_:)`).
    var services: [String: ServiceState] = [:]
    /// The last failed contact with the controller (network, TLS, refusal), or `nil` once a poll succeeds again; shown
    /// by `ferry-agent status`, which does not contact the controller itself.
    private(set) var controllerProblem: ControllerProblem?

    init(version: Int = 1, services: [String: ServiceState] = [:]) {
        self.version = version
        self.services = services
    }

    subscript(service: String) -> ServiceState {
        get { services[service] ?? ServiceState() }
        set { services[service] = newValue }
    }

    /// Records how a poll of the controller went: `failure` is why it could not be reached or refused, `nil` when it
    /// answered. A problem keeps the time it began while it lasts. Returns whether anything changed (worth saving).
    mutating func noteControllerContact(failure: String?, at now: Date) -> Bool {
        let before = controllerProblem
        if let failure {
            guard before?.message != failure else { return false }
            controllerProblem = ControllerProblem(message: failure, since: before?.since ?? now)
        } else {
            guard before != nil else { return false }
            controllerProblem = nil
        }
        return true
    }

    /// The state as it is saved: instance env values masked in every message and failure reason (`mask(with:)`), then
    /// each of those texts cut to `ServiceState.maximumStoredTextBytes`. Masking comes first, or a secret cut in two
    /// would no longer be found. The cut keeps one long error (a parse error quoting megabytes, a tool's output) from
    /// making the file larger than the agent reads back when it starts.
    mutating func prepareForSaving(mask: SecretMask) {
        self.mask(with: mask)
        if var problem = controllerProblem {
            problem.message = ServiceState.storedText(problem.message)
            controllerProblem = problem
        }
        for service in Array(services.keys) {
            services[service]?.clipTexts()
        }
    }

    /// Masks instance env values in every message and failure reason (see `SecretMask`).
    mutating func mask(with mask: SecretMask) {
        guard !mask.isEmpty else { return }
        if var problem = controllerProblem {
            problem.message = mask.apply(problem.message)
            controllerProblem = problem
        }
        for service in Array(services.keys) {
            services[service]?.mask(with: mask)
        }
    }
}

/// Why the agent cannot reach its controller, and since when.
struct ControllerProblem: Sendable, Codable, Equatable {
    var message: String
    var since: Date
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

    /// The release document (decoded once per payload: a pass asks for it several times).
    func release() throws -> Release { try DecodedReleases.release(of: payload) }

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

/// The release documents decoded from applied and pending payloads, kept so that a pass (which reads the applied
/// release's apps for the planner, the health check, the report and the repairs) does not decode the same signed
/// bytes again each time. Keyed by the payload itself; a handful at most (a service's applied and pending release).
enum DecodedReleases {
    private static let decoded = Mutex<[[UInt8]: Release]>([:])
    /// More distinct payloads than this and the cache starts over.
    static let capacity = 16

    static func release(of payload: [UInt8]) throws -> Release {
        if let release = decoded.withLock({ $0[payload] }) { return release }
        let release = try Release.decode(payload)
        decoded.withLock { cache in
            if cache.count >= capacity { cache.removeAll(keepingCapacity: true) }
            cache[payload] = release
        }
        return release
    }
}
