import Foundation
import Shared

/// A stored release: the signed envelope plus what the controller indexes it by.
struct ReleaseRecord: Sendable, Equatable {
    var service: String
    var serial: Int64
    var version: String
    var artifactSHA256: String
    var artifactSize: Int64
    /// The envelope exactly as verified at publish time.
    var envelope: Envelope
    /// The name of the operator token that published it.
    var publishedBy: String
    var createdAt: Date
    /// The release-role keys whose signatures verified (sorted key ids).
    var signedBy: [String] = []
    /// How many distinct release-role keys the trust root required when they were counted: below it, the release
    /// waits for approval (`ferry-controller approve`) and reaches no agent. 0 for releases stored before signatures
    /// were counted (they met their threshold when published).
    var signaturesRequired: Int = 0

    /// Whether the release has fewer signatures than it requires.
    var isAwaitingApproval: Bool { signedBy.count < signaturesRequired }
}

/// What an approval changes (`ControllerStore.recordApproval(_:)`).
struct ReleaseApproval: Sendable, Equatable {
    var service: String
    var serial: Int64
    /// The envelope with every signature: the stored ones plus the approver's.
    var envelope: Envelope
    /// The distinct release-role keys that signed now, sorted.
    var signedBy: [String]
    /// The signers the release had when the approval was decided (compare-and-set).
    var previousSignedBy: [String]
    /// The release threshold of the trust root the signatures were counted under.
    var signaturesRequired: Int
    /// The rollout's transition (`RolloutStateMachine.approved`), with its events.
    var transition: RolloutStateMachine.Transition
}

/// A stored trust root: one version of the chain agents follow.
struct TrustRootRecord: Sendable, Equatable {
    var version: Int64
    /// The envelope exactly as verified when it was published.
    var envelope: Envelope
    /// SHA-256 of the payload (hex), to compare roots at a glance.
    var sha256: String
    var expiresAt: Date
    /// The name of the operator token that published it.
    var publishedBy: String
    var publishedAt: Date
}

/// An enrolled agent.
struct AgentRecord: Sendable, Equatable {
    var id: String
    var name: String
    var hostname: String
    /// Services the agent runs, sorted.
    var services: [String]
    var enrolledAt: Date
    /// When its last status report arrived.
    var lastSeen: Date?
    var agentVersion: String?
    var processManager: String?
    /// The trust root version the agent last reported, when it reported one.
    var trustRootVersion: Int64? = nil
    /// Why the agent admits no new release under its trust root (expired, a newer root it could not accept).
    var trustRootProblem: String? = nil
    /// The last switch-back of the agent's stored identity conflict (`recordIdentityConflict`), standing or lapsed.
    var identityConflictAt: Date? = nil
    /// The EC2 instance the agent proved it runs on at enrolment (`--instance-identity-cert`); one agent per instance.
    var instanceID: String? = nil
}

/// The latest status of one service on one agent.
struct ServiceStatusRecord: Sendable, Equatable {
    var agentID: String
    var status: ServiceStatus
    var updatedAt: Date
}

/// One line of `GET /v1/services`.
struct ServiceSummary: Sendable, Equatable {
    var name: String
    var latestSerial: Int64?
    var latestVersion: String?
    var releaseCount: Int
    var agentCount: Int
}

/// One stored status report of an agent (the bounded history).
struct StatusHistoryEntry: Sendable, Equatable {
    var receivedAt: Date
    var report: StatusReport
}
