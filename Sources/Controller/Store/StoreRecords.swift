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
